"""A run's rows as a DuckDB view, embedding columns typed FLOAT[D].

DuckDB reads every Parquet list as a variable-length list (FLOAT[]), even one it wrote from a
FLOAT[D] column: Parquet has no fixed-size list type, and DuckDB's reader ignores the Arrow
schema that pyarrow stores beside it. Through Arrow, DuckDB keeps the size. So the view scans
the manifest's shards as a pyarrow dataset (lazily, filters and projections pushed down; any
fsspec filesystem, s3:// included) and array functions such as array_cosine_similarity take
its columns as they are.
"""

from __future__ import annotations

from typing import Any

import pyarrow.dataset as pads

from pipeline.load.loader import read_manifest
from pipeline.write.layout import OutputDir


def duckdb_view(
    uri: str,
    con: Any = None,
    name: str = "dnaembed",
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """Register the rows of the complete run at `uri` as view `name` of the DuckDB connection
    `con` (a new in-memory one by default); returns the connection.

        con = duckdb_view("out/")
        con.sql("SELECT a.chunk_id, array_cosine_similarity(a.embedding, b.embedding) ...")
    """
    import duckdb

    manifest = read_manifest(uri, storage_options)
    out = OutputDir(uri, storage_options)
    paths = [out.file(s["path"]) for s in manifest["shards"]]
    con = duckdb.connect() if con is None else con
    con.register(name, pads.dataset(paths, format="parquet", filesystem=out.fs))
    return con
