"""Cheap checks of a run's input on the driver, before Ray or any engine starts.

The stages check everything again as they read; these checks only move the common mistakes
(an empty file, a file that is not FASTA/FASTQ, a malformed record in a small file, a VCF
whose REF does not match the reference, a contig the reference lacks, an input that gives
nothing to embed) from minutes into a run to its first seconds. They run the stages' own
code, so the errors are the ones the stages would raise.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from pipeline.errors import InputError
from pipeline.read.fastx import Record, iter_records, sniff_format
from pipeline.read.sources import Source

LOCI_CHECKED = 100_000
"""BED intervals or VCF alleles checked per file (the first ones)."""
SMALL_FILE = 1 << 20
"""FASTA/FASTQ files up to this size are read whole (up to SMALL_FILES_TOTAL in all)."""
SMALL_FILES_TOTAL = 16 << 20


def check_tiles(sources: list[Source], cfg_input: Any, min_length: int, storage: dict) -> None:
    """Every file starts like FASTA/FASTQ (of input.format); small files are read whole
    with the run's rules; an input read whole that holds no record of min_length bases is
    refused. With input.on_error=skip a broken file is the read stage's to report, not an
    error: nothing is checked."""
    if str(cfg_input.on_error) == "skip":
        return
    fmt = str(cfg_input.format)

    def head(source: Source) -> None:
        found = sniff_format(source.uri, storage)
        if found is None:
            raise InputError(f"{source.uri}: the file is empty (no FASTA/FASTQ records)")
        if fmt != "auto" and fmt != found:
            raise InputError(f"{source.uri}: input.format={fmt} but the file is {found}")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(head, sources))
    budget, read_whole, usable, records = SMALL_FILES_TOTAL, 0, 0, 0
    for source in sorted(sources, key=lambda s: (s.size, s.uri)):
        if source.size > SMALL_FILE or source.size > budget:
            break
        budget -= source.size
        read_whole += 1
        for item in iter_records(
            source.uri,
            fmt,
            str(cfg_input.invalid_chars),
            str(cfg_input.ambiguity_codes),
            storage,
            "error",
            str(cfg_input.rna),
        ):
            records += 1
            usable += isinstance(item, Record) and len(item.sequence) >= min_length
    if read_whole == len(sources) and not usable:
        raise InputError(
            f"nothing to embed: none of the input's {records} records has at least "
            f"window.min_length={min_length} bases"
        )


def check_loci(what: str, sources: list[Source], read: Any, window: Any) -> None:
    """The first LOCI_CHECKED rows of each BED/VCF file through the read stage and the
    window stage's checks; an input read whole that gives no row to embed is refused.
    `what`: what a row is (intervals, variant alleles), in the message."""
    complete, usable, reasons = True, 0, []
    for source in sources:
        rows = _rows(read, source.uri)
        n, why = window.usable(itertools.islice(rows, LOCI_CHECKED))
        complete = complete and next(rows, None) is None
        usable += n
        reasons += why
    if complete and not usable:
        # The read stage's own skips (symbolic alleles, ...) come first, as in the manifest.
        skipped = [s["reason"] for s in read.stats.totals().get("skipped", [])]
        skipped += reasons
        shown = "; ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        raise InputError(
            f"nothing to embed: the input holds no {what} that can be embedded"
            + (f" ({len(skipped)} skipped: {shown})" if skipped else "")
        )


def _rows(read: Any, uri: str):
    """The read stage's rows of one file, lazily."""
    for table in read(pa.table({"source": [uri]})):
        yield from table.to_pylist()
