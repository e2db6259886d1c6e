"""What every stage shares: declared columns, setup on the worker, and Ray actor wrapping.

A stage is a small picklable object: its constructor only stores settings; `setup()` does the
heavy work (engine, tokenizer) once on the worker; `__call__(batch) -> batch` transforms a
pyarrow batch. Stages declare the columns they need, and fail naming a missing one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import pyarrow as pa

from pipeline.util import stable_hash


class Stage:
    needs: ClassVar[tuple[str, ...]] = ()
    adds: ClassVar[tuple[str, ...]] = ()

    _ready = False

    def setup(self) -> None:
        """Heavy, once per worker. Default: nothing."""

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    def check_columns(self, batch: pa.Table) -> None:
        missing = [c for c in self.needs if c not in batch.column_names]
        if missing:
            raise KeyError(
                f"{type(self).__name__} needs column(s) {missing}; the batch has "
                f"{batch.column_names}"
            )


class StatsSink:
    """Where stages report counts: a Ray actor handle, or a local dict in tests.

    Keys are deterministic in the work done, so a retried task overwrites its own report
    instead of counting twice.
    """

    def __init__(self, actor: Any = None):
        self.actor = actor
        self.local: dict[str, dict] = {}

    def put(self, key: str, part: dict) -> None:
        if self.actor is None:
            self.local[key] = part
            return
        import ray

        # Wait, so every report lands before the driver asks for totals.
        ray.get(self.actor.put.remote(key, part))

    def totals(self) -> dict:
        if self.actor is None:
            return merge_parts(self.local.values())
        import ray

        return ray.get(self.actor.totals.remote())


def merge_parts(parts: Iterable[dict]) -> dict:
    """Sum counters; concatenate lists (skipped records, per-input summaries)."""
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if isinstance(v, list):
                out.setdefault(k, []).extend(v)
            else:
                out[k] = out.get(k, 0) + v
    return out


class RunStats:
    """Ray actor of one run: collects stage reports for the manifest, and knows the run's
    engine actors so the driver can stop them when the run ends."""

    def __init__(self) -> None:
        self.parts: dict[str, dict] = {}
        self.handles: list = []

    def put(self, key: str, part: dict) -> None:
        self.parts[key] = part

    def totals(self) -> dict:
        return merge_parts(self.parts.values())

    def register(self, handle: Any) -> None:
        self.handles.append(handle)

    def actors(self) -> list:
        return self.handles


def report_key(kind: str, *ids: Any) -> str:
    return f"{kind}:{stable_hash(list(ids))}"


def actor_class(stage: Stage) -> type:
    """A Ray Data actor class named after `stage`, running its setup when the actor starts.

    Ray Data names the operator and its progress bar after this class, so the bar reads
    `MapBatches(EmbedStage)`.
    """

    def __init__(self) -> None:
        self.stage = stage
        self.stage.ensure_setup()
        stats = getattr(stage, "stats", None)
        if stats is not None and stats.actor is not None:
            import ray

            # Ray Data lets a finished pool's actors go by reference counting; a failed run's
            # exception can keep them, and their CPUs or GPUs, alive. The driver kills them.
            ray.get(stats.actor.register.remote(ray.get_runtime_context().current_actor))

    def __call__(self, batch: Any) -> Any:
        return self.stage(batch)

    return type(type(stage).__name__, (), {"__init__": __init__, "__call__": __call__})
