"""`dnaembed` as Hydra users run it: a -m sweep, -v, progress lines (real runs, CPU)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from pipeline.load.loader import load_embeddings, read_manifest
from tests.conftest import REPO

pytestmark = pytest.mark.slow

PROGRESS = re.compile(r"^dnaembed: [\d,]+/(\?|[\d,]+) windows")


def test_a_two_job_sweep_gives_two_complete_outputs(tmp_path):
    reads = REPO / "pipeline" / "demo" / "reads.fastq.gz"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "-m",
            "-v",
            "model=tiny",
            f"input={reads}",
            "output=out/w${window.size}",
            "window.size=512,1024",
            "log.interval_s=2",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for size in (512, 1024):
        out = str(tmp_path / "out" / f"w{size}")
        manifest = read_manifest(out)
        assert manifest["fingerprint_fields"]["window"]["size"] == size
        assert manifest["counts"]["records"] == 24
        assert load_embeddings(out).num_rows == manifest["counts"]["windows"]
    # Hydra's record of the sweep: one directory per job, each with its log file.
    (sweep,) = (tmp_path / "multirun").glob("*/*")
    assert "window.size=512,1024" in (sweep / "multirun.yaml").read_text()
    for job in ("0", "1"):
        assert (sweep / job / ".hydra" / "overrides.yaml").exists()
        assert "resolved config" in (sweep / job / "dnaembed.log").read_text()
    assert "[HYDRA] Launching 2 jobs locally" in proc.stderr
    summaries = [x for x in proc.stdout.splitlines() if x.startswith("dnaembed: 24 records")]
    assert len(summaries) == 2
    # Progress lines while the engines start and work (not a terminal here).
    assert any(PROGRESS.match(x) for x in proc.stdout.splitlines()), proc.stdout
    # -v: the libraries' own lines on the terminal too (Ray's, and the engine's through Ray).
    assert "Started a local Ray instance" in proc.stderr
    assert "dnaembed.workers" in proc.stderr


def test_a_sweep_with_an_unknown_key_fails_before_its_first_job(tmp_path):
    reads = REPO / "pipeline" / "demo" / "reads.fastq.gz"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "-m",
            "model=tiny",
            f"input={reads}",
            "output=out/w${window.size}",
            "window.size=512,1024",
            "+embed.layer=[1]",  # Hydra's own advice for `embed.layer=[1]`
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "dnaembed: error: unknown key embed.layer (did you mean embed.layers?)"
    assert "Launching" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no output, no multirun/ record of a sweep
