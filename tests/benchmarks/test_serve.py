"""benchmarks/questions/serving.py on CPU: the service measured from outside, with the tiny
model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.questions.serving import Sequences

REPO = Path(__file__).resolve().parents[2]


def test_every_request_gets_sequences_of_its_own():
    seqs = Sequences(64)
    a, b = seqs(3), seqs(2)
    assert len(set(a + b)) == 5 and all(len(s) == 64 and set(s) <= set("ACGT") for s in a + b)
    assert Sequences(64)(1) == a[:1]  # seeded: the same run twice sends the same bases


@pytest.mark.slow
def test_cpu_smoke_run(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmarks.questions.serving", "--device", "cpu",
           "--model", "tiny", "--smoke", "--servers", "dnaembed", "--port", "18377",
           "--work", str(tmp_path / "work"), "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dnaembed-serve |" in proc.stdout
    report = json.loads((out / "serve.json").read_text())
    (served,) = report["results"]
    assert served["exit_code"] == 0 and served["dimension"] == 256
    assert served["prompt_tokens_per_request"] == 512  # one token per base, no specials
    assert [x["clients"] for x in served["load"]] == [1, 4]
    assert all(x["requests"] > 0 and x["p99_ms"] >= x["p50_ms"] for x in served["load"])
    assert served["stop_s"] < 60 and report["versions"]["ray"]
