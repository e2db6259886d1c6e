"""The input checks' benchmark (benchmarks/questions/precheck.py) at a small size: it runs,
prints its table and writes its JSON (its figures: BENCHMARKS.md, "Input checks")."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_the_checks_benchmark_runs_at_a_small_size(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.questions.precheck", "--loci", "500"]
    cmd += ["--files", "20"]
    cmd += ["--contig-bases", "50000", "--work", str(tmp_path / "w"), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "checks s" in proc.stdout
    runs = json.loads((tmp_path / "precheck.json").read_text())["runs"]
    assert [r["kind"] for r in runs] == ["variants", "regions", "tiles"]
    assert all(r["plan_s"] > 0 and r["checks_s"] >= 0 for r in runs)
