"""A real output read with the tools users already have: pandas and pyarrow on the output
directory, polars on its shards, DuckDB through `duckdb_view` (embeddings FLOAT[D]), and the
README's own snippet, run as written."""

from __future__ import annotations

import os
import re
import shutil

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.load.loader import load_embeddings, read_manifest, to_numpy
from pipeline.load.sql import duckdb_view
from pipeline.run import run
from tests.conftest import DEMO_GENOME, REPO, compose_config

pytestmark = pytest.mark.slow
DIM = 256


@pytest.fixture(scope="module")
def output(ray_session, tmp_path_factory):
    """A demo-genome run of 40 windows in 4 shards; an interrupted attempt before it left a
    shard whose commit record was lost (no complete output lists it)."""
    out = tmp_path_factory.mktemp("readers") / "out"
    args = [
        "model=tiny",
        f"input={DEMO_GENOME}",
        f"output={out}",
        "window.size=750",
        "output.rows_per_shard=10",
    ]
    run(compose_config(*args), echo=lambda *_: None)
    # An attempt's leftovers: a whole shard of other rows without its commit record, and a
    # write cut short. The manifest is gone, so the same command runs again to the end.
    first = sorted((out / "shards").iterdir())[0]
    stray = pq.read_table(first).slice(0, 3)
    pq.write_table(stray, out / "shards" / "part-000000000000000000000000.parquet")
    (out / "shards" / ".tmp-1f-part-x.parquet").write_bytes(b"PAR1")
    (out / "_manifest.json").unlink()
    run(compose_config(*args), echo=lambda *_: None)
    return out


def test_pandas_and_pyarrow_read_exactly_the_rows_from_the_output_directory(output):
    rows = read_manifest(str(output))["counts"]["windows"]
    assert rows == 40
    df = pd.read_parquet(output)
    assert len(df) == rows and df["chunk_id"].is_unique
    assert set(df["chunk_id"]) == set(load_embeddings(str(output)).column("chunk_id").to_pylist())
    assert pq.read_table(output).num_rows == rows
    assert sorted(p.name for p in output.iterdir()) == [
        "_commits",
        "_config.yaml",
        "_manifest.json",
        "_run.json",
        "shards",
    ]


def test_polars_keeps_the_fixed_size(output):
    frame = pl.read_parquet(output / "shards" / "*.parquet")
    assert frame.schema["embedding"] == pl.Array(pl.Float32, DIM)
    assert frame.height == 40


def test_duckdb_view_has_float_d_columns_and_vector_functions_take_them(output):
    con = duckdb_view(str(output))
    types = dict(con.sql("DESCRIBE dnaembed").fetchall()[i][:2] for i in range(8))
    assert types["embedding"] == f"FLOAT[{DIM}]"
    meta, x = to_numpy(str(output))
    ids = meta.column("chunk_id").to_pylist()
    got = con.sql(
        "SELECT a.chunk_id, b.chunk_id, array_cosine_similarity(a.embedding, b.embedding) "
        "FROM dnaembed a, dnaembed b WHERE a.start = 0 AND a.strand = '+'"
    ).fetchall()
    assert len(got) == 40
    for a, b, cos in got:
        va, vb = x[ids.index(a)], x[ids.index(b)]
        want = va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb))
        assert cos == pytest.approx(want, rel=1e-5)
    # The shards read directly: DuckDB sees a variable list, which a cast to FLOAT[D] fixes
    # (what the README says).
    raw = duckdb.sql(f"DESCRIBE SELECT embedding FROM '{output}/shards/*.parquet'").fetchall()
    assert raw[0][1] == "FLOAT[]"


def readme_block(heading: str) -> str:
    """The python block under a README heading."""
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readmes_snippet_for_other_tools_runs_as_written(output, tmp_path):
    shutil.copytree(output, tmp_path / "out")
    here = os.getcwd()
    os.chdir(tmp_path)
    scope: dict = {}
    try:
        exec(
            compile(readme_block("### With the tools you already have"), "README.md", "exec"), scope
        )
    finally:
        os.chdir(here)
    assert len(scope["df"]) == 40 and scope["frame"].schema["embedding"] == pl.Array(
        pl.Float32, DIM
    )
    near = scope["near"]
    assert list(near.columns) == ["seq_id", "start", "end", "cos"] and len(near) == 5
    assert near["cos"].is_monotonic_decreasing and near["cos"].max() <= 1.0 + 1e-6
    assert scope["cast"][0][0] == f"FLOAT[{DIM}]"
    assert isinstance(scope["x"], np.ndarray) and scope["x"].shape == (40, DIM)
    assert scope["x"].dtype == np.float32
    assert isinstance(pa.table(scope["df"]), pa.Table)
