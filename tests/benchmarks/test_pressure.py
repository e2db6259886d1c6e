"""Object store pressure: tokenized input larger than a 75 MiB object store (Ray's minimum),
run to completion by the user's command with every process's memory sampled
(benchmarks/questions/pressure.py; the 8x figures: BENCHMARKS.md, "Faults and pressure")."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_tokenized_input_beyond_the_object_store_completes_with_bounded_memory(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmarks.questions.pressure", "--multiples", "1.1"]
    cmd += ["--cpus", "2"]
    cmd += ["--out", str(out), "--work", str(tmp_path / "work")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "tokenized / store |" in proc.stdout
    (r,) = json.loads((out / "pressure.json").read_text())["runs"]
    assert r["tokenized_vs_store"] > 1.0 and r["object_store_mib"] == 75
    assert "ray.object_store_memory=78643200" in r["command"]
    manifest = json.loads((tmp_path / "work" / "pressure-run-1.1-4" / "_manifest.json").read_text())
    c = manifest["counts"]
    # Every window once: the run's own check passed (a manifest exists) and the counts add up.
    assert c["windows"] == c["windows_embedded"] > 20_000 and c["tokens"] == r["tokens"]
    assert c["records"] == 4 and c["records_skipped"] == 0
    peak = r["peak_rss_mib"]
    # The driver and every Ray worker stay under 1 GiB (BENCHMARKS.md, "Faults and pressure":
    # at 8x the store the driver, engine and Ray's daemons stay flat; the task reading the file
    # grows with it).
    assert 0 < peak["driver"] < 1024 and 0 < peak["worker"] < 1024, peak
    assert peak["engine"] > 0 and peak["total"] >= peak["engine"]
