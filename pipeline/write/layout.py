"""Where things live in an output directory. Every reader and writer goes through here.

<output>/manifest.json      written last: the run is complete iff it exists
<output>/run.json           written first: fingerprint of the config that owns this output
<output>/config.yaml        the resolved config
<output>/shards/part-*.parquet
<output>/commits/part-*.parquet.json   one per shard, written right after it
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.storage import get_fs, join, write_atomic

# Every output row: these columns, then one fixed_size_list<float32>[D] column per embedding
# (`embedding` by default; the manifest lists them).
OUTPUT_COLUMNS = ("chunk_id", "source", "seq_id", "start", "end", "strand", "n_tokens")
# Rows within a shard, and a sorted load, follow genomic order.
SORT_KEYS = [(k, "ascending") for k in ("source", "seq_id", "start", "end", "strand")]
# The same per kind of input (manifest "input"); the chunk id breaks ties (a BED file may
# list one interval twice, a VCF one allele twice).
ROW_ORDER = {
    "tiles": SORT_KEYS,
    "regions": [*SORT_KEYS, ("chunk_id", "ascending")],
    "variants": [
        (k, "ascending") for k in ("source", "seq_id", "pos", "ref", "alt", "strand", "chunk_id")
    ],
}


def row_order(manifest: dict) -> list[tuple[str, str]]:
    """How a run's rows are ordered (runs before regions and variants tiled files)."""
    return ROW_ORDER[manifest.get("input", "tiles")]


def embedding_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """[rows, D] vectors as an embedding column: fixed_size_list<float32>[D]."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


MANIFEST = "manifest.json"
RUN = "run.json"
CONFIG = "config.yaml"
SHARDS = "shards"
COMMITS = "commits"
SHARD_PREFIX = "part-"  # a committed name; writes in flight are `.tmp-*`
FORMAT = "dnaembed/1"


@dataclass
class OutputDir:
    uri: str
    storage_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.fs, self.path = get_fs(self.uri, self.storage_options)

    def file(self, *parts: str) -> str:
        return join(self.path, *parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.file(*parts))

    def read_json(self, *parts: str) -> dict:
        with self.fs.open(self.file(*parts), "rb") as f:
            return json.loads(f.read())

    def write_json(self, obj: Any, *parts: str) -> None:
        write_atomic(self.fs, self.file(*parts), json.dumps(obj, indent=2, sort_keys=True).encode())

    def write_bytes(self, data: bytes, *parts: str) -> None:
        write_atomic(self.fs, self.file(*parts), data)

    def remove(self) -> None:
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)
