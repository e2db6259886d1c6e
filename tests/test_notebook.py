"""The quickstart notebook, executed end to end on CPU as a user would run it."""

from __future__ import annotations

import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_quickstart_notebook_runs_and_plots(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    for cell in nb.cells:  # run from scratch, not from the committed outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    png = REPO / "outputs" / "notebook" / "pca.png"
    start = time.time()
    nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO / "notebooks")}},
    ).execute()
    elapsed = time.time() - start
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert errors == []
    assert png.exists() and png.stat().st_mtime >= start and png.stat().st_size > 10_000
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "display_data" and "image/png" in o.get("data", {})
    ]
    assert images, "the PCA plot is shown in the notebook"
    text = "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream"
    )
    assert "probe on tiny-model embeddings: accuracy" in text
    assert "dnaembed: 141 records (0 skipped), 227 windows" in text
    assert elapsed < 180, f"the notebook took {elapsed:.0f} s"
