"""Opt-in CPU profile of each engine call: is the engine waiting on the GPU or on Python?

For the bare-engine contender (`benchmarks/harness/contenders.py`): set `DNAEMBED_PROFILE_DIR`
in its environment (a variant, `--variants '{"engine:prof": {"contender": "engine", "env":
{"DNAEMBED_PROFILE_DIR": "/tmp/prof"}}}'`) with py-spy installed, and every engine call is
sampled, this process and the engine's processes together, into `<dir>/<tag>.raw` (read it with
`python -m benchmarks.harness.pyspy_summary`). Off, it costs nothing. The pipeline does not
profile.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV = "DNAEMBED_PROFILE_DIR"
RATE = 50  # samples per second

log = logging.getLogger(__name__)


@contextmanager
def profiled(tag: str) -> Iterator[None]:
    where = os.environ.get(ENV)
    if not where:
        yield
        return
    exe = _py_spy()
    if exe is None:
        log.warning("%s is set but py-spy is not installed (pip install py-spy)", ENV)
        yield
        return
    Path(where).mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "--pid", str(os.getpid()), "--subprocesses", "--threads"]
    cmd += ["--nonblocking", "--rate", str(RATE), "--format", "raw"]
    cmd += ["--output", str(Path(where) / f"{tag}.raw")]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Started from a worker thread that blocks signals (a Ray actor's), the child would
        # inherit the mask and never see the SIGINT that ends it.
        preexec_fn=_unblock_signals,
    )
    time.sleep(1.0)  # py-spy attaches to every process before it samples
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _py_spy() -> str | None:
    # Installed beside this Python (a venv whose bin is not on PATH), or on PATH.
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def _unblock_signals() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
