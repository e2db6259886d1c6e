"""One driver per output: the lease (local lock, S3 conditional writes), held by real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from pipeline.errors import OutputError
from pipeline.write.layout import LEASE, OutputDir
from pipeline.write.lease import Lease
from tests.conftest import REPO

# A driver stand-in: takes the lease, says so, then on SIGUSR1 checks it still holds it.
HOLDER = textwrap.dedent(
    """
    import signal, sys, time
    from pipeline.write.layout import OutputDir
    from pipeline.write.lease import Lease
    opts = {"s3": {"endpoint_url": sys.argv[3]}} if len(sys.argv) > 3 else None
    lease = Lease(OutputDir(sys.argv[1], opts), "fp", float(sys.argv[2])).acquire()
    def check(*_):
        try:
            lease.check()
            print("still held", flush=True)
        except Exception as e:
            print("lost:", e, flush=True)
        sys.exit(0)
    signal.signal(signal.SIGUSR1, check)
    print("held", flush=True)
    while True:
        time.sleep(0.05)
    """
)


def holder(uri: str, ttl_s: float, endpoint: str | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, uri, str(ttl_s), *([endpoint] if endpoint else [])],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def race(out: OutputDir, n: int = 6) -> tuple[list[Lease], list[str]]:
    """n drivers take the lease at the same moment: (winners, refusals)."""
    won, refused = [], []
    start = threading.Barrier(n)

    def take() -> None:
        lease = Lease(OutputDir(out.uri, out.storage_options), "fp", 30)
        start.wait()
        try:
            won.append(lease.acquire())
        except OutputError as e:
            refused.append(str(e))

    threads = [threading.Thread(target=take) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, refused


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path):
    if request.param == "local":
        return OutputDir(str(tmp_path / "out"))
    s3 = request.getfixturevalue("s3")
    endpoint = request.getfixturevalue("s3_endpoint")
    return OutputDir(f"s3://out-{s3.name}/run", {"s3": {"endpoint_url": endpoint}})


def test_of_drivers_started_together_one_holds_the_output(out):
    won, refused = race(out)
    assert len(won) == 1 and len(refused) == 5
    for message in refused:
        assert f"pid {os.getpid()} on " in message
        assert "in use by another dnaembed driver" in message
    won[0].release()
    assert not out.exists(LEASE)
    again = Lease(out, "fp", 30).acquire()  # released: free again
    again.release()


def endpoint_of(out: OutputDir) -> str | None:
    return (out.storage_options or {}).get("s3", {}).get("endpoint_url")


def test_a_killed_drivers_lease_does_not_block_a_resume(out):
    proc = holder(out.uri, 30, endpoint_of(out))
    with pytest.raises(OutputError, match=f"pid {proc.pid} on "):
        Lease(out, "fp", 30).acquire()
    proc.kill()
    proc.wait()
    # Local: the kernel dropped the lock; S3: the lease names a process of this host that is
    # gone. Either way no wait.
    lease = Lease(out, "fp", 30).acquire()
    lease.release()


def test_s3_lease_of_a_hung_driver_expires_and_the_driver_learns_it_lost(s3, s3_endpoint):
    """A driver that stops renewing (hung, or cut off) loses its lease after output.lease_s;
    when it wakes, it finds out before writing a manifest."""
    out = OutputDir(f"s3://out-{s3.name}/run", {"s3": {"endpoint_url": s3_endpoint}})
    proc = holder(out.uri, 2.0, s3_endpoint)
    os.kill(proc.pid, signal.SIGSTOP)
    with pytest.raises(OutputError, match=r"expires in [0-2] s"):
        Lease(out, "fp", 2.0).acquire()
    time.sleep(2.2)
    taker = Lease(out, "fp", 2.0).acquire()  # expired: taken over
    os.kill(proc.pid, signal.SIGCONT)
    os.kill(proc.pid, signal.SIGUSR1)
    said = proc.stdout.read()
    proc.wait(timeout=30)
    assert said.startswith("lost: lost the lease on ") and f"pid {os.getpid()}" in said
    taker.check()  # the new holder keeps it
    taker.release()


def test_s3_lease_is_renewed_while_the_driver_runs(s3, s3_endpoint):
    out = OutputDir(f"s3://out-{s3.name}/run", {"s3": {"endpoint_url": s3_endpoint}})
    lease = Lease(out, "fp", 1.0).acquire()
    time.sleep(1.6)  # past the ttl: only renewals keep it
    with pytest.raises(OutputError, match="in use by another dnaembed driver"):
        Lease(out, "fp", 1.0).acquire()
    lease.check()
    lease.release()


def test_local_lease_on_a_file_path(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        Lease(OutputDir(str(tmp_path / "f")), "fp").acquire()


def test_s3_output_in_a_missing_bucket(s3, s3_endpoint):
    out = OutputDir("s3://no-such-bucket-here/run", {"s3": {"endpoint_url": s3_endpoint}})
    with pytest.raises(OutputError, match="bucket 'no-such-bucket-here' does not exist"):
        Lease(out, "fp").acquire()
