from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline import EmbeddingDataset, EmbeddingIterableDataset, region
from tests.load.conftest import DIM, windows_table, write_run


def embeddings_by_id(table):
    return {r["chunk_id"]: np.asarray(r["embedding"], np.float32) for r in table.to_pylist()}


def test_map_style_dataset_with_workers(run_dir):
    uri, table = run_dir
    ds = EmbeddingDataset(uri)
    assert len(ds) == table.num_rows
    item = ds[0]
    assert item["embedding"].dtype == torch.float32 and item["embedding"].shape == (DIM,)
    assert isinstance(item["start"], int) and isinstance(item["seq_id"], str)
    want = embeddings_by_id(table)
    seen = {}
    for batch in DataLoader(
        ds, batch_size=7, num_workers=2, shuffle=True, generator=torch.Generator().manual_seed(0)
    ):
        assert batch["embedding"].shape[1:] == (DIM,)
        for cid, vec in zip(batch["chunk_id"], batch["embedding"], strict=True):
            seen[cid] = vec.numpy()
    assert seen.keys() == want.keys()
    assert all(np.array_equal(seen[c], want[c]) for c in want)
    assert len(EmbeddingDataset(uri, filter=region("chrB"))) == table.num_rows // 2


def test_iterable_dataset_reads_each_row_once_across_workers_and_ranks(run_dir):
    uri, table = run_dir
    want = embeddings_by_id(table)
    ds = EmbeddingIterableDataset(uri, batch_rows=5)
    got = [cid for b in DataLoader(ds, batch_size=4, num_workers=3) for cid in b["chunk_id"]]
    assert sorted(got) == sorted(want)
    ranks = [
        [r["chunk_id"] for r in EmbeddingIterableDataset(uri, rank=k, world_size=2)] for k in (0, 1)
    ]
    assert not set(ranks[0]) & set(ranks[1])
    assert sorted(ranks[0] + ranks[1]) == sorted(want)
    shuffled = EmbeddingIterableDataset(uri, shuffle_shards=True, seed=3)
    first = [r["chunk_id"] for r in shuffled]
    shuffled.set_epoch(1)
    assert sorted(first) == sorted(want) and first == [
        r["chunk_id"] for r in EmbeddingIterableDataset(uri, shuffle_shards=True, seed=3)
    ]


def test_iterable_dataset_streams_from_s3(s3, s3_endpoint):
    table = windows_table(40, seed=4)
    opts = {"s3": {"endpoint_url": s3_endpoint}}
    uri = f"s3://out-{s3.name}/run"
    write_run(uri, table, rows_per_shard=9, storage_options=opts)
    ds = EmbeddingIterableDataset(uri, storage_options=opts, batch_rows=4)
    want = embeddings_by_id(table)
    got = {
        b["chunk_id"][i]: b["embedding"][i].numpy()
        for b in DataLoader(ds, batch_size=6, num_workers=2)
        for i in range(len(b["chunk_id"]))
    }
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[c], want[c]) for c in want)
