"""Fault injection for the fault tests. Inert unless DNAEMBED_FAULT is set.

DNAEMBED_FAULT is JSON: {"point": ..., "after": N, "action": "exit" | "raise", "once": PATH}.
Points: "embed.pack" (an engine actor, after N packs), "write.bytes" (a shard upload, after N
bytes), "driver.commits" (the driver, after N shard commits). `exit` kills the process the way
a preempted node does (no cleanup); `raise` fails the operation. With `once`, only the first
process to create the file PATH fires, so a restarted actor does not die again.
"""

from __future__ import annotations

import json
import os

ENV = "DNAEMBED_FAULT"


class InjectedFault(RuntimeError):
    """Raised by a `raise` fault; never retried."""


def _spec(point: str) -> dict | None:
    raw = os.environ.get(ENV)
    if not raw:
        return None
    spec = json.loads(raw)
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


def env() -> dict[str, str]:
    """The armed fault, to hand to Ray workers."""
    raw = os.environ.get(ENV)
    return {ENV: raw} if raw else {}
