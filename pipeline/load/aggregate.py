"""Exact record- and interval-level embeddings from window embeddings.

A window's mean embedding times its `n_tokens` is the sum of its tokens' hidden states, so
windows merge into exact means over their tokens: records longer than `model.max_model_len`,
genes, peaks. How windows are weighted:

- mean columns: weighted by tokens. With non-overlapping windows (stride = size) a record's
  mean is the mean over every token of the record, each embedded in its own window's context.
  Overlapping windows count the tokens they share once per window (each window saw them in a
  different context); that is the token-weighted mean of the windows, not a deduplicated one.
- max columns: the elementwise max over the windows, which is the max over their tokens.
- last columns do not aggregate (a window's last token says nothing about the others): refused.

Coordinates: BED intervals and windows are both 0-based, half-open.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.load.loader import (
    embedding_columns,
    load_embeddings,
    pick_embedding,
    read_manifest,
    table_embeddings,
    to_numpy,
)
from pipeline.rows import embedding_array, parse_column

_GROUP_FLOATS = 1 << 25  # (window, interval) pairs x dim per step: bounds the memory


def _load(
    source: str | pa.Table, embedding: str | None, storage_options: dict[str, Any] | None
) -> tuple[pa.Table, str, str]:
    """(windows with the chosen column, column, its pooling)."""
    if isinstance(source, pa.Table):
        name = pick_embedding(table_embeddings(source), embedding)
        pooling = parse_column(name)[1]
        table = source
    else:
        manifest = read_manifest(source, storage_options)
        name = pick_embedding(embedding_columns(manifest), embedding)
        pooling = next(
            (e["pooling"] for e in manifest.get("embeddings", []) if e["column"] == name), "mean"
        )
        cols = ["source", "seq_id", "start", "end", "strand", "n_tokens", name]
        table = load_embeddings(source, cols, storage_options=storage_options)
    if pooling == "last":
        raise ValueError(
            f"{name} is last-token pooled: it does not aggregate over windows "
            "(mean columns give token-weighted means, max columns the max)"
        )
    return table, name, pooling


def _reduce(
    emb: np.ndarray, rows: np.ndarray, group: np.ndarray, weight: np.ndarray, n: int, how: str
) -> np.ndarray:
    """Per group: sum(weight * emb) / sum(weight) (mean) or max of emb, over (row, group)
    pairs; pairs are processed in steps so memory stays bounded."""
    d = emb.shape[1]
    out = np.zeros((n, d), np.float64) if how == "mean" else np.full((n, d), -np.inf, np.float32)
    step = max(1, _GROUP_FLOATS // max(d, 1))
    for lo in range(0, len(rows), step):
        r, g = rows[lo : lo + step], group[lo : lo + step]
        if how == "mean":
            np.add.at(out, g, emb[r].astype(np.float64) * weight[lo : lo + step, None])
        else:
            np.maximum.at(out, g, emb[r])
    if how == "mean":
        total = np.bincount(group, weights=weight, minlength=n)
        out /= np.where(total > 0, total, 1)[:, None]
    return out.astype(np.float32)


def aggregate_records(
    source: str | pa.Table,
    embedding: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> pa.Table:
    """One row per (source, seq_id, strand): `n_windows`, `n_tokens`, `start`/`end` (the span
    the windows cover) and the aggregated embedding column (same name).

    `source`: an output URI or a table with the window columns, `n_tokens` and the column.
    """
    table, name, how = _load(source, embedding, storage_options)
    keys = ["source", "seq_id", "strand"]
    grouped = (
        table.select([*keys, "start", "end", "n_tokens"])
        .append_column("_row", pa.array(np.arange(table.num_rows)))
        .group_by(keys, use_threads=False)
        .aggregate([("_row", "list"), ("start", "min"), ("end", "max"), ("n_tokens", "sum")])
    )
    lists = grouped.column("_row_list").combine_chunks()
    rows = lists.values.to_numpy()
    group = np.repeat(np.arange(len(lists)), np.diff(lists.offsets.to_numpy()))
    weight = table.column("n_tokens").to_numpy().astype(np.float64)[rows]
    vectors = _reduce(to_numpy(table, embedding=name)[1], rows, group, weight, len(lists), how)
    out = pa.table(
        {
            **{k: grouped.column(k) for k in keys},
            "start": grouped.column("start_min"),
            "end": grouped.column("end_max"),
            "n_windows": pa.array(np.diff(lists.offsets.to_numpy()), pa.int64()),
            "n_tokens": grouped.column("n_tokens_sum"),
            name: embedding_array(vectors),
        }
    )
    return out.sort_by([(k, "ascending") for k in ("source", "seq_id", "strand")])


def aggregate_intervals(
    source: str | pa.Table,
    bed: pa.Table,
    embedding: str | None = None,
    how: str = "contained",
    storage_options: dict[str, Any] | None = None,
) -> pa.Table:
    """One row per (BED interval, window strand) with a qualifying window.

    how="contained": windows lying wholly inside the interval, weighted by their tokens: the
    exact mean over those tokens (bases of the interval outside them are not represented).
    how="overlap": every window overlapping the interval, weighted by its tokens times the
    fraction of its bases inside the interval (each window's mean stands in for its part
    inside; exact only where windows do not cross the interval's ends).

    `bed`: a table with chrom, start, end (e.g. from `pipeline.load.labels.read_bed`); its
    other columns (name, score, ...) are carried over. Intervals without a qualifying window
    are left out; rows carry their interval, never align them by position.
    """
    if how not in ("contained", "overlap"):
        raise ValueError(f"how must be 'contained' or 'overlap', got {how!r}")
    table, name, pooling = _load(source, embedding, storage_options)
    w_seq = np.asarray(table.column("seq_id").to_pylist(), dtype=object)
    w_strand = np.asarray(table.column("strand").to_pylist(), dtype=object)
    w_start = table.column("start").to_numpy()
    w_end = table.column("end").to_numpy()
    w_tokens = table.column("n_tokens").to_numpy().astype(np.float64)
    b_chrom = np.asarray(bed.column("chrom").to_pylist(), dtype=object)
    b_start = bed.column("start").to_numpy()
    b_end = bed.column("end").to_numpy()

    pair_rows, pair_iv, pair_w = [], [], []
    for chrom in np.unique(b_chrom):
        rows = np.flatnonzero(w_seq == chrom)
        if not rows.size:
            continue
        rows = rows[np.argsort(w_start[rows], kind="stable")]
        starts = w_start[rows]
        longest = int((w_end[rows] - starts).max())
        ivs = np.flatnonzero(b_chrom == chrom)
        # Candidates: windows starting before the interval ends, and late enough to reach it.
        lo = np.searchsorted(starts, b_start[ivs] - longest, side="left")
        hi = np.searchsorted(starts, b_end[ivs], side="left")
        counts = hi - lo
        owner = np.repeat(ivs, counts)
        cand = rows[np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts - lo, counts)]
        inside = np.minimum(w_end[cand], b_end[owner]) - np.maximum(w_start[cand], b_start[owner])
        length = w_end[cand] - w_start[cand]
        if how == "contained":
            keep = (w_start[cand] >= b_start[owner]) & (w_end[cand] <= b_end[owner])
            weight = w_tokens[cand]
        else:
            keep = inside > 0
            weight = w_tokens[cand] * inside / np.maximum(length, 1)
        pair_rows.append(cand[keep])
        pair_iv.append(owner[keep])
        pair_w.append(weight[keep])
    rows = np.concatenate(pair_rows) if pair_rows else np.zeros(0, np.int64)
    iv = np.concatenate(pair_iv) if pair_iv else np.zeros(0, np.int64)
    weight = np.concatenate(pair_w) if pair_w else np.zeros(0)
    # Groups: (interval, window strand), in BED order then strand.
    strands = sorted(set(w_strand[rows].tolist()))
    code = np.array([strands.index(s) for s in w_strand[rows]], dtype=np.int64)
    key = iv * max(len(strands), 1) + code
    uniq, group = np.unique(key, return_inverse=True)
    emb = to_numpy(table, embedding=name)[1]
    vectors = _reduce(emb, rows, group, weight, len(uniq), pooling)
    n_codes = max(len(strands), 1)
    out = bed.take(pa.array(uniq // n_codes))
    if "strand" in out.column_names:  # the interval's own strand, beside the windows'
        out = out.rename_columns([c if c != "strand" else "bed_strand" for c in out.column_names])
    tokens = np.bincount(group, weights=weight, minlength=len(uniq))
    return (
        out.append_column("strand", pa.array([strands[i] for i in uniq % n_codes], pa.string()))
        .append_column("n_windows", pa.array(np.bincount(group, minlength=len(uniq))))
        .append_column("n_tokens", pa.array(tokens))
        .append_column(name, embedding_array(vectors))
    )
