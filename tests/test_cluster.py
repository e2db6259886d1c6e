"""A Ray cluster of several raylets (head without CPUs, worker nodes that come and go) and the
user's command, `dnaembed ... ray=cluster`, as a driver process: node loss with and without a
replacement, and a driver killed and restarted. The faults come from outside the product."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline.load.loader import load_embeddings, read_manifest
from pipeline.run import run
from tests import faults
from tests.conftest import REPO, compose_config, embeddings_by_id

pytestmark = pytest.mark.slow

GENOME = REPO / "pipeline/demo/NC_045512.2.fasta"
READS = REPO / "pipeline/demo/reads.fastq.gz"
SETTINGS = [
    "model=tiny",
    f"input=[{GENOME},{READS}]",
    "window.size=700",
    "window.stride=600",
    "embed.max_batch_tokens=2100",
    "output.rows_per_shard=6",
    "log.progress=off",
]
# The driver: the CLI, with the test's fault points wrapped in its process first.
DRIVER = (
    "import sys, tests.faults; tests.faults.install(); from pipeline.cli import main; "
    "sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture(scope="module")
def cluster():
    """Head node (GCS, the driver's node) with no CPUs, so every task and engine runs on a
    worker node; nodes declared dead after ~3 s without a heartbeat (Ray's default is ~30 s)."""
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(REPO))  # the nodes' workers import this checkout
        c = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "include_dashboard": False,
                "_system_config": {
                    "health_check_initial_delay_ms": 0,
                    "health_check_period_ms": 1000,
                    "health_check_failure_threshold": 3,
                },
            },
        )
        c.add_node(num_cpus=2)
        c.wait_for_nodes()
        yield c
        c.shutdown()


@pytest.fixture(scope="module")
def reference(ray_session, tmp_path_factory):
    """The same run, uninterrupted, on the local Ray of the test session."""
    out = tmp_path_factory.mktemp("cluster-reference") / "out"
    run(compose_config(*SETTINGS, f"output={out}"), echo=lambda *_: None)
    return by_id(out)


def by_id(out) -> dict[str, np.ndarray]:
    return embeddings_by_id(load_embeddings(str(out)))


def assert_whole(out, reference) -> dict:
    """Every window exactly once, equal to the uninterrupted run; only committed shards."""
    got = by_id(out)
    assert got.keys() == reference.keys()
    for cid, vec in got.items():
        assert np.linalg.norm(vec - reference[cid]) <= 1e-4 * np.linalg.norm(reference[cid])
    shards = sorted(p.name for p in (out / "shards").iterdir())
    commits = sorted(p.name.removesuffix(".json") for p in (out / "_commits").iterdir())
    assert shards == commits  # no partial or uncommitted shard
    m = read_manifest(str(out))
    c = m["counts"]
    assert c["windows"] == len(reference) == c["windows_resumed"] + c["windows_embedded"]
    assert c["records"] == 25 == c["records_embedded"] + c["records_skipped"]
    assert sorted(s["path"].split("/")[-1] for s in m["shards"]) == shards
    return m


def driver(cluster, out, tmp_path, *extra, fault: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": cluster.address}
    if fault:
        spec = tmp_path / "driver-fault.json"
        spec.write_text(json.dumps(fault))
        env[faults.ENV] = str(spec)
    else:
        env.pop(faults.ENV, None)
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, *SETTINGS, f"output={out}", "ray=cluster", *extra],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def when_committed(proc: subprocess.Popen, out, n: int, timeout_s: float = 300) -> None:
    """Wait until the run has committed n shards (it is midway)."""
    t0 = time.monotonic()
    while (
        len(list((out / "_commits").glob("part-*.json"))) < n
        if (out / "_commits").exists()
        else True
    ):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() - t0 < timeout_s, "the run committed nothing in time"
        time.sleep(0.1)


def worker_nodes(cluster) -> list:
    return [n for n in cluster.list_all_nodes() if n is not cluster.head_node]


def test_a_worker_node_lost_midway_is_replaced_and_the_run_completes(cluster, reference, tmp_path):
    out = tmp_path / "out"
    proc = driver(cluster, out, tmp_path, "ray.placement_timeout_s=300")
    when_committed(proc, out, 2)
    (lost,) = worker_nodes(cluster)
    cluster.remove_node(lost, allow_graceful=False)  # engine, tasks and objects on it die
    cluster.add_node(num_cpus=2)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    m = assert_whole(out, reference)
    assert m["counts"]["windows_resumed"] == 0  # one run, no rerun
    assert "dnaembed: 25 records (0 skipped)" in stdout


def test_a_node_lost_for_good_ends_the_run_a_killed_driver_loses_nothing_a_rerun_resumes(
    cluster, reference, tmp_path
):
    """The worker node dies and none replaces it: the engine cannot be placed again, the run
    ends after ray.placement_timeout_s naming why. A node joins; the same command resumes and
    its driver is killed midway; the same command again finishes the run, exactly once."""
    out = tmp_path / "out"
    proc = driver(cluster, out, tmp_path, "ray.placement_timeout_s=3")
    when_committed(proc, out, 2)
    t_lost = time.monotonic()
    (lost,) = worker_nodes(cluster)
    cluster.remove_node(lost, allow_graceful=False)
    _, stderr = proc.communicate(timeout=300)
    waited = time.monotonic() - t_lost
    assert proc.returncode == 2, stderr[-3000:]
    (line,) = [x for x in stderr.splitlines() if x.startswith("dnaembed: error:")]
    assert "1 engine(s) lost with their node could not be placed again" in line
    assert "0 CPU, 0 GPU on 1 node(s)" in line and "ray.placement_timeout_s=3 s" in line
    assert waited < 60  # detection (~3 s) + the timeout, not a hang
    assert not (out / "_manifest.json").exists()
    first = len(list((out / "_commits").glob("part-*.json")))
    assert first >= 2

    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    killed = driver(
        cluster, out, tmp_path, fault={"point": "driver.commits", "after": 3, "action": "exit"}
    )
    stdout, stderr = killed.communicate(timeout=600)
    assert killed.returncode == 17, stderr[-3000:]  # died as a killed process does
    assert "dnaembed: resuming: " in stdout
    second = len(list((out / "_commits").glob("part-*.json")))
    assert second >= first + 3 and not (out / "_manifest.json").exists()

    again = driver(cluster, out, tmp_path)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-3000:]
    assert "dnaembed: resuming: " in stdout
    m = assert_whole(out, reference)
    rows = sum(json.loads(c.read_text())["rows"] for c in (out / "_commits").iterdir())
    assert m["counts"]["windows_resumed"] >= second and rows == m["counts"]["windows"]
