"""WriteStage: embedded windows -> one Parquet shard per batch, named by the chunks it holds."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.rows import DEFAULT_COLUMN, OUTPUT_COLUMNS, SORT_KEYS, WRITE_SCHEMA
from pipeline.stages import RaySpec, Stage
from pipeline.storage import failed_requests
from pipeline.window.windows import id_array, id_hash
from pipeline.write.layout import COMMITS, SHARD_PREFIX, SHARDS, OutputDir


def shard_name(chunk_ids: list[str]) -> str:
    """Deterministic in the set of chunks: a retried task rewrites the same shard."""
    h = hashlib.blake2b(digest_size=12)
    for cid in sorted(chunk_ids):
        h.update(cid.encode())
    return f"{SHARD_PREFIX}{h.hexdigest()}.parquet"


class WriteStage(Stage):
    adds = tuple(WRITE_SCHEMA.names)

    def __init__(
        self,
        output: str,
        fingerprint: str,
        metadata: dict[str, str],
        compression: str = "zstd",
        storage_options: dict[str, Any] | None = None,
        rows_per_shard: int | None = None,
        embeddings: tuple[str, ...] = (DEFAULT_COLUMN,),
        row_columns: tuple[str, ...] = OUTPUT_COLUMNS,
        sort_keys: list[tuple[str, str]] | None = None,
    ):
        self.output = output
        self.fingerprint = fingerprint
        self.metadata = metadata
        self.compression = compression
        self.storage_options = storage_options
        self.rows_per_shard = rows_per_shard
        self.embeddings = tuple(embeddings)
        self.needs = (*row_columns, *self.embeddings)
        self.sort_keys = sort_keys or SORT_KEYS

    def columns_out(self, columns_in: tuple[str, ...]) -> tuple[str, ...]:
        # One row per shard written (its commit) replaces the rows.
        return self.adds

    def ray_spec(self) -> RaySpec:
        # One shard per call.
        return RaySpec(batch_size=self.rows_per_shard)

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_columns(batch)
        retried = failed_requests()
        out = OutputDir(self.output, self.storage_options)
        table = batch.select(list(self.needs)).sort_by(self.sort_keys)
        table = table.replace_schema_metadata(
            {**self.metadata, "dnaembed.fingerprint": self.fingerprint}
        )
        name = shard_name(table.column("chunk_id").to_pylist())
        buf = io.BytesIO()
        pq.write_table(table, buf, compression=self.compression)
        data = buf.getvalue()
        commit = {
            "shard": name,
            "rows": table.num_rows,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "tokens": int(pc.sum(table.column("n_tokens")).as_py() or 0),
            # None where no column holds vectors (variants scored without their embeddings).
            "dim": next(
                (f.type.list_size for f in table.schema if pa.types.is_fixed_size_list(f.type)),
                None,
            ),
            "ids_hash": id_hash(id_array(table.column("chunk_id"))),
        }
        out.write_bytes(data, SHARDS, name)
        # The commit record follows the shard: a shard without one is not part of the run.
        out.write_json({**commit, "fingerprint": self.fingerprint}, COMMITS, f"{name}.json")
        del table, buf, data
        # Arrow's allocator keeps what a shard's columns held for the next one; a write task
        # runs shard after shard, so give it back.
        pa.default_memory_pool().release_unused()
        row = {**commit, "storage_retries": failed_requests() - retried}
        return pa.Table.from_pylist([row], schema=WRITE_SCHEMA)
