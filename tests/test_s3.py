"""Object storage for real: input and output on an S3 HTTP endpoint (moto's server)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import StorageError, find_user_error
from pipeline.load.loader import load_embeddings, read_manifest
from pipeline.run import run
from tests import faults
from tests.conftest import REPO, SECRET, compose_config, embeddings_by_id
from tests.s3_proxy import FaultyS3Proxy

pytestmark = pytest.mark.slow


def listing(s3, prefix):
    s3.invalidate_cache()
    return sorted(s3.find(prefix))


def test_s3_broken_upload_throttling_store_store_down_nothing_lost(
    ray_session, s3, s3_endpoint, tmp_path
):
    """Input and output on S3. A shard upload broken midway fails the run and leaves nothing
    partial; the same command through a store that answers one request in three with 503
    SlowDown, 500 or a dropped connection retries with backoff, counts the retries and
    finishes the run. A store that goes down midway fails the run naming its endpoint and
    writes no manifest; once it is back the same command resumes. Credentials appear nowhere."""
    inb, outb = f"in-{s3.name}", f"out-{s3.name}"
    s3.put(str(REPO / "pipeline/demo/reads.fastq.gz"), f"{inb}/corpus/reads.fq.gz")
    s3.put(str(REPO / "pipeline/demo/NC_045512.2.fasta"), f"{inb}/corpus/genome.fa")
    s3.pipe(f"{inb}/corpus/notes.txt", b"not an input")
    direct = {"s3": {"endpoint_url": s3_endpoint}}

    def args(endpoint: str, out: str) -> list[str]:
        return [
            "model=tiny",
            f"input=s3://{inb}/corpus/*.f*",
            f"output=s3://{outb}/{out}/",
            f"storage.s3.endpoint_url={endpoint}",
            "window.size=1024",
            "output.rows_per_shard=8",
            f"log.file={tmp_path / 'run.log'}",
        ]

    lines: list[str] = []

    # A shard upload that breaks after 1000 bytes fails the run and leaves no object behind.
    faults.arm("write.bytes", 1000, "raise", once=tmp_path / "fired")
    try:
        with pytest.raises(Exception) as failed:
            run(compose_config(*args(s3_endpoint, "run")), echo=lines.append)
    finally:
        faults.disarm()
    assert "injected fault at write.bytes" in str(failed.value) or find_user_error(failed.value)
    assert (tmp_path / "fired").exists()
    shards = listing(s3, f"{outb}/run/shards")
    commits = listing(s3, f"{outb}/run/commits")
    assert len(shards) == len(commits)  # every shard visible is a committed, whole one
    assert not s3.exists(f"{outb}/run/_manifest.json")
    with pytest.raises(Exception, match="no manifest: the run is incomplete"):
        load_embeddings(f"s3://{outb}/run/", storage_options=direct)

    # The same command again, through a throttling store, finishes the run.
    with FaultyS3Proxy(s3_endpoint, every=3, max_faults=30) as proxy:
        summary = run(compose_config(*args(proxy.url, "run")), echo=lines.append)
        throttled_url = proxy.url
        assert all(proxy.faults[k] for k in ("slowdown", "internal", "reset")), proxy.faults
        manifest = read_manifest(f"s3://{outb}/run/", direct)
        counted = manifest["counts"]["storage_retries"]
        # Until the manifest is written (the count is in it), botocore saw every 503 and 500
        # (but a lease renewal's may race the count); a dropped connection aiohttp may resend
        # unseen.
        until = next(
            i
            for i, (r, _) in enumerate(proxy.log)
            if r.startswith("PUT") and "/_manifest.json" in r
        )
        before = [(r, kind) for r, kind in proxy.log[:until] if kind]
        seen = sum(kind != "reset" and "/_lease.json" not in r for r, kind in before)
        assert seen <= counted <= len(before), (counted, proxy.log)
        assert f"{counted} object store requests failed and were retried" in lines[-1]
    table = load_embeddings(f"s3://{outb}/run/", storage_options=direct)
    sources = set(table.column("source").to_pylist())
    assert sources == {f"s3://{inb}/corpus/reads.fq.gz", f"s3://{inb}/corpus/genome.fa"}
    assert table.num_rows == summary.windows == manifest["counts"]["windows"]
    assert table.num_rows >= 30 + 24
    c = manifest["counts"]
    assert c["records"] == 25 == c["records_embedded"] + c["records_skipped"]
    assert c["windows_resumed"] + c["windows_embedded"] == c["windows"]

    # A store that goes down midway: the run fails naming it, and resumes once it is back.
    with FaultyS3Proxy(s3_endpoint, max_faults=0) as proxy:
        proxy.down(after="/_commits/", nth=2)  # the second commit record and all after it
        down = [*args(proxy.url, "down"), "storage.s3.max_attempts=2"]
        with pytest.raises(Exception) as failed:
            run(compose_config(*down, "output.lease_s=2"), echo=lambda *_: None)
        err = find_user_error(failed.value)
        assert isinstance(err, StorageError), failed.value
        assert f"s3 endpoint {proxy.url}" in str(err) and "storage.s3.max_attempts" in str(err)
        assert not s3.exists(f"{outb}/down/_manifest.json")
        assert len(listing(s3, f"{outb}/down/_commits")) == 1
        proxy.up()
        # The failed driver could not remove its lease from a store that was down; this
        # process still runs, so the lease is taken over once expired (output.lease_s).
        time.sleep(2.1)
        resumed = run(compose_config(*down), echo=lines.append)
    assert resumed.windows_resumed > 0
    got = embeddings_by_id(load_embeddings(f"s3://{outb}/down/", storage_options=direct))
    want = embeddings_by_id(table)
    assert got.keys() == want.keys()
    for cid, vec in got.items():
        assert np.linalg.norm(vec - want[cid]) <= 1e-4 * np.linalg.norm(want[cid]), cid

    # The secret in the environment is nowhere: not in any object, log line or Ray log.
    blobs = [s3.cat(p) for p in listing(s3, outb)]
    assert blobs and not [b for b in blobs if SECRET.encode() in b]
    assert not [line for line in lines if SECRET in line]
    log = (tmp_path / "run.log").read_text()
    assert "endpoint_url: http://127.0.0.1:" in log and SECRET not in log
    assert f"endpoint_url: {throttled_url}" in s3.cat(f"{outb}/run/_config.yaml").decode()
    session = Path(ray_session._private.worker._global_node.get_session_dir_path())
    logs = [p for p in session.rglob("*") if p.is_file()]
    assert len(logs) > 10
    assert [p for p in logs if SECRET.encode() in p.read_bytes()] == []


@pytest.mark.parametrize("where", ["input", "output"])
def test_an_unreachable_store_fails_at_once_naming_its_endpoint(where, tmp_path):
    """A wrong endpoint (nothing listens there): one line and exit code 2, before any work."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    endpoint = f"http://127.0.0.1:{port}"
    io = (
        ["input=s3://corpus/x/*.fa", f"output={tmp_path / 'o'}"]
        if where == "input"
        else [f"input={REPO / 'pipeline/demo/NC_045512.2.fasta'}", "output=s3://emb/run1"]
    )
    store = [f"storage.s3.endpoint_url={endpoint}", "storage.s3.max_attempts=2"]
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "model=tiny", *io, *store],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("dnaembed: error:")]
    what = "listing the input s3://corpus/x/*.fa" if where == "input" else "using the output"
    assert f"s3 endpoint {endpoint}: {what}" in line and "after 2 attempts" in line
    assert "Traceback" not in proc.stderr
