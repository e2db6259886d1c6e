"""Load a run's embeddings: only what its manifest lists, so partial runs never leak in.

Filters are pushed down to Parquet (row-group statistics), so loading one chromosome or one
region of a large run reads little more than that.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline.errors import OutputError
from pipeline.write.layout import MANIFEST, OUTPUT_COLUMNS, RUN, SORT_KEYS, OutputDir


def read_manifest(uri: str, storage_options: dict[str, Any] | None = None) -> dict:
    out = OutputDir(uri, storage_options)
    if not out.exists(MANIFEST):
        if out.exists(RUN):
            raise OutputError(
                f"{uri} has no manifest: the run is incomplete; re-run the same command to "
                "finish it"
            )
        raise OutputError(f"{uri} is not a dnaembed output (no {MANIFEST})")
    return out.read_json(MANIFEST)


def shard_paths(uri: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Full paths of the shards the manifest lists, in its order."""
    manifest = read_manifest(uri, storage_options)
    out = OutputDir(uri, storage_options)
    return [out.file(s["path"]) for s in manifest["shards"]]


def region(seq_id: str, start: int | None = None, end: int | None = None) -> pc.Expression:
    """Windows of `seq_id` overlapping [start, end) (0-based, half-open, as BED)."""
    expr = pc.field("seq_id") == seq_id
    if end is not None:
        expr &= pc.field("start") < end
    if start is not None:
        expr &= pc.field("end") > start
    return expr


def _expression(filter: Any) -> pc.Expression | None:
    if filter is None or isinstance(filter, pc.Expression):
        return filter
    return pq.filters_to_expression(filter)  # DNF: [("seq_id", "=", "chr1"), ...]


def load_embeddings(
    uri: str,
    columns: list[str] | None = None,
    filter: Any = None,
    storage_options: dict[str, Any] | None = None,
    sort: bool = False,
) -> pa.Table:
    """Rows of a complete run as one pyarrow Table (`embedding`: fixed_size_list<float32>[D]).

    `columns`: a subset to read. `filter`: a pyarrow expression (see `region`) or DNF tuples
    as pyarrow.parquet takes them, e.g. [("seq_id", "=", "chr1"), ("start", ">=", 10_000)].
    `sort`: order rows by source, seq_id, start, end, strand (otherwise shard order).
    """
    manifest = read_manifest(uri, storage_options)
    out = OutputDir(uri, storage_options)
    paths = [out.file(s["path"]) for s in manifest["shards"]]
    if not paths:
        return pa.table({})
    dataset = pads.dataset(paths, format="parquet", filesystem=out.fs)
    expr = _expression(filter)
    if expr is None:
        # Unfiltered, every listed shard must hold what the manifest says it holds.
        for path, shard in zip(paths, manifest["shards"], strict=True):
            rows = pq.ParquetFile(path, filesystem=out.fs).metadata.num_rows
            if rows != shard["rows"]:
                raise OutputError(
                    f"{shard['path']} has {rows} rows, the manifest says {shard['rows']}"
                )
    read = list(columns) if columns else None
    if sort and read is not None:
        read = [*read, *(k for k, _ in SORT_KEYS if k not in read)]
    table = dataset.to_table(columns=read, filter=expr)
    if sort:
        table = table.sort_by(SORT_KEYS)
        if columns:
            table = table.select(list(columns))
    return table


def to_numpy(
    source: str | pa.Table,
    columns: list[str] | None = None,
    filter: Any = None,
    storage_options: dict[str, Any] | None = None,
    sort: bool = False,
) -> tuple[pa.Table, np.ndarray]:
    """(metadata table, float32 array [N, D]) from an output URI or a loaded table.

    The array is built from the Arrow buffer in one step, with no per-row Python.
    """
    if isinstance(source, pa.Table):
        table = source
    else:
        wanted = [*(columns or OUTPUT_COLUMNS), "embedding"]
        table = load_embeddings(source, wanted, filter, storage_options, sort)
    emb = table.column("embedding").combine_chunks()
    dim = emb.type.list_size
    array = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return table.drop_columns(["embedding"]), array.reshape(len(emb), dim)
