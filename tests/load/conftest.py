from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from pipeline.rows import parse_column
from pipeline.write.layout import MANIFEST, OutputDir
from pipeline.write.manifest import build_manifest, claim_output
from pipeline.write.stage import WriteStage

DIM = 8


def windows_table(n: int = 60, seed: int = 0) -> pa.Table:
    """n windows of 100 bases, alternating between two records, with random embeddings."""
    rng = np.random.default_rng(seed)
    seq = ["chrA" if i % 2 == 0 else "chrB" for i in range(n)]
    start = [(i // 2) * 100 for i in range(n)]
    emb = rng.standard_normal((n, DIM)).astype(np.float32)
    return pa.table(
        {
            "chunk_id": [
                hashlib.blake2b(str(i).encode(), digest_size=16).hexdigest() for i in range(n)
            ],
            "source": ["/data/x.fa"] * n,
            "seq_id": seq,
            "start": pa.array(start, pa.int64()),
            "end": pa.array([s + 100 for s in start], pa.int64()),
            "strand": ["+"] * n,
            "n_tokens": pa.array([100] * n, pa.int32()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), DIM),
        }
    )


def write_run(
    uri: str, table: pa.Table, rows_per_shard: int = 16, storage_options: dict | None = None
) -> None:
    out = OutputDir(uri, storage_options)
    claim_output(out, "fp", {}, "error")
    columns = [f.name for f in table.schema if pa.types.is_fixed_size_list(f.type)]
    stage = WriteStage(uri, "fp", {}, storage_options=storage_options, embeddings=columns)
    commits = [
        stage(table.slice(i, rows_per_shard)).to_pylist()[0]
        for i in range(0, table.num_rows, rows_per_shard)
    ]
    out.write_json(
        build_manifest(
            fingerprint="fp",
            fields={},
            model={},
            commits=commits,
            stats={"windows": table.num_rows},
            elapsed_s=0,
            embeddings=[
                dict(zip(("layer", "pooling"), parse_column(c), strict=True), column=c)
                for c in columns
            ],
            strands="forward",
        ),
        MANIFEST,
    )


@pytest.fixture
def run_dir(tmp_path):
    table = windows_table()
    write_run(str(tmp_path / "run"), table)
    return str(tmp_path / "run"), table
