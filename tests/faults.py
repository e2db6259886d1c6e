"""Fault injection for the fault tests, from outside the product.

The test session's Ray workers run `install` as their worker process setup hook (see
`conftest.ray_session`); it wraps three places of the product, each a fault point:

  embed.pack      EmbedStage.__call__: an engine actor, after N packs
  write.bytes     pipeline.storage._pieces: a shard upload, broken after N bytes
  driver.commits  ray.data.Dataset.iter_rows on the driver: after N shard commits

A fault is armed by writing its spec to the file named by $DNAEMBED_TEST_FAULTS (read at every
point, so workers that are already running see it): {"point", "after", "action": "exit" |
"raise", "once": PATH}. `exit` kills the process as a preempted node dies (no cleanup);
`raise` fails the operation. With `once`, only the first process to create PATH fires, so a
restarted actor does not die again. Unarmed, the wrappers only read a missing file.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

ENV = "DNAEMBED_TEST_FAULTS"


class InjectedFault(RuntimeError):
    """Raised by a `raise` fault; never retried."""


def arm(point: str, after: int, action: str, once: Path | None = None) -> None:
    spec = {"point": point, "after": after, "action": action}
    if once is not None:
        spec["once"] = str(once)
    Path(os.environ[ENV]).write_text(json.dumps(spec))


def disarm() -> None:
    Path(os.environ[ENV]).unlink(missing_ok=True)


def _spec(point: str) -> dict | None:
    path = os.environ.get(ENV)
    if not path:
        return None
    try:
        spec = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    return spec if spec.get("point") == point else None


def limit(point: str) -> int | None:
    """The count at which `point` fires, if a fault is armed there."""
    spec = _spec(point)
    return int(spec["after"]) if spec else None


def trigger(point: str, count: int) -> None:
    spec = _spec(point)
    if spec is None or count < int(spec["after"]):
        return
    once = spec.get("once")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    if spec.get("action") == "exit":
        os._exit(17)
    raise InjectedFault(f"injected fault at {point} after {count}")


def _broken_pieces(pieces):
    @functools.wraps(pieces)
    def wrapper(data: bytes):
        stop = limit("write.bytes")
        if stop is None:
            yield from pieces(data)
            return
        yield from pieces(data[:stop])
        trigger("write.bytes", min(stop, len(data)))
        yield from pieces(data[stop:])

    wrapper.dnaembed_fault = True
    return wrapper


def _dying_embed(call):
    packs = {"done": 0}

    @functools.wraps(call)
    def wrapper(self, batch):
        out = call(self, batch)
        packs["done"] += 1
        trigger("embed.pack", packs["done"])
        return out

    wrapper.dnaembed_fault = True
    return wrapper


def _dying_driver(iter_rows):
    @functools.wraps(iter_rows)
    def wrapper(self, *args, **kwargs):
        for n, row in enumerate(iter_rows(self, *args, **kwargs), start=1):
            yield row
            trigger("driver.commits", n)

    wrapper.dnaembed_fault = True
    return wrapper


def install() -> None:
    """Wrap the fault points in this process (idempotent)."""
    import ray.data

    from pipeline import storage
    from pipeline.embed.stage import EmbedStage

    for owner, name, wrap in (
        (storage, "_pieces", _broken_pieces),
        (EmbedStage, "__call__", _dying_embed),
        (ray.data.Dataset, "iter_rows", _dying_driver),
    ):
        current = getattr(owner, name)
        if not getattr(current, "dnaembed_fault", False):
            setattr(owner, name, wrap(current))
