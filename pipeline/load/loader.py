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
from pipeline.rows import DEFAULT_COLUMN, OUTPUT_COLUMNS
from pipeline.write.layout import MANIFEST, RUN, OutputDir, row_order


def read_manifest(uri: str, storage_options: dict[str, Any] | None = None) -> dict:
    out = OutputDir(uri, storage_options)
    name = out.name_of(MANIFEST)
    if not out.exists(name):
        if out.exists(out.name_of(RUN)):
            raise OutputError(
                f"{uri} has no manifest: the run is incomplete; re-run the same command to "
                "finish it"
            )
        raise OutputError(f"{uri} is not a dnaembed output (no {MANIFEST})")
    return out.read_json(name)


def embedding_columns(manifest: dict) -> list[str]:
    """The run's embedding columns, as its manifest lists them (runs before layers and
    poolings existed wrote one, `embedding`)."""
    return [e["column"] for e in manifest.get("embeddings", [{"column": DEFAULT_COLUMN}])]


def table_embeddings(table: pa.Table) -> list[str]:
    """The embedding columns of a loaded table (its fixed_size_list columns)."""
    return [f.name for f in table.schema if pa.types.is_fixed_size_list(f.type)]


def pick_embedding(available: list[str], embedding: str | None) -> str:
    """The embedding column to use: the one named, or the only one there is."""
    if embedding is None:
        if len(available) == 1:
            return available[0]
        raise ValueError(
            f"this run has several embedding columns {available}: choose one with embedding="
        )
    if embedding not in available:
        raise ValueError(f"no embedding column {embedding!r}; this run has {available}")
    return embedding


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
    """Rows of a complete run as one pyarrow Table: the window columns and each embedding
    column (fixed_size_list<float32>[D]; the manifest's `embeddings` lists them).

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
    order = row_order(manifest)
    if sort and read is not None:
        read = [*read, *(k for k, _ in order if k not in read)]
    table = dataset.to_table(columns=read, filter=expr)
    if sort:
        table = table.sort_by(order)
        if columns:
            table = table.select(list(columns))
    return table


def to_numpy(
    source: str | pa.Table,
    columns: list[str] | None = None,
    filter: Any = None,
    storage_options: dict[str, Any] | None = None,
    sort: bool = False,
    embedding: str | None = None,
) -> tuple[pa.Table, np.ndarray]:
    """(metadata table, float32 array [N, D]) from an output URI or a loaded table.

    `embedding`: which embedding column becomes the array (needed when the run has several,
    e.g. `emb_l6_mean`); `columns`: the metadata columns to keep. The array is built from the
    Arrow buffer in one step, with no per-row Python.
    """
    if isinstance(source, pa.Table):
        available = table_embeddings(source)
        name = pick_embedding(available, embedding)
        table = source.drop_columns([c for c in available if c != name])
    else:
        name = pick_embedding(embedding_columns(read_manifest(source, storage_options)), embedding)
        wanted = [*(columns or OUTPUT_COLUMNS), name]
        table = load_embeddings(source, wanted, filter, storage_options, sort)
    emb = table.column(name).combine_chunks()
    dim = emb.type.list_size
    array = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return table.drop_columns([name]), array.reshape(len(emb), dim)
