"""One indexed FASTA read by several tasks: the pieces (planned on the driver), and what each
piece reads (in its task).

A piece is a run of window starts in file order, from (record, position) to where the next
piece begins. Inside a record a piece begins at a multiple of window.step no later than the
record's final window start, so every window of the file starts in exactly one piece, and a
piece reads the bases of the windows that start in it: the windows, chunk ids and counts are
those of one task reading the whole file. Small records share a piece, so a genome of 100,000
contigs makes about bases / split_bases pieces, not 100,000 rows (nor a fallback to one task).

A record is counted (records, bases, its header checked) by the piece holding its start; the
first piece of a file speaks for the file (`inputs`, `inputs_read`, and the number of rows all
its pieces hand to windowing, so the progress line waits for every piece).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from pyfaidx import getmtime_fsspec

from pipeline.config import InputConfig, InputFormat, LastWindow, NPolicy, OnError, WindowConfig
from pipeline.errors import InputError
from pipeline.read.fastx import sniff_format
from pipeline.read.reference import Reference, check_compression, reference_errors
from pipeline.read.sources import COMPRESSED_SUFFIXES, Source, format_from_name
from pipeline.rows import PIECE_COLUMNS
from pipeline.storage import get_fs

log = logging.getLogger(__name__)

# gzip packs DNA at about 4 bases a byte: a compressed file smaller than split_bases / 8 bytes
# holds one piece, and is read whole without asking for its index (a request per file on an
# object store).
_MAX_BASES_PER_BYTE = 8


def final_start(length: int, w: WindowConfig) -> int | None:
    """Where a record's final window starts, as spans() places it; None where the window stage
    skips the record whole (empty, shorter than window.min_length, or no window)."""
    if length <= 0 or length < w.min_length:
        return None
    size, step = w.size, w.step
    # How many windows spans() makes before window.last moves or drops the final one.
    n = 1 if length <= size else 1 - (-(length - size) // step)
    start = (n - 1) * step
    if length - start < size:
        if w.last == LastWindow.drop:
            return (n - 2) * step if n > 1 else None
        if w.last == LastWindow.shift:
            return max(0, length - size)
    return start


def boundaries(lengths: Sequence[int], w: WindowConfig, split_bases: int) -> list[tuple[int, int]]:
    """Where each piece begins, (record, position) in file order; the first is (0, 0)."""
    step = w.step
    out = [(0, 0)]
    filled = 0  # bases in the piece being filled
    for r, length in enumerate(lengths):
        final = final_start(length, w)
        pos = 0
        while length - pos > split_bases - filled:
            # The rest does not fit: end the piece at the last window start that does, at
            # least one step on (or, where the piece already holds earlier records, here).
            cut = (pos + split_bases - filled) // step * step
            if cut <= pos:
                cut = pos if filled else pos + step
            if cut and (final is None or cut > final):
                break  # no window starts there: the rest stays in this piece
            out.append((r, cut))
            filled, pos = 0, cut
        filled += length - pos
    return out


def parts(
    lengths: Sequence[int], begin: tuple[int, int], end: tuple[int, int], w: WindowConfig
) -> Iterator[tuple[int, int, int]]:
    """(record, start, end) of the bases a piece reads: per record it touches, the span of the
    windows that start in it; to the record's end where it holds the final window, so bases
    that no window covers (window.last=drop) are validated as a whole read does."""
    (r0, a), (r1, b) = begin, end
    for r in range(r0, min(r1 + 1, len(lengths))):
        lo = a if r == r0 else 0
        if r < r1:
            yield r, lo, lengths[r]
        elif b:
            # b is a window start before the final one, so the window before it is full.
            yield r, lo, b - w.step + w.size


def piece_rows(uri: str, lengths: Sequence[int], w: WindowConfig, split_bases: int) -> list[dict]:
    """The read rows of one indexed FASTA: one per piece (fewer than two: none)."""
    starts = boundaries(lengths, w, split_bases)
    if len(starts) < 2:
        return []  # one piece: a whole read is the same, and reads sequentially
    ends = [*starts[1:], (len(lengths), 0)]
    n_parts = sum(1 for b, e in zip(starts, ends, strict=True) for _ in parts(lengths, b, e, w))
    return [
        {
            "source": uri,
            "piece": i,
            "record_index": b[0],
            "piece_start": b[1],
            "next_record": e[0],
            "next_start": e[1],
            "parts": n_parts,
        }
        for i, (b, e) in enumerate(zip(starts, ends, strict=True))
    ]


def why_not_split(cfg_input: InputConfig, w: WindowConfig) -> str | None:
    """The setting under which no file is split, or None."""
    if not cfg_input.split_bases:
        return "input.split_bases=0"
    if cfg_input.format == InputFormat.fastq:
        return "input.format=fastq"
    # Decisions about a whole record (or file) that no one piece can take: a record with a bad
    # base is left out whole, a broken file keeps what came before the break; a record with no
    # window under the N policy is skipped.
    if cfg_input.on_error == OnError.skip:
        return "input.on_error=skip"
    if w.n_policy == NPolicy.skip:
        return "window.n_policy=skip"
    return None


def plan_pieces(
    sources: Sequence[Source],
    cfg_input: InputConfig,
    window_cfg: WindowConfig,
    storage_options: dict[str, Any] | None = None,
) -> list[dict]:
    """The read rows of a run (driver): the pieces of each FASTA that can be split, and
    `{"source": uri}` for every other file; all rows have the same keys (None where unset)."""
    rows: list[dict] = []
    reason = why_not_split(cfg_input, window_cfg)
    if reason is not None and cfg_input.split_bases:
        log.info("files are read whole, one task each: %s decides per record", reason)
    for s in sources:
        lengths = None if reason else _index_lengths(s, cfg_input, storage_options)
        pieces = piece_rows(s.uri, lengths, window_cfg, cfg_input.split_bases) if lengths else []
        if pieces:
            log.info("%s: read as %d pieces", s.uri, len(pieces))
        rows.extend(pieces or [{"source": s.uri}])
    if len(rows) > len(sources):
        rows = [{"source": r["source"], **{k: r.get(k) for k in PIECE_COLUMNS}} for r in rows]
    return rows


def _index_lengths(
    source: Source, cfg_input: InputConfig, storage_options: dict[str, Any] | None
) -> list[int] | None:
    """Record lengths from the index beside a FASTA that pieces can read; None where it is to
    be read whole (said in the log)."""
    uri = source.uri
    if cfg_input.format == InputFormat.auto and format_from_name(uri) != "fasta":
        return None
    compressed = uri.lower().endswith(COMPRESSED_SUFFIXES)
    if source.size * (_MAX_BASES_PER_BYTE if compressed else 1) <= cfg_input.split_bases:
        return None
    fs, path = get_fs(uri, storage_options)
    if not fs.exists(path + ".fai"):
        log.info("%s: read by one task: no .fai index beside it", uri)
        return None
    try:
        # pyfaidx can seek in plain text and bgzip only (plain gzip has no .gzi).
        bgzf = check_compression(uri, path, fs.cat_file(path, start=0, end=18))
        indexes = [".fai", ".gzi"] if bgzf else [".fai"]
        if not fs.exists(path + indexes[-1]):
            log.info("%s: read by one task: no %s index beside it", uri, indexes[-1])
            return None
        mtime = getmtime_fsspec(path, fs)
        stale = [sfx for sfx in indexes if mtime and (getmtime_fsspec(path + sfx, fs) or 0) < mtime]
        if stale:
            # An index older than its file may describe another file: a whole read needs none.
            log.warning(
                "%s: read by one task: its %s is older than it (rebuild it, or touch it if it "
                "is current, to read the file in pieces)",
                uri,
                " and ".join(stale),
            )
            return None
        if sniff_format(uri, storage_options) != "fasta":
            return None
        ref = Reference(uri, storage_options)
        try:
            lengths = ref.lengths()
        finally:
            ref.close()
    except InputError as e:
        log.warning("%s: read by one task: %s", uri, e)
        return None
    # seq_id is the header's first word: a name the index holds otherwise (empty, or with a
    # character Python counts as a space) would name the record differently.
    if not all(name.split() == [name] for name in lengths):
        log.warning("%s: read by one task: its index has names that are not one word", uri)
        return None
    return list(lengths.values())


def current_index_lengths(
    uri: str, storage_options: dict[str, Any] | None
) -> list[tuple[str, int]] | None:
    """(name, length) per record from the index beside a FASTA (.fai, and .gzi for bgzip)
    when it is there and not older than the file; None otherwise (then: read it to know)."""
    fs, path = get_fs(uri, storage_options)
    if not fs.exists(path + ".fai"):
        return None
    try:
        bgzf = check_compression(uri, path, fs.cat_file(path, start=0, end=18))
    except InputError:
        return None  # plain gzip: an index cannot be used
    indexes = [".fai", ".gzi"] if bgzf else [".fai"]
    if not fs.exists(path + indexes[-1]):
        return None
    mtime = getmtime_fsspec(path, fs)
    if any(mtime and (getmtime_fsspec(path + sfx, fs) or 0) < mtime for sfx in indexes):
        return None
    ref = Reference(uri, storage_options)
    try:
        return list(ref.lengths().items())
    finally:
        ref.close()


class IndexedFasta(Reference):
    """Reference's random access, and each record's header to check the index by."""

    def header(self, name: str) -> str:
        """The text between the previous record's bases and this one's, less its first '>'
        and last line end (pyfaidx's long name: the header line, where the index is right)."""
        with reference_errors(self.uri):
            return self._faidx().get_long_name(name)


def check_header(uri: str, name: str, text: str) -> None:
    """The text before a record's bases must be its own header alone: samtools faidx leaves
    empty records out of a .fai, and a whole read counts (and skips) them."""
    lines = [s for s in text.splitlines() if s.strip()]
    words = lines[0].removeprefix(">").split() if len(lines) == 1 else []
    if words[:1] != [name]:
        raise InputError(
            f"{uri}: its .fai index does not match the file before record {name!r} (the text "
            f"there is {text[:200]!r}; an index made by samtools faidx leaves out empty "
            "records): rebuild the index with pyfaidx, or set input.split_bases=0 to read the "
            "file whole"
        )
