"""Ray jobs against a real cluster started on loopback (`ray start --head`), via our CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.jobs import entrypoint, runtime_env, start_local_head, stop_local_head
from pipeline.load.loader import load_embeddings, read_manifest
from tests.conftest import REPO

pytestmark = pytest.mark.slow
VENV_BIN = str(Path(sys.executable).parent)


@pytest.fixture(scope="module")
def cluster():
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a limit
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    proc, address = start_local_head(temp, num_cpus=2, env=env)
    yield address
    stop_local_head(proc)
    shutil.rmtree(temp, ignore_errors=True)


def jobs(address, *args, timeout=600):
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "pipeline.jobs",
        *args[:1],
        *(["--address", address] if args else []),
        *args[1:],
    ]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_entrypoint_and_runtime_env():
    assert entrypoint(["input=a b.fa", "model=tiny"]) == (
        "python -m pipeline ray=cluster 'input=a b.fa' model=tiny"
    )
    env = runtime_env(REPO / "jobs" / "runtime_env.yaml", None)
    assert env["working_dir"] == str(Path.cwd())
    assert ".venv/" in env["excludes"] and env["env_vars"]["HF_HUB_OFFLINE"] == "1"


def test_demo_as_a_job_with_overrides(cluster, tmp_path):
    out = tmp_path / "job-out"
    # A relative input path: it resolves in the job's copy of this checkout (working_dir).
    proc = jobs(
        cluster,
        "submit",
        "--wait",
        "--submission-id",
        "dnaembed-demo-job",
        "--",
        "model=tiny",
        "input=pipeline/demo/reads.fastq.gz",
        f"output={out}",
        "window.size=1024",
        "output.rows_per_shard=9",
        "ray.progress_bars=false",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "job dnaembed-demo-job: SUCCEEDED" in proc.stdout
    manifest = read_manifest(str(out))
    assert manifest["counts"]["records"] == 24
    assert load_embeddings(str(out)).num_rows == manifest["counts"]["windows"]
    assert manifest["fingerprint_fields"]["window"]["size"] == 1024  # the override arrived
    logs = jobs(cluster, "logs", "dnaembed-demo-job")
    assert logs.returncode == 0
    # The driver reserved no GPU, and said how the engines were placed.
    assert "1 engine(s) x (0 GPU, 1 CPU) on cpu" in logs.stdout
    assert "dnaembed: 24 records (0 skipped)" in logs.stdout
    status = jobs(cluster, "status", "dnaembed-demo-job")
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    listed = jobs(cluster, "list")
    assert "dnaembed-demo-job\tSUCCEEDED" in listed.stdout


def test_failed_job_is_reported_with_its_error(cluster, tmp_path):
    proc = jobs(
        cluster,
        "submit",
        "--wait",
        "--submission-id",
        "dnaembed-bad-input",
        "--",
        "model=tiny",
        "input=missing/genome.fa",
        f"output={tmp_path / 'o'}",
    )
    assert proc.returncode == 1
    assert "job dnaembed-bad-input: FAILED" in proc.stdout
    logs = jobs(cluster, "logs", "dnaembed-bad-input").stdout
    assert "dnaembed: error: input not found: missing/genome.fa" in logs
    assert jobs(cluster, "status", "dnaembed-bad-input").returncode == 1


def test_impossible_placement_fails_fast(cluster, tmp_path):
    start = time.monotonic()
    proc = jobs(
        cluster,
        "submit",
        "--wait",
        "--",
        "model=tiny",
        "input=pipeline/demo/reads.fastq.gz",
        f"output={tmp_path / 'o'}",
        "embed.device=cuda",
        "embed.tensor_parallel_size=2",
    )
    assert proc.returncode == 1
    assert "can host one embed actor: it needs 2 GPU(s)" in proc.stdout
    assert time.monotonic() - start < 90


def test_bad_override_is_refused_before_submission(cluster):
    proc = jobs(cluster, "submit", "--", "model=tiny", "input=x", "output=y", "window.last=pad")
    assert proc.returncode == 2
    assert "window.last=pad: Invalid value 'pad', expected one of [keep, shift" in proc.stderr
    assert "submitted" not in proc.stdout


def test_stop(cluster, tmp_path):
    proc = jobs(
        cluster,
        "submit",
        "--submission-id",
        "dnaembed-to-stop",
        "--",
        "model=tiny",
        "input=pipeline/demo/NC_045512.2.fasta",
        f"output={tmp_path / 'o'}",
    )
    assert proc.returncode == 0 and "submitted dnaembed-to-stop" in proc.stdout
    assert jobs(cluster, "stop", "dnaembed-to-stop").returncode == 0
    deadline = time.monotonic() + 60
    while "STOPPED" not in jobs(cluster, "status", "dnaembed-to-stop").stdout:
        assert time.monotonic() < deadline
        time.sleep(2)
    assert not (tmp_path / "o" / "_manifest.json").exists()
