"""`make demo` on a fresh clone, as CI lays it out (the venv is this one, already built)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.load.loader import load_embeddings, read_manifest
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_make_demo_on_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    # Uncommitted work is not in a clone: test the working tree's version of what CI will see.
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=REPO, capture_output=True, check=True)
    if diff.stdout:
        subprocess.run(["git", "apply", "-"], cwd=clone, input=diff.stdout, check=True)
    for path in subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split():
        (clone / path).parent.mkdir(parents=True, exist_ok=True)
        (clone / path).write_bytes((REPO / path).read_bytes())
    venv = Path(sys.executable).parent.parent
    env = {**os.environ, "PYTHONPATH": str(clone)}
    proc = subprocess.run(
        ["make", "demo", f"VENV={venv}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = clone / "outputs" / "demo"
    manifest = read_manifest(str(out))
    counts = manifest["counts"]
    assert counts["records"] == 25 and counts["records_skipped"] == 0
    assert load_embeddings(str(out)).num_rows == counts["windows"] > 0
    # The run's summary line, then the loader's summary.
    assert f"dnaembed: 25 records (0 skipped), {counts['windows']} windows" in proc.stdout
    assert "outputs/demo: model tiny, dim 256, " in proc.stdout
    assert "embeddings: embedding" in proc.stdout
    assert "NC_045512.2:0-2048(+)" in proc.stdout


def test_make_s3_demo(tmp_path):
    """`make s3-demo`'s script: the demo through a local S3 server, input and output."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.demo.s3"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dnaembed: 25 records (0 skipped)" in proc.stdout
    assert "s3://dnaembed-demo-embeddings/run/_manifest.json" in proc.stdout
    assert (tmp_path / "outputs" / "s3-demo" / "dnaembed.log").stat().st_size > 0
