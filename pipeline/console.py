"""What the user sees: a short header, live progress and the summary. Everything else (vLLM's
and Ray's own lines, the resolved config) goes to the run's log file.

From the CLI the log file is `dnaembed.log` in Hydra's run directory (`log.file` to choose
another); `log.verbose=true` (or `-v`) also shows every library line on the terminal. Our own
warnings, and the error that ends a run, always reach the terminal.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from pipeline.config import LogConfig, Progress

log = logging.getLogger("pipeline")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _TerminalFilter(logging.Filter):
    """On a quiet terminal, our own warnings and errors only. A failed run reaches the
    terminal as its one-line error (or a bug's traceback); the libraries' own error records,
    tracebacks of a failed task among them, stay in the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("pipeline")


def _prints_to_terminal(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return stream is not None and stream in (sys.stderr, sys.stdout, sys.__stderr__)


def _is_console(handler: logging.Handler) -> bool:
    # Any stream but a file: Ray's handler writes to whatever sys.stderr is when it emits.
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler
    )


def routed(cfg: LogConfig) -> bool:
    """Whether this run routes log records itself (else the caller's logging config does)."""
    return cfg.file is not None or cfg.verbose


@contextmanager
def logging_to(cfg: LogConfig) -> Iterator[None]:
    """Route log records for the duration of a run: all to `cfg.file` (when set), and to the
    terminal only what matters (everything with `cfg.verbose`)."""
    if not routed(cfg):
        yield
        return
    root = logging.getLogger()
    added: list[logging.Handler] = []
    if cfg.file is not None:
        Path(cfg.file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(cfg.file)
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        added.append(file_handler)
    if not any(_prints_to_terminal(h) for h in root.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
        console.setLevel(logging.INFO if cfg.verbose else logging.WARNING)
        if not cfg.verbose:
            console.addFilter(_TerminalFilter())
        added.append(console)
    for h in added:
        root.addHandler(h)
    old_level = root.level
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        with library_logs_routed(cfg):
            yield
    finally:
        logging.captureWarnings(False)
        root.setLevel(old_level)
        for h in added:
            root.removeHandler(h)
            h.close()


# Libraries that print their own log records (their loggers do not propagate to the root).
LIBRARY_LOGGERS = ("vllm", "ray", "ray.data", "ray.serve")


@contextmanager
def library_logs_routed(cfg: LogConfig) -> Iterator[None]:
    """For a routed run, the records of libraries that print their own (vLLM, Ray) go through
    the root logger instead: to the log file, and to the terminal as `logging_to` decides.
    Only loggers the library has set up already are touched: enter again once it is imported
    (Ray Data sets its up on import)."""
    if not routed(cfg):
        yield
        return
    changed = []
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        consoles = [h for h in lg.handlers if _is_console(h)]
        if not consoles:
            continue
        changed.append((lg, lg.propagate, consoles))
        for h in consoles:
            lg.removeHandler(h)
        lg.propagate = True
    try:
        yield
    finally:
        for lg, propagate, consoles in changed:
            lg.propagate = propagate
            for h in consoles:
                lg.addHandler(h)


@contextmanager
def worker_output_to_log(cfg: LogConfig) -> Iterator[None]:
    """Ray workers' output (vLLM's lines among them), which Ray prints on the driver's
    terminal, through the logger `dnaembed.workers` instead (see `logging_to`). Enter
    after `ray.init`."""
    if not routed(cfg):
        yield
        return
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # another Ray: its own printing stays
        yield
        return
    workers = logging.getLogger("dnaembed.workers")

    def to_log(data: dict) -> None:
        who = data.get("actor_name") or data.get("task_name") or data.get("pid")
        for line in data.get("lines", []):
            workers.info("(%s, pid=%s, ip=%s) %s", who, data.get("pid"), data.get("ip"), line)

    printing = [(n, h) for n, h in dispatcher.handlers if n == "ray_print_logs"]
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("dnaembed_log_file", to_log)
    try:
        yield
    finally:
        dispatcher.remove_handler("dnaembed_log_file")
        for name, handler in printing:
            dispatcher.add_handler(name, handler)


def _duration(s: float) -> str:
    s = int(max(s, 0))
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def _count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f}"


class ProgressReporter:
    """Polls the run's counters and shows them: a bar redrawn in place on a terminal, or a
    line every `interval_s` otherwise.

    Windows are known once every input has been read and windowed; until then the total
    shows as "?" and there is no ETA. Until the first window is embedded, the line says what
    the `engines` wait for as they start.
    """

    def __init__(
        self,
        poll: Callable[[], dict],
        inputs: int,
        mode: Progress = Progress.auto,
        interval_s: float = 30.0,
        echo: Callable[[str], Any] = print,
        stream: TextIO | None = None,
        engines: int = 1,
    ):
        self.poll = poll
        self.inputs = inputs
        self.engines = engines
        self.stream = stream or sys.stderr
        if mode == Progress.auto:
            mode = Progress.bar if self.stream.isatty() else Progress.lines
        self.mode = mode
        self.interval_s = 0.5 if mode == Progress.bar else interval_s
        self.echo = echo
        self.t0 = time.monotonic()
        self.samples: deque[tuple[float, int]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def starting(self, c: dict, now: float) -> str | None:
        """While no window is embedded and an engine is not ready: what the engines wait for,
        e.g. "starting 2 engines: importing vLLM (1), loading weights (1)"."""
        phases = c.get("engine_phases")
        if (
            phases is None
            or c["windows_embedded"]
            or (len(phases) >= self.engines and all(p == "ready" for p in phases.values()))
        ):
            return None
        waiting = list(phases.values()) + ["waiting for its process"] * max(
            0, self.engines - len(phases)
        )
        counts: dict[str, int] = {}
        for p in waiting:
            counts[p] = counts.get(p, 0) + 1
        what = ", ".join(
            p if len(counts) == 1 and self.engines == 1 else f"{p} ({n})" for p, n in counts.items()
        )
        n = self.engines
        return (
            f"dnaembed: starting {n} engine{'s' if n != 1 else ''}: {what}; "
            f"{c['windows']:,} windows made, elapsed {_duration(now - self.t0)}"
        )

    def line(self, c: dict, now: float) -> str:
        starting = self.starting(c, now)
        if starting is not None:
            return starting
        done = c["windows_embedded"]
        known = c["inputs_read"] >= self.inputs and c["records_windowed"] >= c["records_to_window"]
        total = c["windows"] - c["windows_resumed"]
        tokens = c["engine_tokens"]
        self.samples.append((now, tokens))
        while len(self.samples) > 2 and now - self.samples[0][0] > 30:
            self.samples.popleft()
        (t_a, k_a), (t_b, k_b) = self.samples[0], self.samples[-1]
        rate = (k_b - k_a) / (t_b - t_a) if t_b > t_a else 0.0
        eta = "?"
        if known and rate > 0 and done:
            eta = _duration((total - done) * (tokens / done) / rate)
        shown = f"{done:,}/{total:,}" if known else f"{done:,}/?"
        pct = f" {100 * done / total:3.0f}%" if known and total else ""
        return (
            f"dnaembed: {shown} windows{pct}, {_count(tokens)} tokens, "
            f"{_count(rate)} tokens/s, elapsed {_duration(now - self.t0)}, ETA {eta}"
        )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                text = self.line(self.poll(), time.monotonic())
            except Exception as e:  # progress must never end a run
                log.debug("progress poll failed: %s", e)
                continue
            if self.mode == Progress.bar:
                self.stream.write("\r\033[K" + text)
                self.stream.flush()
            else:
                self.echo(text)

    def __enter__(self) -> ProgressReporter:
        if self.mode != Progress.off:
            self._thread = threading.Thread(target=self._loop, name="dnaembed-progress")
            self._thread.daemon = True
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self.mode == Progress.bar:
                self.stream.write("\r\033[K")
                self.stream.flush()
