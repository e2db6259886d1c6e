from __future__ import annotations

import shutil

import pytest

from pipeline.errors import OutputError
from pipeline.load.loader import load_embeddings, read_manifest
from pipeline.write.layout import MANIFEST, OutputDir
from pipeline.write.stage import WriteStage
from tests.load.conftest import write_run
from tests.write.test_stage import embedded


def finished_run(tmp_path):
    """Five rows in two shards (3 + 2), written and committed as a run does."""
    write_run(str(tmp_path), embedded(5, seed=1), rows_per_shard=3)
    return OutputDir(str(tmp_path))


def test_loads_what_the_manifest_lists(tmp_path):
    finished_run(tmp_path)
    table = load_embeddings(str(tmp_path))
    assert table.num_rows == 5
    assert sorted(table.column("chunk_id").to_pylist()) == sorted(
        embedded(5).column("chunk_id").to_pylist()
    )
    assert load_embeddings(str(tmp_path), columns=["chunk_id"]).column_names == ["chunk_id"]


def test_stray_shards_are_not_loaded(tmp_path):
    finished_run(tmp_path)
    # A shard left by an interrupted attempt, never listed in the manifest.
    WriteStage(str(tmp_path), "fp", {})(embedded(4, seed=9))
    assert load_embeddings(str(tmp_path)).num_rows == 5


def test_incomplete_and_foreign_outputs_are_refused(tmp_path):
    out = finished_run(tmp_path / "run")
    (tmp_path / "run" / MANIFEST).unlink()
    with pytest.raises(OutputError, match="no manifest: the run is incomplete"):
        load_embeddings(out.uri)
    with pytest.raises(OutputError, match="not a dnaembed output"):
        load_embeddings(str(tmp_path / "elsewhere"))


def test_shard_that_disagrees_with_the_manifest(tmp_path):
    out = finished_run(tmp_path)
    manifest = out.read_json(MANIFEST)
    a, b = (tmp_path / s["path"] for s in manifest["shards"])
    shutil.copy(a, b)
    with pytest.raises(OutputError, match="rows, the manifest says"):
        load_embeddings(str(tmp_path))


def test_an_output_of_the_earlier_layout_loads_as_it_is(run_dir):
    """Outputs written before the bookkeeping took its leading `_` load unchanged."""
    import os

    uri, table = run_dir
    for new, old in (("_manifest.json", "manifest.json"), ("_run.json", "run.json")):
        os.rename(os.path.join(uri, new), os.path.join(uri, old))
    os.rename(os.path.join(uri, "_commits"), os.path.join(uri, "commits"))
    assert read_manifest(uri)["counts"]["windows"] == table.num_rows
    assert load_embeddings(uri).num_rows == table.num_rows
    os.remove(os.path.join(uri, "manifest.json"))
    with pytest.raises(OutputError, match="the run is incomplete"):
        read_manifest(uri)
