"""Warm engines: batch runs on a running `dnaembed-serve` deployment's engines
(embed.engines=serve:NAME) on a two-node Ray cluster, against the same runs with their own
engines: two runs and HTTP clients at once, a head the deployment lacks refused before any
read, and the deployment stopped midway (the run fails naming it; its own engines resume)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
from tests.serve.test_server import free_port

pytestmark = pytest.mark.slow

NAME = "warm"
# The deployment computes layers 1 and 2 (tiny has two), mean and max; the runs ask for
# parts of that.
SERVED = ["model=tiny", "embed.layers=[1,-1]", "embed.poolings=[mean,max]"]
TILES = [
    "model=tiny",
    "window.size=512",
    "window.stride=128",
    "window.reverse_complement=true",
    "embed.max_batch_tokens=4096",
    "output.rows_per_shard=16",
    "log.progress=lines",
    "log.interval_s=1",
]
# Small packs and shards: a run long enough to stop its deployment midway.
# (the same windows, so the same fingerprint as TILES).
LONG = [*TILES[:-2], "embed.max_batch_tokens=1024", "output.rows_per_shard=8"]
REGIONS = ["model=tiny", "embed.layers=[1]", "embed.poolings=[max]", "window.flank=100"]
SMALL = ["ray.cpus_per_task=0.5", "embed.cpus_per_actor=0.25"]


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**out, "PYTHONPATH": str(REPO), **extra}


def dnaembed(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout_s: float = 600) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout_s)
    assert proc.returncode == 0, (out + err)[-4000:]
    return out, err


def rows(out: Path) -> dict[str, dict]:
    """{chunk id: row} of an output; fails if an id appears twice."""
    table = pq.read_table(out / "shards")
    got = {r["chunk_id"]: r for r in table.to_pylist()}
    assert len(got) == table.num_rows, "a chunk id appears twice"
    return got


def assert_same_output(out: Path, own: Path) -> None:
    """The same rows (by id) as the run with its own engines, its fingerprint and model key."""
    a, b = rows(out), rows(own)
    assert a.keys() == b.keys() and a
    vectors = [k for k, v in next(iter(b.values())).items() if isinstance(v, list)]
    assert vectors
    for cid, row in a.items():
        for col in vectors:
            x, y = np.asarray(row[col]), np.asarray(b[cid][col])
            assert np.linalg.norm(x - y) <= 1e-5 * np.linalg.norm(y), (cid, col)
    ma, mb = (json.loads((p / "_manifest.json").read_text()) for p in (out, own))
    assert ma["fingerprint"] == mb["fingerprint"]
    assert ma["model"]["key"] == mb["model"]["key"]
    assert ma["counts"]["windows"] == mb["counts"]["windows"]


@pytest.fixture(scope="module")
def cluster():
    """A head and one worker node, two CPUs each."""
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(REPO))
        c = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False}
        )
        c.add_node(num_cpus=2)
        c.wait_for_nodes()
        yield c
        c.shutdown()


@pytest.fixture(scope="module")
def inputs(genome_fasta, reference, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("warm-inputs")
    fasta, _ = reference
    bed = tmp / "peaks.bed"
    bed.write_text(
        "chrA\t100\t900\tp1\nchrA\t5000\t5400\tp2\nchrB\t300\t1300\tp3\nchrB\t9000\t9050\tp4\n"
    )
    return {"genome": genome_fasta, "fasta": fasta, "bed": bed}


def tiles_args(inputs, out: Path) -> list[str]:
    return [*TILES, f"input={inputs['genome']}", f"output={out}"]


def regions_args(inputs, out: Path) -> list[str]:
    return [
        *REGIONS,
        f"input.reference={inputs['fasta']}",
        f"input.regions={inputs['bed']}",
        f"output={out}",
    ]


@pytest.fixture(scope="module")
def served(cluster, inputs, tmp_path_factory):
    """The deployment on the cluster; meanwhile the runs with their own engines (each its own
    local Ray), for reference."""
    tmp = tmp_path_factory.mktemp("warm")
    own = {"tiles": tmp / "own-tiles", "regions": tmp / "own-regions"}
    port = free_port()
    logs = tmp / "server"
    logs.mkdir()
    stdout, stderr = open(logs / "stdout", "w"), open(logs / "stderr", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("dnaembed-serve")), *SERVED, f"serve.name={NAME}",
         f"serve.port={port}", "ray=cluster", "serve.proxy_location=head_only"],
        cwd=logs, env=env(RAY_ADDRESS=cluster.address), stdout=stdout, stderr=stderr,
    )  # fmt: skip
    try:
        for _, args in (
            ("tiles", tiles_args(inputs, own["tiles"])),
            ("regions", regions_args(inputs, own["regions"])),
        ):
            finish(dnaembed(tmp, *args, "ray.num_cpus=2"))
        t0 = time.monotonic()
        while "ready at" not in (logs / "stdout").read_text():
            assert server.poll() is None, (logs / "stderr").read_text()[-3000:]
            assert time.monotonic() - t0 < 300, "the server was not ready in 300 s"
            time.sleep(0.5)
        yield {
            "tmp": tmp,
            "own": own,
            "url": f"http://127.0.0.1:{port}",
            "proc": server,
            "logs": logs,
            "address": cluster.address,
        }
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        stdout.close()
        stderr.close()


def on_deployment(served, *args: str) -> subprocess.Popen:
    return dnaembed(
        served["tmp"],
        *args,
        f"embed.engines=serve:{NAME}",
        f"ray.address={served['address']}",
        *SMALL,
    )


def test_two_runs_and_http_clients_share_the_deployment(served, inputs, genome_fasta):
    tmp = served["tmp"]
    seq = "".join(genome_fasta.read_text().splitlines()[1:])[:512]
    answers: list = []
    stop = threading.Event()

    def client() -> None:
        # An HTTP client throughout both runs: each answer is the first window's embedding.
        with httpx.Client(base_url=served["url"], timeout=120) as http:
            while not stop.is_set():
                r = http.post(
                    "/v1/embeddings",
                    json={"model": NAME, "input": [seq], "dnaembed": {"columns": ["embedding"]}},
                )
                assert r.status_code == 200, r.text
                answers.append(np.asarray(r.json()["data"][0]["embedding"], np.float32))

    clients = [threading.Thread(target=client) for _ in range(2)]
    for c in clients:
        c.start()
    try:
        t_out, r_out = tmp / "warm-tiles", tmp / "warm-regions"
        tiles = on_deployment(served, *tiles_args(inputs, t_out))
        regions = on_deployment(served, *regions_args(inputs, r_out))
        (t_stdout, _), _ = finish(tiles), finish(regions)
    finally:
        stop.set()
        for c in clients:
            c.join()
    assert f"engines of deployment {NAME!r}" in t_stdout
    assert "starting 2 engines" not in t_stdout or "reaching deployment" in t_stdout
    assert_same_output(t_out, served["own"]["tiles"])
    assert_same_output(r_out, served["own"]["regions"])
    # The clients' answers, all alike, are the batch run's row of the same window.
    assert len(answers) >= 4
    first = next(r for r in rows(t_out).values() if r["start"] == 0 and r["strand"] == "+")
    for a in answers:
        assert np.linalg.norm(a - np.asarray(first["embedding"])) <= 1e-5 * np.linalg.norm(a)


def test_what_the_deployment_does_not_compute_is_refused_before_any_read(served, tmp_path):
    # The input does not exist: a run that read anything would say so instead.
    missing = tmp_path / "no-such-genome.fa"
    lacking = on_deployment(served, "model=tiny", f"input={missing}", f"output={tmp_path / 'o'}",
                            "embed.layers=[0]", "embed.poolings=[last]")  # fmt: skip
    _, err = lacking.communicate(timeout=300)
    assert lacking.returncode == 2, err[-3000:]
    assert f"embed.engines=serve:{NAME}: the deployment does not compute" in err
    assert "emb_l0_last" in err and "It offers model tiny" in err
    assert "embed.engines=own" in err and "no-such-genome" not in err
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "model=tiny", f"input={missing}",
         f"output={tmp_path / 'p'}", "embed.engines=serve:nosuch",
         f"ray.address={served['address']}"],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "the deployment 'nosuch' is not running on this Ray cluster (it runs warm)" in (
        proc.stderr
    )
    assert not (tmp_path / "o").exists() and not (tmp_path / "p").exists()


def test_the_deployment_stopped_midway_ends_the_run_and_own_engines_resume(served, inputs):
    tmp = served["tmp"]
    out = tmp / "warm-long"
    args = [*LONG, f"input={inputs['genome']}", f"output={out}"]
    run = on_deployment(served, *args)
    t0 = time.monotonic()
    while not list((out / "_commits").glob("part-*.json")) if (out / "_commits").exists() else True:
        assert run.poll() is None, run.communicate()[1][-3000:]
        assert time.monotonic() - t0 < 300, "the run committed nothing in time"
        time.sleep(0.05)
    served["proc"].send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 2, err[-3000:]
    assert f"the deployment {NAME!r} (embed.engines=serve:{NAME}) stopped answering" in err
    assert "embed.engines=own" in err
    kept = sorted(p.name for p in (out / "_commits").glob("part-*.json"))
    assert kept
    served["proc"].wait(timeout=120)
    # The same command with the run's own engines (a local Ray) resumes.
    own_out, _ = finish(dnaembed(tmp, *args, "embed.engines=own", "ray.num_cpus=2"))
    assert "resuming:" in own_out
    assert set(kept) <= {p.name for p in (out / "_commits").glob("part-*.json")}
    assert_same_output(out, served["own"]["tiles"])
