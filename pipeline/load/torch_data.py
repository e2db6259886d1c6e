"""PyTorch datasets over a run's output: in memory, or streamed shard by shard (s3:// too).

Each item is a dict: the chosen embedding column (float32 tensor [D], under its own name:
`embedding` by default) plus the window's metadata (`chunk_id`, `seq_id`, `start`, `end`, ...),
so the default collate function batches them. A run with several embedding columns (layers,
poolings) needs `embedding=` to say which.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.load.loader import (
    embedding_columns,
    load_embeddings,
    pick_embedding,
    read_manifest,
    shard_paths,
    to_numpy,
)
from pipeline.rows import OUTPUT_COLUMNS
from pipeline.util import require
from pipeline.write.layout import OutputDir

TORCH_HINT = "pip install torch"
_torch_data = require("torch.utils.data", TORCH_HINT)


class EmbeddingDataset(_torch_data.Dataset):
    """All rows (or a filtered subset) in memory: random access, any sampler."""

    def __init__(
        self,
        uri: str,
        columns: list[str] | None = None,
        filter: Any = None,
        storage_options: dict[str, Any] | None = None,
        sort: bool = True,
        embedding: str | None = None,
    ):
        manifest = read_manifest(uri, storage_options)
        self.name = pick_embedding(embedding_columns(manifest), embedding)
        table = load_embeddings(
            uri, [*(columns or OUTPUT_COLUMNS), self.name], filter, storage_options, sort
        )
        meta, embeddings = to_numpy(table, embedding=self.name)
        self.embeddings = np.array(embeddings)  # writable: tensors may be changed in place
        # Plain lists and arrays: cheap to pickle into DataLoader worker processes.
        self.metadata = {
            name: meta.column(name).to_numpy(zero_copy_only=False) for name in meta.column_names
        }

    def __len__(self) -> int:
        return len(self.embeddings)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        item = {k: _py(v[i]) for k, v in self.metadata.items()}
        item[self.name] = torch.from_numpy(self.embeddings[i])
        return item


class EmbeddingIterableDataset(_torch_data.IterableDataset):
    """Streams the manifest's shards one row group at a time; memory stays at one batch.

    Shards are split between DataLoader workers (and between ranks with `rank`/`world_size`),
    so each row is read once per epoch. `shuffle_shards` reorders shards per epoch (seeded).
    """

    def __init__(
        self,
        uri: str,
        columns: list[str] | None = None,
        storage_options: dict[str, Any] | None = None,
        batch_rows: int = 1024,
        shuffle_shards: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        embedding: str | None = None,
    ):
        self.uri = uri
        manifest = read_manifest(uri, storage_options)
        self.name = pick_embedding(embedding_columns(manifest), embedding)
        self.columns = [*(columns or OUTPUT_COLUMNS), self.name]
        self.storage_options = storage_options
        self.paths = shard_paths(uri, storage_options)
        self.batch_rows = batch_rows
        self.shuffle_shards = shuffle_shards
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_paths(self) -> list[str]:
        paths = list(self.paths)
        if self.shuffle_shards:
            np.random.default_rng(self.seed + self.epoch).shuffle(paths)
        info = _torch_data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        step = self.world_size * workers
        return paths[self.rank * workers + worker :: step]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch

        fs = OutputDir(self.uri, self.storage_options).fs
        for path in self._my_paths():
            with fs.open(path, "rb") as f:
                for batch in pq.ParquetFile(f).iter_batches(self.batch_rows, columns=self.columns):
                    emb = batch.column(self.name)
                    vectors = emb.flatten().to_numpy(zero_copy_only=False).reshape(len(emb), -1)
                    meta = {n: batch.column(n).to_pylist() for n in self.columns if n != self.name}
                    for i in range(batch.num_rows):
                        item = {n: v[i] for n, v in meta.items()}
                        item[self.name] = torch.from_numpy(vectors[i].astype(np.float32))
                        yield item


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
