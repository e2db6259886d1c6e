"""Load one track of a tracks run over a range: from its bigWigs or from its shards.

The shards are the committed record and the bigWigs are assembled from them, so both give the
same values: float32, NaN where a base has none. Neither clips a range to its contig.
"""

from __future__ import annotations

import atexit
import contextlib
import operator
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads

from pipeline.errors import OutputError
from pipeline.load.loader import read_manifest, region, shard_paths
from pipeline.storage import canonical_uri, is_local, store_errors
from pipeline.write.layout import OutputDir
from pipeline.write.tracks import (
    ROW_STRANDS,
    STRAND_NAMES,
    TRACK_SOURCES,
    TRACKS_DIR,
    list_values,
    merge_strands,
    track_path,
)

SOURCES = ("auto", "bigwig", "parquet")
# Local copies of remote bigWigs, by (URI, size, version): read once per process.
_copies: dict[tuple[str, Any, str], str] = {}
_copy_dir: list[str] = []


def load_track(
    output: str,
    track: str,
    contig: str,
    start: int,
    end: int,
    strand: str = "forward",
    source: str = "auto",
    storage_options: dict | None = None,
) -> np.ndarray:
    """float32 values of `track` on `contig` over [start, end) (0-based, half-open), NaN at
    gaps. `track`: logp, entropy, prob_A, prob_C, prob_G or prob_T; `strand`: forward,
    reverse or merged (the mean of the strands with a value); `source`: bigwig (the output's
    tracks/<track>.<strand>.bw), parquet (its shards) or auto (the bigWig where there is one).
    """
    start, end = _check_args(track, strand, source, start, end)
    manifest = read_manifest(output, storage_options)
    out = OutputDir(output, storage_options)
    rel = track_path(track, strand)
    if source == "auto":
        source = "bigwig" if out.exists(rel) else "parquet"
    if source == "bigwig":
        return _from_bigwig(out, rel, contig, start, end)
    return _from_parquet(out, manifest, track, contig, start, end, strand)


def _check_args(track: str, strand: str, source: str, start: int, end: int) -> tuple[int, int]:
    if track not in TRACK_SOURCES:
        raise ValueError(f"unknown track {track!r}; known: {list(TRACK_SOURCES)}")
    if strand not in STRAND_NAMES:
        raise ValueError(f"unknown strand {strand!r}; known: {list(STRAND_NAMES)}")
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known: {list(SOURCES)}")
    start, end = operator.index(start), operator.index(end)
    if start < 0 or end < start:
        raise ValueError(f"start {start} and end {end} are not a range (0 <= start <= end)")
    return start, end


def _check_range(lengths: dict[str, int], contig: str, end: int, output: str) -> None:
    if contig not in lengths:
        shown = ", ".join(list(lengths)[:5]) + (", ..." if len(lengths) > 5 else "")
        raise ValueError(f"contig {contig!r} is not in {output} (its contigs: {shown})")
    if end > lengths[contig]:
        raise ValueError(f"end {end} is past the end of {contig} (length {lengths[contig]})")


def _from_bigwig(out: OutputDir, rel: str, contig: str, start: int, end: int) -> np.ndarray:
    if not out.exists(rel):
        have = ", ".join(_bigwigs(out)) or "none"
        raise ValueError(f"{out.uri} has no bigWig {rel} (its bigWigs: {have})")
    with _open_bigwig(out, out.file(rel)) as bw:
        _check_range(bw.chroms(), contig, end, out.uri)
        if end == start:
            return _nan(0)
        values = bw.values(contig, start, end, numpy=True)
    if len(values) == 0:  # a bigWig with no entries at all answers nothing, not NaN
        return _nan(end - start)
    return np.asarray(values, dtype=np.float32)


def _bigwigs(out: OutputDir) -> list[str]:
    """The output's bigWigs, relative to it."""
    if not out.exists(TRACKS_DIR):
        return []
    names = (posixpath.basename(p) for p in out.fs.glob(out.file(TRACKS_DIR, "*.bw")))
    # A name starting with `.` is a write in flight, not a bigWig yet.
    return sorted(f"{TRACKS_DIR}/{n}" for n in names if not n.startswith("."))


@contextlib.contextmanager
def _open_bigwig(out: OutputDir, path: str) -> Iterator[Any]:
    import pyBigWig  # only track assembly and loading need it

    bw = pyBigWig.open(_local_copy(out.fs, path))
    try:
        yield bw
    finally:
        bw.close()


def _local_copy(fs: Any, path: str) -> str:
    """A local file with the bigWig at `path` (pyBigWig reads only local files): the file
    itself, or a copy downloaded once and kept until the process exits."""
    if is_local(fs):
        return path
    uri = canonical_uri(fs, path)
    with store_errors(fs, f"reading {uri}"):
        info = fs.info(path)
    version = str(info.get("ETag") or info.get("LastModified") or info.get("mtime") or "")
    key = (uri, info.get("size"), version)
    if key in _copies and os.path.exists(_copies[key]):
        return _copies[key]
    for stale in [k for k in _copies if k[0] == uri]:
        with contextlib.suppress(OSError):
            os.unlink(_copies.pop(stale))
    local = os.path.join(_copies_directory(), f"{uuid.uuid4().hex}-{posixpath.basename(path)}")
    with store_errors(fs, f"reading {uri}"):
        fs.get_file(path, local)
    _copies[key] = local
    return local


def _copies_directory() -> str:
    if not _copy_dir:
        _copy_dir.append(tempfile.mkdtemp(prefix="dnaembed-bigwig-"))
        atexit.register(shutil.rmtree, _copy_dir[0], True)
    return _copy_dir[0]


def _contig_lengths(out: OutputDir, manifest: dict) -> dict[str, int]:
    """Contig lengths: the manifest's `tracks.contigs`, else any bigWig's header."""
    tracks = manifest.get("tracks")
    if isinstance(tracks, dict) and tracks.get("contigs") is not None:
        return {str(name): int(length) for name, length in tracks["contigs"]}
    found = _bigwigs(out)
    if not found:
        raise OutputError(
            f"{out.uri} records no contig lengths (no tracks.contigs in its manifest, no "
            "bigWig): a range cannot be checked against its contig"
        )
    with _open_bigwig(out, out.file(found[0])) as bw:
        return dict(bw.chroms())


def _check_strand_scored(manifest: dict, strand: str, output: str) -> None:
    """A run of one strand has no rows of the other: refuse rather than answer all NaN."""
    scored = (manifest.get("tracks") or {}).get("strands")
    if scored in ("forward", "reverse") and strand not in (scored, "merged"):
        raise ValueError(f"strand {strand!r}: {output} scored only the {scored} strand")


def _from_parquet(
    out: OutputDir, manifest: dict, track: str, contig: str, start: int, end: int, strand: str
) -> np.ndarray:
    _check_range(_contig_lengths(out, manifest), contig, end, out.uri)
    _check_strand_scored(manifest, strand, out.uri)
    by_row = {s: _nan(end - start) for s in ROW_STRANDS[strand]}
    paths = shard_paths(out.uri, out.storage_options)
    if paths and end > start:
        _fill(out, paths, track, contig, start, end, by_row)
    if strand == "merged":
        return merge_strands(by_row["+"], by_row["-"])
    return by_row[ROW_STRANDS[strand][0]]


def _fill(
    out: OutputDir,
    paths: list[str],
    track: str,
    contig: str,
    start: int,
    end: int,
    by_row: dict[str, np.ndarray],
) -> None:
    """Fill each strand's array with the values of the rows overlapping [start, end)."""
    value, channel = TRACK_SOURCES[track]
    with store_errors(out.fs, f"reading the shards of {out.uri}"):
        dataset = pads.dataset(paths, format="parquet", filesystem=out.fs)
        if value not in dataset.schema.names:
            raise ValueError(f"track {track!r}: {out.uri} has no {value} values")
        expr = region(contig, start, end) & pc.field("strand").isin(list(by_row))
        table = dataset.to_table(columns=["start", "end", "strand", value], filter=expr)
    offsets, flat = list_values(table.column(value))
    if channel is not None:
        flat = flat[:, channel]
    starts = table.column("start").to_numpy()
    ends = table.column("end").to_numpy()
    strands = table.column("strand").to_pylist()
    for i, (s, e, row_strand) in enumerate(
        zip(starts.tolist(), ends.tolist(), strands, strict=True)
    ):
        if offsets[i + 1] - offsets[i] != e - s:
            raise OutputError(
                f"{out.uri}: the {value} row of {contig}:{s}-{e} holds "
                f"{offsets[i + 1] - offsets[i]} values for {e - s} bases"
            )
        a, b = max(s, start), min(e, end)
        first = offsets[i] + a - s
        by_row[row_strand][a - start : b - start] = flat[first : first + b - a]


def _nan(n: int) -> np.ndarray:
    return np.full(n, np.nan, dtype=np.float32)
