from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline import load_embeddings, region, shard_paths, to_numpy
from tests.load.conftest import DIM


def by_id(table: pa.Table) -> dict[str, dict]:
    return {r["chunk_id"]: r for r in table.to_pylist()}


def test_columns_and_sorting(run_dir):
    uri, table = run_dir
    got = load_embeddings(uri, columns=["seq_id", "start"], sort=True)
    assert got.column_names == ["seq_id", "start"]
    assert got.num_rows == table.num_rows
    keys = list(zip(got.column("seq_id").to_pylist(), got.column("start").to_pylist(), strict=True))
    assert keys == sorted(keys)


def test_filters_push_down(run_dir):
    uri, table = run_dir
    dnf = load_embeddings(uri, filter=[("seq_id", "=", "chrB"), ("start", ">=", 1000)])
    want = table.filter((pc.field("seq_id") == "chrB") & (pc.field("start") >= 1000))
    assert by_id(dnf) == by_id(want)
    # Windows overlapping [250, 450) of chrA: [200,300), [300,400), [400,500).
    got = load_embeddings(
        uri, columns=["seq_id", "start", "end"], filter=region("chrA", 250, 450), sort=True
    )
    assert got.column("start").to_pylist() == [200, 300, 400]
    assert load_embeddings(uri, filter=region("chrZ")).num_rows == 0


def test_to_numpy_matches_rows(run_dir):
    uri, table = run_dir
    meta, emb = to_numpy(uri, sort=True)
    assert emb.dtype == np.float32 and emb.shape == (table.num_rows, DIM)
    assert "embedding" not in meta.column_names and meta.num_rows == table.num_rows
    want = by_id(table)
    for cid, vec in zip(meta.column("chunk_id").to_pylist(), emb, strict=True):
        assert np.array_equal(vec, np.asarray(want[cid]["embedding"], np.float32))
    sub_meta, sub = to_numpy(uri, filter=region("chrA", 0, 300))
    assert sub.shape == (3, DIM) and set(sub_meta.column("seq_id").to_pylist()) == {"chrA"}
    # A loaded table works too, sliced or not.
    _, e2 = to_numpy(table.slice(5, 7))
    assert e2.shape == (7, DIM)
    assert np.array_equal(e2[0], np.asarray(table.column("embedding")[5].as_py(), np.float32))


def test_hugging_face_datasets_reads_the_shards_as_they_are(run_dir):
    datasets = pytest.importorskip("datasets")
    uri, table = run_dir
    ds = datasets.load_dataset("parquet", data_files=shard_paths(uri), split="train")
    assert ds.num_rows == table.num_rows
    row = ds[0]
    assert len(row["embedding"]) == DIM and isinstance(row["embedding"][0], float)
    assert {"chunk_id", "seq_id", "start", "end", "strand"} <= set(ds.column_names)
    assert set(ds["chunk_id"]) == set(table.column("chunk_id").to_pylist())
