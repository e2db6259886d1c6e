"""Load a run's embeddings: only what its manifest lists, so partial runs never leak in."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import OutputError
from pipeline.write.layout import MANIFEST, RUN, OutputDir


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


def load_embeddings(
    uri: str,
    columns: list[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> pa.Table:
    """All rows of a complete run as one pyarrow Table (`embedding` is fixed_size_list<float32>)."""
    manifest = read_manifest(uri, storage_options)
    out = OutputDir(uri, storage_options)
    tables = []
    for shard in manifest["shards"]:
        table = pq.read_table(out.file(shard["path"]), columns=columns, filesystem=out.fs)
        if table.num_rows != shard["rows"]:
            raise OutputError(
                f"{shard['path']} has {table.num_rows} rows, the manifest says {shard['rows']}"
            )
        tables.append(table)
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables)
