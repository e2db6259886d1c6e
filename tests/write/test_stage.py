from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.write.stage import WriteStage, shard_name


def embedded(n: int, dim: int = 4, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    return pa.table(
        {
            "chunk_id": [
                hashlib.blake2b(str(i).encode(), digest_size=16).hexdigest() for i in range(n)
            ],
            "source": ["s"] * n,
            "seq_id": [f"r{i % 3}" for i in range(n)],
            "start": pa.array([i * 10 for i in range(n)], pa.int64()),
            "end": pa.array([i * 10 + 10 for i in range(n)], pa.int64()),
            "strand": ["+"] * n,
            "n_tokens": pa.array([10] * n, pa.int32()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim),
        }
    )


def test_shard_is_whole_named_by_content_and_committed(tmp_path):
    stage = WriteStage(str(tmp_path), "fp", {"dnaembed.model": "tiny"})
    table = embedded(7)
    (commit,) = stage(table).to_pylist()
    assert commit["shard"] == shard_name(table.column("chunk_id").to_pylist())
    path = tmp_path / "shards" / commit["shard"]
    data = path.read_bytes()
    assert commit["sha256"] == hashlib.sha256(data).hexdigest()
    assert commit["rows"] == 7 and commit["tokens"] == 70 and commit["dim"] == 4
    record = json.loads((tmp_path / "_commits" / f"{commit['shard']}.json").read_text())
    assert record["fingerprint"] == "fp" and record["sha256"] == commit["sha256"]
    back = pq.read_table(path)
    assert back.schema.field("embedding").type == pa.list_(pa.float32(), 4)
    assert back.schema.metadata[b"dnaembed.fingerprint"] == b"fp"
    # Sorted by coordinates; same set of rows.
    assert back.column("seq_id").to_pylist() == sorted(back.column("seq_id").to_pylist())
    assert sorted(back.column("chunk_id").to_pylist()) == sorted(
        table.column("chunk_id").to_pylist()
    )
    assert not [p for p in (tmp_path / "shards").iterdir() if p.name.startswith(".tmp")]


def test_same_rows_any_order_give_the_same_bytes(tmp_path):
    stage = WriteStage(str(tmp_path), "fp", {})
    table = embedded(9)
    a = stage(table).to_pylist()[0]
    b = stage(table.take(np.random.default_rng(1).permutation(9))).to_pylist()[0]
    assert a == b
    assert len(list((tmp_path / "shards").iterdir())) == 1


def test_missing_column_is_named(tmp_path):
    with pytest.raises(KeyError, match="embedding"):
        WriteStage(str(tmp_path), "fp", {})(embedded(2).drop_columns(["embedding"]))
