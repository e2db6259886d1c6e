"""The opt-in engine profile: py-spy attached to this process and its children, off by default."""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks.harness.profile import ENV, RATE, profiled
from benchmarks.harness.pyspy_summary import read_stacks, summarize

CHILD = "import time\nt = time.time()\nwhile time.time() - t < 1.5:\n    pass\n"


def _spin(seconds: float) -> None:
    t = time.time()
    while time.time() - t < seconds:
        pass


def test_profile_samples_this_process_and_its_children(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path))
    with profiled("pack-0"):
        child = subprocess.Popen([sys.executable, "-c", CHILD])
        _spin(1.5)
        child.wait()
    stacks = read_stacks(tmp_path / "pack-0.raw")
    text = summarize(stacks, RATE)
    # Both processes, each busy for about its 1.5 s, the hot function named.
    assert text.count("\n== ") + text.startswith("== ") == 2, text
    assert "_spin (" in text and "<module> (<string>" in text
    busy = sum(n for _, n in stacks) / RATE
    assert 1.5 < busy < 4.5, busy


def test_profile_is_off_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    t = time.perf_counter()
    with profiled("pack-0"):
        pass
    assert time.perf_counter() - t < 0.5  # no py-spy, no attach wait
    assert not list(tmp_path.iterdir())
