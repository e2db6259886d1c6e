"""Labels from BED intervals, attached to windows by overlap (both 0-based, half-open).

The usual way a genomics user adds targets: peaks, genes or annotations in a BED file; each
window takes the label of the interval that overlaps it most.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.errors import InputError
from pipeline.read.fastx import open_binary

BED_COLUMNS = ("chrom", "start", "end", "name", "score", "strand")


def read_bed(uri: str, storage_options: dict[str, Any] | None = None) -> pa.Table:
    """A BED file (plain or gzip, any URI): chrom, start, end, then name, score, strand if
    present. Track, browser and comment lines are skipped."""
    with open_binary(uri, storage_options) as f:
        lines = [
            line
            for line in f.read().decode().splitlines()
            if line.strip() and not line.startswith(("#", "track", "browser"))
        ]
    if not lines:
        raise InputError(f"{uri}: no BED intervals")
    width = min(len(line.split("\t")) for line in lines)
    if width < 3:
        raise InputError(f"{uri}: a BED line needs chrom, start and end, tab-separated")
    names = list(BED_COLUMNS[: min(width, 6)]) + [f"col{i}" for i in range(7, width + 1)]
    types = {
        "chrom": pa.string(),
        "start": pa.int64(),
        "end": pa.int64(),
        "name": pa.string(),
        "score": pa.float64(),
        "strand": pa.string(),
    }
    table = pacsv.read_csv(
        io.BytesIO("\n".join("\t".join(line.split("\t")[:width]) for line in lines).encode()),
        read_options=pacsv.ReadOptions(column_names=names),
        parse_options=pacsv.ParseOptions(delimiter="\t"),
        convert_options=pacsv.ConvertOptions(
            column_types={k: v for k, v in types.items() if k in names}
        ),
    )
    bad = np.flatnonzero(table.column("end").to_numpy() < table.column("start").to_numpy())
    if bad.size:
        raise InputError(f"{uri}: interval {int(bad[0])} ends before it starts")
    return table


def attach_labels(
    windows: pa.Table, bed: pa.Table, value: str = "name", min_overlap: int = 1, default: Any = None
) -> pa.Table:
    """`windows` with `label` and `overlap_bp` columns from the best-overlapping interval.

    value: "name" or "score" (the BED column to take), or "binary" (1 when any interval
    overlaps by at least `min_overlap` bases, else 0). Windows match intervals on
    seq_id == chrom, strand ignored. Ties in overlap go to the interval listed first.
    """
    if min_overlap < 1:
        raise ValueError(f"min_overlap must be >= 1 base, got {min_overlap}")
    if value not in ("binary", *bed.column_names):
        raise ValueError(f"value={value!r}: the BED table has {bed.column_names}")
    n = windows.num_rows
    best = np.zeros(n, dtype=np.int64)
    which = np.full(n, -1, dtype=np.int64)
    w_seq = np.asarray(windows.column("seq_id").to_pylist(), dtype=object)
    w_start = windows.column("start").to_numpy()
    w_end = windows.column("end").to_numpy()
    b_chrom = np.asarray(bed.column("chrom").to_pylist(), dtype=object)
    b_start = bed.column("start").to_numpy()
    b_end = bed.column("end").to_numpy()
    for chrom in np.unique(b_chrom):
        rows = np.flatnonzero(w_seq == chrom)
        if not rows.size:
            continue
        ivs = np.flatnonzero(b_chrom == chrom)
        ivs = ivs[np.argsort(b_start[ivs], kind="stable")]
        starts, ends = b_start[ivs], b_end[ivs]
        longest = int((ends - starts).max())
        # Candidates: intervals starting before the window ends and no earlier than the
        # longest interval could reach back from.
        lo = np.searchsorted(starts, w_start[rows] - longest, side="left")
        hi = np.searchsorted(starts, w_end[rows], side="left")
        counts = hi - lo
        if not counts.sum():
            continue
        owner = np.repeat(np.arange(rows.size), counts)
        # Candidate k of window j is interval lo[j] + k: all pairs at once, no Python loop.
        cand = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts - lo, counts)
        overlap = np.minimum(ends[cand], w_end[rows][owner]) - np.maximum(
            starts[cand], w_start[rows][owner]
        )
        # Per window, the largest overlap (the first such interval on ties).
        order = np.lexsort((ivs[cand], -overlap, owner))
        first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]]
        ok = overlap[first] >= min_overlap
        best[rows[owner[first][ok]]] = overlap[first][ok]
        which[rows[owner[first][ok]]] = ivs[cand[first][ok]]
    if value == "binary":
        label = pa.array((which >= 0).astype(np.int8))
    else:
        col = bed.column(value).to_pylist()
        label = pa.array([col[i] if i >= 0 else default for i in which.tolist()])
    return windows.append_column("label", label).append_column("overlap_bp", pa.array(best))
