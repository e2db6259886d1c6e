"""bigWig tracks assembled from a tracks run's committed shards.

A shard row is one window's scored span on one strand: per-base value lists (`logp`,
`entropy`, `probs` with channels A, C, G, T) over [start, end), in forward order on both
strands, NaN at gaps. A strand's rows of a contig tile it without overlap, in any shard and
any order, so assembly indexes the rows' coordinates first and then fills one block of
positions at a time: our memory is bounded by the block and a few cached row groups, never
by a contig or a run. (libBigWig, closing a file, holds one contig's entries and the file's
zoom levels: files are closed one at a time.)

<output>/tracks/<track>.<strand>.bw     track: logp, entropy, prob_A .. prob_T;
                                        strand: forward, reverse, merged
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import ConfigError, InputError
from pipeline.storage import canonical_uri, get_fs, is_local, join, store_errors
from pipeline.write.layout import TRACKS as TRACKS_DIR

BASES = "ACGT"
# A value column and the tracks it makes: (track name, channel of the column or None).
VALUE_TRACKS: dict[str, tuple[tuple[str, int | None], ...]] = {
    "logp": (("logp", None),),
    "entropy": (("entropy", None),),
    "probs": tuple((f"prob_{b}", i) for i, b in enumerate(BASES)),
}
# A track name and where its values are: (value column, channel or None).
TRACK_SOURCES: dict[str, tuple[str, int | None]] = {
    track: (value, channel) for value, tracks in VALUE_TRACKS.items() for track, channel in tracks
}
STRAND_NAMES = ("forward", "reverse", "merged")
STRAND_OF_ROW = {"+": "forward", "-": "reverse"}
# A run's `strands` setting and the bigWig strands it writes.
STRAND_FILES: dict[str, tuple[str, ...]] = {
    "forward": ("forward",),
    "reverse": ("reverse",),
    "both": ("forward", "reverse"),
    "merged": ("merged",),
}
# The row strands each bigWig strand is made of.
ROW_STRANDS: dict[str, tuple[str, ...]] = {
    "forward": ("+",),
    "reverse": ("-",),
    "merged": ("+", "-"),
}
_KEYS = ["seq_id", "start", "end", "strand"]
_CACHED_GROUPS = 4  # a contig's rows cluster in few shards: a small cache reads each once
_RETRIES = 4


def track_path(track: str, strand: str) -> str:
    """A bigWig's path relative to the output."""
    return f"{TRACKS_DIR}/{track}.{strand}.bw"


def bigwig_tracks(values: Sequence[str], strands: str) -> list[tuple[str, str, str, int | None]]:
    """(relative path, track, strand, channel or None) of each bigWig a run writes: values in
    the order given, each value's tracks, then strands."""
    return [
        (path, track, strand, channel)
        for path, track, strand, _, channel in _files(values, strands)
    ]


def _files(values: Sequence[str], strands: str) -> list[tuple[str, str, str, str, int | None]]:
    """`bigwig_tracks` with each file's value column: (path, track, strand, value, channel)."""
    unknown = [v for v in values if v not in VALUE_TRACKS]
    if unknown:
        raise ConfigError(f"unknown track values {unknown}; known: {list(VALUE_TRACKS)}")
    if len(set(values)) != len(values):
        raise ConfigError(f"track values {list(values)} name one twice")
    if strands not in STRAND_FILES:
        raise ConfigError(f"unknown strands {strands!r}; known: {list(STRAND_FILES)}")
    return [
        (track_path(track, strand), track, strand, value, channel)
        for value in values
        for track, channel in VALUE_TRACKS[value]
        for strand in STRAND_FILES[strands]
    ]


def merge_strands(forward: np.ndarray, reverse: np.ndarray) -> np.ndarray:
    """At each base the mean of the strands that have a value there (NaN where neither)."""
    both = (forward + reverse) * np.float32(0.5)
    return np.where(np.isnan(forward), reverse, np.where(np.isnan(reverse), forward, both))


def list_values(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values) of a list column: row i's values are values[offsets[i]:offsets[i+1]],
    shape (n,) or, for `probs`, (n, 4)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = array.offsets.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    child = array.values  # what the offsets index, whatever slice `array` is
    if pa.types.is_fixed_size_list(child.type):
        size = child.type.list_size
        flat = child.flatten().to_numpy(zero_copy_only=False)
        return offsets, flat.astype(np.float32, copy=False).reshape(-1, size)
    return offsets, child.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)


def value_type_error(value: str, type_: pa.DataType) -> str | None:
    """Why a column of this type cannot be the `value` column, or None if it can."""
    if not (pa.types.is_list(type_) or pa.types.is_large_list(type_)):
        return f"{value} is {type_}, not a list"
    inner = type_.value_type
    if value == "probs":
        if not (pa.types.is_fixed_size_list(inner) and inner.list_size == len(BASES)):
            return f"probs is {type_}, not a list of fixed_size_list<float32, 4>"
        inner = inner.value_type
    if not pa.types.is_floating(inner):
        return f"{value} is {type_}, not a list of floats"
    return None


@dataclass
class _Rows:
    """One contig's rows on one strand, by start: coordinates and where each row is."""

    start: np.ndarray
    end: np.ndarray
    shard: np.ndarray
    row: np.ndarray

    def overlapping(self, lo: int, hi: int) -> np.ndarray:
        """Indices of the rows overlapping [lo, hi) (the rows neither overlap nor nest, so
        their ends are sorted too)."""
        first = int(np.searchsorted(self.end, lo, side="right"))
        last = int(np.searchsorted(self.start, hi, side="left"))
        return np.arange(first, max(first, last))


class _Index:
    """Every row's coordinates, by contig and strand, checked against the contigs."""

    def __init__(
        self,
        shards: Sequence[str],
        contigs: Sequence[tuple[str, int]],
        storage_options: dict | None = None,
    ):
        self.shards = list(shards)
        self.files = [get_fs(uri, storage_options) for uri in self.shards]
        self.lengths = dict(contigs)
        self.group_ends: list[np.ndarray] = []  # per shard: cumulative rows per row group
        parts: dict[tuple[str, str], list[tuple[np.ndarray, ...]]] = defaultdict(list)
        for i in range(len(self.shards)):
            for key, part in self._read(i).items():
                parts[key].append(part)
        self.rows = {key: self._sorted(key, p) for key, p in parts.items()}

    def open(self, i: int) -> pq.ParquetFile:
        fs, path = self.files[i]
        return pq.ParquetFile(path, filesystem=fs)

    def _read(self, i: int) -> dict[tuple[str, str], tuple[np.ndarray, ...]]:
        path = self.shards[i]
        with store_errors(self.files[i][0], f"reading {path}"):
            pf = self.open(i)
            missing = [k for k in _KEYS if k not in pf.schema_arrow.names]
            if missing:
                raise InputError(f"shard {path} has no column {missing[0]}")
            table = pf.read(columns=_KEYS)
        meta = pf.metadata
        self.group_ends.append(
            np.cumsum([meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        )
        seq = table.column("seq_id").to_numpy(zero_copy_only=False)
        strand = table.column("strand").to_numpy(zero_copy_only=False)
        start = table.column("start").to_numpy(zero_copy_only=False).astype(np.int64)
        end = table.column("end").to_numpy(zero_copy_only=False).astype(np.int64)
        unique, which = np.unique(seq.astype(str), return_inverse=True)
        names = [str(n) for n in unique]
        for k, name in enumerate(names):
            if name not in self.lengths:
                row = int(np.flatnonzero(which == k)[0])
                raise InputError(f"shard {path} row {row}: contig {name!r} is not in the input")
        odd = np.flatnonzero(~np.isin(strand, list(STRAND_OF_ROW)))
        if odd.size:
            r = int(odd[0])
            raise InputError(f"shard {path} row {r}: strand {strand[r]!r} is neither + nor -")
        length = np.array([self.lengths[n] for n in names], dtype=np.int64)[which]
        bad = np.flatnonzero((start < 0) | (end < start) | (end > length))
        if bad.size:
            r = int(bad[0])
            raise InputError(
                f"shard {path} row {r}: {seq[r]}:{start[r]}-{end[r]} is not a span of "
                f"{seq[r]} (length {length[r]})"
            )
        out = {}
        for k, name in enumerate(names):
            for s in STRAND_OF_ROW:
                # Empty spans score no base: they neither fill nor overlap anything.
                rows = np.flatnonzero((which == k) & (strand == s) & (end > start))
                if rows.size:
                    out[(name, s)] = (start[rows], end[rows], np.full(rows.size, i), rows)
        return out

    def _sorted(self, key: tuple[str, str], parts: list[tuple[np.ndarray, ...]]) -> _Rows:
        start, end, shard, row = (np.concatenate(c) for c in zip(*parts, strict=True))
        order = np.lexsort((row, shard, end, start))
        rows = _Rows(start[order], end[order], shard[order], row[order])
        clash = np.flatnonzero(rows.start[1:] < rows.end[:-1])
        if clash.size:
            a, b = int(clash[0]), int(clash[0]) + 1
            raise InputError(
                f"rows overlap on {key[0]} strand {key[1]}: {self._where(rows, a)} and "
                f"{self._where(rows, b)}"
            )
        return rows

    def _where(self, rows: _Rows, k: int) -> str:
        return (
            f"shard {self.shards[rows.shard[k]]} row {rows.row[k]} [{rows.start[k]}, {rows.end[k]})"
        )


class _Values:
    """Rows' value lists, read a row group at a time and kept in a small LRU cache."""

    def __init__(self, index: _Index, values: Sequence[str]):
        self.index, self.values = index, list(values)
        self.cache: OrderedDict[tuple[int, int], dict[str, tuple[np.ndarray, ...]]] = OrderedDict()

    def get(self, shard: int, row: int, value: str, expected: int) -> np.ndarray:
        """Row `row` of shard `shard`: its `value` list, checked to hold `expected` entries."""
        ends = self.index.group_ends[shard]
        group = int(np.searchsorted(ends, row, side="right"))
        first = int(ends[group - 1]) if group else 0
        offsets, flat = self._group(shard, group)[value]
        lo, hi = offsets[row - first], offsets[row - first + 1]
        if hi - lo != expected:
            raise InputError(
                f"shard {self.index.shards[shard]} row {row}: {value} has {hi - lo} values "
                f"for a span of {expected} bases"
            )
        return flat[lo:hi]

    def _group(self, shard: int, group: int) -> dict[str, tuple[np.ndarray, ...]]:
        key = (shard, group)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        path = self.index.shards[shard]
        with store_errors(self.index.files[shard][0], f"reading {path}"):
            pf = self.index.open(shard)
            schema = pf.schema_arrow
            for value in self.values:
                if value not in schema.names:
                    raise InputError(f"shard {path} has no {value} column")
                why = value_type_error(value, schema.field(value).type)
                if why:
                    raise InputError(f"shard {path}: {why}")
            table = pf.read_row_group(group, columns=self.values)
        self.cache[key] = {v: list_values(table.column(v)) for v in self.values}
        if len(self.cache) > _CACHED_GROUPS:
            self.cache.popitem(last=False)
        return self.cache[key]


def _fill_strand(
    rows: _Rows | None, reader: _Values, lo: int, hi: int, out: dict[str, np.ndarray]
) -> bool:
    """Fill `out` (one array per value, NaN) with one strand's values over [lo, hi).
    Returns whether any row overlaps."""
    if rows is None:
        return False
    span = rows.overlapping(lo, hi)
    # Shard by shard: each row group is read at most once per block, whatever the cache holds.
    for k in span[np.lexsort((rows.row[span], rows.shard[span]))].tolist():
        start, end = int(rows.start[k]), int(rows.end[k])
        a, b = max(start, lo), min(end, hi)
        for value, array in out.items():
            got = reader.get(int(rows.shard[k]), int(rows.row[k]), value, end - start)
            array[a - lo : b - lo] = got[a - start : b - start]
    return span.size > 0


def _block(
    index: _Index,
    reader: _Values,
    contig: str,
    lo: int,
    hi: int,
    strands: set[str],
) -> dict[str, dict[str, np.ndarray]] | None:
    """Values over [lo, hi) of a contig, by bigWig strand and value; None where no row
    overlaps the block."""
    wanted = {s for name in strands for s in ROW_STRANDS[name]}
    by_row: dict[str, dict[str, np.ndarray]] = {}
    found = False
    for s in sorted(wanted):
        arrays = {
            v: _nan((hi - lo, len(BASES)) if v == "probs" else (hi - lo,)) for v in reader.values
        }
        found |= _fill_strand(index.rows.get((contig, s)), reader, lo, hi, arrays)
        by_row[s] = arrays
    if not found:
        return None
    out = {STRAND_OF_ROW[s]: arrays for s, arrays in by_row.items()}
    if "merged" in strands:
        out["merged"] = {v: merge_strands(by_row["+"][v], by_row["-"][v]) for v in reader.values}
    return out


def _nan(shape: tuple[int, ...]) -> np.ndarray:
    return np.full(shape, np.nan, dtype=np.float32)


def _runs(values: np.ndarray) -> Iterator[tuple[int, int]]:
    """[a, b) of each run of values that are not NaN."""
    present = np.concatenate(([0], (~np.isnan(values)).astype(np.int8), [0]))
    edges = np.diff(present)
    yield from zip(
        np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True
    )


@dataclass
class _Track:
    path: str
    track: str
    strand: str
    value: str
    channel: int | None
    local: str
    bw: Any = None
    bases: int = 0

    def add(self, contig: str, lo: int, block: dict[str, dict[str, np.ndarray]]) -> None:
        values = block[self.strand][self.value]
        if self.channel is not None:
            values = values[:, self.channel]
        for a, b in _runs(values):
            run = np.ascontiguousarray(values[a:b])
            self.bw.addEntries(contig, lo + a, values=run, span=1, step=1)
            self.bases += b - a


def write_bigwigs(
    shards: Sequence[str],
    contigs: Sequence[tuple[str, int]],
    values: Sequence[str],
    strands: str,
    dest: str,
    storage_options: dict | None = None,
    block_bases: int = 1 << 20,
    processes: int | None = None,
) -> list[dict]:
    """Write the run's bigWigs (`bigwig_tracks`) from its shards into the output `dest`, at
    `tracks/<track>.<strand>.bw`. `contigs`: (name, length) in input order, the bigWig header.
    Each file appears whole or not at all. Returns one manifest entry per file:
    {path, track, strand, bases}, bases being the values written. `processes`: files are
    written by up to this many processes at once (None: one per file, up to the CPUs), since
    libBigWig's time (about 0.4 us a base, mostly its zoom levels) is per file."""
    if block_bases < 1:
        raise ConfigError(f"block_bases must be positive, not {block_bases}")
    names = [name for name, _ in contigs]
    if len(set(names)) != len(names):
        raise InputError("a contig is listed twice in the bigWig header")
    files = _files(values, strands)
    n = min(len(files), processes or os.cpu_count() or 1)
    args = (list(shards), list(contigs), values, strands, dest, storage_options, block_bases)
    if n <= 1:
        return _write_files(files, *args)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    groups = [files[i::n] for i in range(n)]
    # Spawned, not forked: the driver may hold threads (the lease) and Ray's state.
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = list(pool.map(_write_files, groups, *([a] * n for a in args)))
    by_path = {e["path"]: e for group in done for e in group}
    return [by_path[f[0]] for f in files]


def _write_files(
    files: list,
    shards: Sequence[str],
    contigs: Sequence[tuple[str, int]],
    values: Sequence[str],
    strands: str,
    dest: str,
    storage_options: dict | None,
    block_bases: int,
) -> list[dict]:
    """write_bigwigs for some of its files, in this process."""
    import pyBigWig  # only assembly and track loading need it

    index = _Index(shards, contigs, storage_options)
    # This process's files' value columns only.
    reader = _Values(index, [v for v in values if any(f[3] == v for f in files)])
    dest_fs, dest_path = get_fs(dest, storage_options)
    local_dest = is_local(dest_fs)
    with tempfile.TemporaryDirectory(prefix="dnaembed-tracks-") as tmp:
        if local_dest:
            os.makedirs(join(dest_path, TRACKS_DIR), exist_ok=True)
        tracks = [
            _Track(*f, local=_staging(dest_path, f[0]) if local_dest else os.path.join(tmp, f[0]))
            for f in files
        ]
        if not local_dest:
            os.makedirs(os.path.join(tmp, TRACKS_DIR))
        try:
            _assemble(index, reader, contigs, tracks, strands, block_bases, pyBigWig)
            for t in tracks:
                _publish(dest_fs, t.local, join(dest_path, t.path), local_dest)
        finally:
            for t in tracks:
                if t.bw is not None:
                    t.bw.close()
                if local_dest and os.path.exists(t.local):
                    os.unlink(t.local)
    return [
        {"path": t.path, "track": t.track, "strand": t.strand, "bases": t.bases} for t in tracks
    ]


def _staging(dest_path: str, rel: str) -> str:
    """A local bigWig's name while written: beside its final name, as an in-flight write."""
    directory, name = os.path.split(join(dest_path, rel))
    return os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{name}")


def _assemble(
    index: _Index,
    reader: _Values,
    contigs: Sequence[tuple[str, int]],
    tracks: list[_Track],
    strands: str,
    block_bases: int,
    pyBigWig: Any,
) -> None:
    header = [(name, int(length)) for name, length in contigs]
    for t in tracks:
        t.bw = pyBigWig.open(t.local, "w")
        t.bw.addHeader(header)
    wanted = set(STRAND_FILES[strands])
    row_strands = {s for name in wanted for s in ROW_STRANDS[name]}
    for name, length in header:
        if not any((name, s) in index.rows for s in row_strands):
            continue
        for lo in range(0, length, block_bases):
            block = _block(index, reader, name, lo, min(lo + block_bases, length), wanted)
            if block is not None:
                for t in tracks:
                    t.add(name, lo, block)
    for t in tracks:
        t.bw.close()
        t.bw = None


def _publish(fs: Any, local: str, path: str, local_dest: bool) -> None:
    """Make a finished bigWig visible at `path` whole: a rename on local disk; an upload
    otherwise (one PUT, or a multipart upload visible only once complete)."""
    if local_dest:
        os.replace(local, path)
        return
    for attempt in range(_RETRIES):
        try:
            with store_errors(fs, f"writing {canonical_uri(fs, path)}"):
                fs.put_file(local, path)
            return
        except (ConnectionError, TimeoutError):
            if attempt == _RETRIES - 1:
                raise
            time.sleep(0.5 * 2**attempt)
