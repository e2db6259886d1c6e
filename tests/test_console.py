"""The terminal: progress while a run goes, library lines routed to the log file."""

from __future__ import annotations

import io
import logging
import time

import pytest

from pipeline.config import LogConfig, Progress
from pipeline.console import ProgressReporter, logging_to
from pipeline.stages import PROGRESS_KEYS


def counts(**kw) -> dict:
    return {**dict.fromkeys(PROGRESS_KEYS, 0), **kw}


def test_while_engines_start_the_line_says_what_they_wait_for():
    r = ProgressReporter(lambda: {}, inputs=1, mode=Progress.lines, engines=2)
    # One engine has reported nothing yet: its process is still starting.
    one = counts(windows=12, engine_phases={"a1": "importing vLLM"})
    text = r.line(one, now=r.t0 + 7)
    assert text == (
        "dnaembed: starting 2 engines: importing vLLM (1), waiting for its process (1); "
        "12 windows made, elapsed 0:07"
    )
    both = counts(windows=12, engine_phases={"a1": "ready", "a2": "loading weights"})
    assert "starting 2 engines: ready (1), loading weights (1);" in r.line(both, r.t0 + 9)
    # Every engine ready, or a window embedded: the usual line.
    ready = counts(windows=12, engine_phases={"a1": "ready", "a2": "ready"})
    assert r.line(ready, r.t0 + 10).startswith("dnaembed: 0/? windows")
    going = counts(windows=12, windows_embedded=1, engine_phases={"a1": "ready"})
    assert r.line(going, r.t0 + 11).startswith("dnaembed: 1/? windows")
    single = ProgressReporter(lambda: {}, inputs=1, mode=Progress.lines)
    alone = counts(engine_phases={"a1": "warming up"})
    assert single.line(alone, single.t0).startswith("dnaembed: starting 1 engine: warming up;")


def test_total_and_eta_only_once_every_input_is_windowed():
    r = ProgressReporter(lambda: {}, inputs=2, mode=Progress.lines)
    # One file of two read: the total is not known yet.
    early = counts(inputs_read=1, records_to_window=5, records_windowed=5, windows=40)
    assert r.line(early, now=r.t0 + 1).startswith("dnaembed: 0/? windows, 0 tokens,")
    # Both read, but one batch of records still being windowed.
    busy = counts(inputs_read=2, records_to_window=9, records_windowed=5, windows=60)
    assert "/? windows" in r.line(busy, now=r.t0 + 2)
    # All windowed; 10 resumed, 20 of the 80 left embedded at 1000 tokens each, in 10 s.
    known = counts(
        inputs_read=2,
        records_to_window=9,
        records_windowed=9,
        windows=90,
        windows_resumed=10,
        windows_embedded=20,
        engine_tokens=20_000,
    )
    text = r.line(known, now=r.t0 + 12)
    assert text.startswith("dnaembed: 20/80 windows  25%, 20.0 k tokens, ")
    # 20k tokens in the 11 s since the first sample: 1.8k tokens/s; 60 windows of 1000 tokens
    # left: 33 s.
    assert "1.8 k tokens/s" in text and text.endswith("elapsed 0:12, ETA 0:33")


def test_lines_when_not_on_a_terminal():
    got: list[str] = []
    polls = iter([counts(windows_embedded=i, engine_tokens=100 * i) for i in range(1000)])
    stream = io.StringIO()  # not a terminal
    with ProgressReporter(lambda: next(polls), 1, Progress.auto, 0.02, got.append, stream):
        time.sleep(0.3)
    assert len(got) >= 3 and all(g.startswith("dnaembed: ") for g in got)
    assert stream.getvalue() == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_redrawn_in_place_on_a_terminal():
    got: list[str] = []
    stream = Terminal()
    with ProgressReporter(
        lambda: counts(windows_embedded=3), 1, Progress.auto, 30, got.append, stream
    ):
        time.sleep(1.2)  # the bar redraws twice a second whatever the line interval
    text = stream.getvalue()
    assert got == [] and text.count("\r\033[K") >= 3
    assert "3/? windows" in text and text.endswith("\r\033[K")  # cleared at the end


def test_off_shows_nothing():
    got: list[str] = []
    with ProgressReporter(lambda: counts(), 1, Progress.off, 0.01, got.append, Terminal()):
        time.sleep(0.1)
    assert got == []


def test_a_failing_poll_never_ends_a_run():
    def poll():
        raise ConnectionError("stats actor gone")

    got: list[str] = []
    with ProgressReporter(poll, 1, Progress.lines, 0.01, got.append):
        time.sleep(0.1)
    assert got == []


@pytest.fixture
def libraries_print_their_own():
    """vLLM's and Ray Data's loggers as those libraries set them up once loaded: a console
    handler of their own (vLLM's here prints into the returned buffer), no propagation to the
    root."""
    import ray.data  # noqa: F401 - configures its logger

    vllm = logging.getLogger("vllm")
    printed = io.StringIO()
    handler = logging.StreamHandler(printed)
    vllm.addHandler(handler)
    vllm.propagate = False
    yield printed
    vllm.removeHandler(handler)
    vllm.propagate = True


def test_library_lines_go_to_the_log_file_ours_to_the_terminal(
    tmp_path, capsys, libraries_print_their_own
):
    path = tmp_path / "run" / "dnaembed.log"
    with logging_to(LogConfig(file=str(path))):
        logging.getLogger("vllm.engine").info("KV cache: 123 blocks")
        logging.getLogger("vllm.engine").warning("a library warning")
        logging.getLogger("pipeline.run").warning("record skipped: chr9")
        logging.getLogger("ray.data").error("a task failed: Traceback ...")
    err = capsys.readouterr().err
    assert err == "pipeline.run: WARNING: record skipped: chr9\n"
    assert libraries_print_their_own.getvalue() == ""  # not printed by vLLM's own handler
    log = path.read_text()
    for text in ("KV cache: 123 blocks", "a library warning", "record skipped", "a task failed"):
        assert text in log
    # Nothing left behind once the run is over: the libraries print their own again.
    logging.getLogger("vllm.engine").warning("after the run")
    assert "after the run" not in path.read_text()
    assert libraries_print_their_own.getvalue() == "after the run\n"
    assert not logging.getLogger("ray.data").propagate


def test_verbose_shows_library_lines(tmp_path, capsys, libraries_print_their_own):
    with logging_to(LogConfig(file=str(tmp_path / "x.log"), verbose=True)):
        logging.getLogger("vllm.engine").info("KV cache: 123 blocks")
    assert "KV cache: 123 blocks" in capsys.readouterr().err
    assert libraries_print_their_own.getvalue() == ""
