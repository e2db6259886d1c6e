"""How many tokens go into one pack: enough to keep an engine's steps full, few enough that
every engine gets work.

A pack is one engine call. With a fixed budget, an input smaller than engines x budget leaves
engines idle (a 30 kb genome was one pack: one engine worked, the others waited). So the
budget is sized from the input: about PACKS_PER_ENGINE packs for each engine of a pool that
may hold more than one, never more than `embed.max_batch_tokens` (large inputs keep large
packs) and never less than one window. The
size of the input is estimated on the driver from what is cheap to know: file sizes, and for
small BED or VCF files their lines.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pipeline.config import MERGE, actor_range
from pipeline.kinds import Kind, kind_of
from pipeline.read.fastx import open_binary
from pipeline.read.sources import COMPRESSED_SUFFIXES, Source, format_from_name

if TYPE_CHECKING:
    from pipeline.config import Config

# At least two packs per engine even when the estimate is twice too high.
PACKS_PER_ENGINE = 4
# Bases per byte of file: gzip stores DNA FASTA at about 3.5-4.5 bases a byte; the low end
# errs towards smaller packs, which cost little, rather than idle engines. FASTQ holds a
# quality per base and a header per read.
BASES_PER_BYTE = {("fasta", False): 1.0, ("fasta", True): 3.0}
BASES_PER_BYTE |= {("fastq", False): 0.45, ("fastq", True): 1.5}
# BED and VCF files up to this size are read on the driver to count their rows; larger ones
# are taken as large inputs.
COUNT_LIMIT_BYTES = 16 << 20


def pack_budget(
    cfg: Config, sources: list[Source], window_tokens: int, kind: Kind | None = None
) -> int:
    """Tokens per pack for this run. `window_tokens`: the most tokens one window has;
    `kind`: the plan's kind of input (else read from `cfg`)."""
    budget = cfg.embed.max_batch_tokens
    if cfg.embed.per_token:
        # A pack's per-token states travel back whole (float32, layers x hidden per token).
        budget = min(budget, cfg.embed.per_token_max_tokens)
    _, engines = actor_range(cfg.embed.num_actors)
    if engines == 1:
        # Nothing to spread: one engine gets every pack whatever their size, and larger
        # packs keep identical windows (a repeated region, a site's reference) in one call.
        return budget
    tokens = estimated_tokens(cfg, sources, kind)
    if tokens is None:
        return budget
    share = math.ceil(tokens / (PACKS_PER_ENGINE * engines))
    return max(1, min(budget, max(share, window_tokens)))


def estimated_tokens(cfg: Config, sources: list[Source], kind: Kind | None = None) -> int | None:
    """The engine tokens of the whole input, roughly; None when unknown (then: large)."""
    strands = 2 if cfg.window.reverse_complement in (True, MERGE) else 1
    tokens = (kind or kind_of(cfg)).estimated_tokens(sources)
    return None if tokens is None else strands * tokens


def file_bases(source: Source, fmt: str) -> int:
    """The bases a FASTA/FASTQ file holds, from its size."""
    name = source.uri.lower()
    compressed = name.endswith(COMPRESSED_SUFFIXES)
    kind = fmt if fmt in ("fasta", "fastq") else (format_from_name(name) or "fasta")
    return int(source.size * BASES_PER_BYTE[(kind, compressed)])


def _data_lines(uri: str, options: dict) -> list[bytes]:
    with open_binary(uri, options) as f:
        skip = (b"#", b"track", b"browser")
        return [line for line in f if line.strip() and not line.startswith(skip)]


def data_rows(uri: str, options: dict) -> int:
    """The data lines of a BED or VCF file."""
    return len(_data_lines(uri, options))


def bed_bases(uri: str, options: dict) -> tuple[int, int]:
    """(bases in the intervals, rows) of a BED file."""
    total = 0
    lines = _data_lines(uri, options)
    for line in lines:
        fields = line.split(b"\t")
        try:
            total += max(0, int(fields[2]) - int(fields[1]))
        except (IndexError, ValueError):
            continue  # the reader names bad lines; an estimate skips them
    return total, len(lines)
