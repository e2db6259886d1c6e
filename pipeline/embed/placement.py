"""Can this Ray cluster host the embed actors? Answer before starting them, not by hanging.

An engine with tensor_parallel_size x pipeline_parallel_size = k GPUs needs k GPUs on one
node (its workers are subprocesses of the actor). Ray would queue an actor that fits nowhere
forever; we check the nodes first, and on an autoscaling cluster wait a bounded time for a
node that fits (`ray.placement_timeout_s`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config import EmbedConfig
    from pipeline.embed.engine import EngineSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActorShape:
    gpus: int
    cpus: float
    min_actors: int
    tp: int
    pp: int

    def fits(self, node: dict) -> int:
        """How many of these actors a node's total resources hold."""
        res = node.get("Resources", {})
        n = int(res.get("CPU", 0) // self.cpus) if self.cpus else 10**9
        if self.gpus:
            n = min(n, int(res.get("GPU", 0) // self.gpus))
        return n


def actor_shape(engine: EngineSpec, e: EmbedConfig, count: int) -> ActorShape:
    """What one engine actor needs of a node (once the device is resolved)."""
    return ActorShape(
        engine.gpus, e.cpus_per_actor, count, e.tensor_parallel_size, e.pipeline_parallel_size
    )


@dataclass(frozen=True)
class EngineResources:
    """What one engine's actor asks of Ray: the same for a run's actors and the service's
    replicas."""

    num_cpus: float
    num_gpus: int
    env_vars: dict[str, str]
    """The user's engine variables (embed.env_vars), which travel in a Ray runtime_env; ours
    are set by the engine itself (EngineSpec.env)."""


def engine_resources(engine: EngineSpec, e: EmbedConfig) -> EngineResources:
    return EngineResources(
        e.cpus_per_actor, engine.gpus, {k: str(v) for k, v in e.env_vars.items()}
    )


def place(
    engine: EngineSpec, e: EmbedConfig, count: int, task_cpus: float, timeout_s: float
) -> str:
    """Resolve the engine's device (embed.device=auto: cuda where the cluster has GPUs) and
    check that the cluster can host `count` engines and `task_cpus` for tasks beside them
    (fails fast; `timeout_s`: ray.placement_timeout_s). The same for runs and the service."""
    import ray

    if e.device == "auto":
        engine.device = "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
    else:
        engine.device = e.device
    placed = check_placement(actor_shape(engine, e, count), task_cpus, ray.nodes(), timeout_s)
    return f"{placed} on {engine.device}"


def describe_cluster(nodes: list[dict]) -> str:
    cpu = sum(n["Resources"].get("CPU", 0) for n in nodes)
    gpu = sum(n["Resources"].get("GPU", 0) for n in nodes)
    return f"{cpu:g} CPU, {gpu:g} GPU on {len(nodes)} node(s)"


def check_placement(
    shape: ActorShape, task_cpus: float, nodes: list[dict], timeout_s: float = 0.0
) -> str:
    """Raise ConfigError naming the shortfall; return a one-line description of the plan."""
    alive = [n for n in nodes if n.get("Alive")]
    capacity = sum(shape.fits(n) for n in alive)
    what = (
        f"{shape.gpus} GPU(s) and {shape.cpus:g} CPU(s) on one node "
        f"(embed.tensor_parallel_size={shape.tp} x embed.pipeline_parallel_size={shape.pp})"
    )
    if capacity < shape.min_actors and timeout_s > 0 and _wait_for_nodes(shape, timeout_s):
        return f"{shape.min_actors} engine(s) placed after waiting for the autoscaler"
    if capacity == 0:
        best = max((n["Resources"].get("GPU", 0) for n in alive), default=0)
        raise ConfigError(
            f"no node of this cluster ({describe_cluster(alive)}) can host one embed actor: it "
            f"needs {what}; the largest node has {best:g} GPU(s). Lower "
            "embed.tensor_parallel_size, or on an autoscaling cluster set "
            "ray.placement_timeout_s to wait for a node"
        )
    if capacity < shape.min_actors:
        raise ConfigError(
            f"embed.num_actors asks for at least {shape.min_actors} engines of {what}, but "
            f"this cluster ({describe_cluster(alive)}) holds {capacity}; use fewer, or a "
            f"range such as embed.num_actors=[1,{shape.min_actors}]"
        )
    cpus = sum(n["Resources"].get("CPU", 0) for n in alive)
    if cpus - shape.min_actors * shape.cpus < task_cpus:
        raise ConfigError(
            f"{shape.min_actors} engine(s) x {shape.cpus:g} CPU leave no CPU for the read, "
            f"tokenize and write tasks on this cluster ({describe_cluster(alive)}); lower "
            "embed.num_actors or embed.cpus_per_actor"
        )
    return (
        f"cluster {describe_cluster(alive)}; {shape.min_actors} engine(s) x "
        f"({shape.gpus} GPU, {shape.cpus:g} CPU)"
    )


def _wait_for_nodes(shape: ActorShape, timeout_s: float) -> bool:
    """Ask for the actors' bundles and give the autoscaler `timeout_s` to provide them."""
    from ray.util.placement_group import placement_group, remove_placement_group

    bundle = {"CPU": shape.cpus, **({"GPU": shape.gpus} if shape.gpus else {})}
    pg = placement_group([bundle] * shape.min_actors, strategy="SPREAD")
    try:
        return pg.wait(timeout_seconds=timeout_s)
    finally:
        remove_placement_group(pg)


class EngineWatch:
    """On the driver, for the run: ends it when engines lost with their node cannot be placed
    again within `timeout_s` (Ray would wait for a node forever). Killing them for good makes
    Ray Data fail the run; `reason` says why, and a rerun resumes."""

    def __init__(
        self, shape: ActorShape, timeout_s: float, actors: Callable[[], list], poll_s: float = 1.0
    ) -> None:
        self.shape = shape
        self.timeout_s = timeout_s
        self.actors = actors
        self.poll_s = poll_s
        self.reason: str | None = None
        self._since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="engine-watch")

    def __enter__(self) -> EngineWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s) and self.reason is None:
            try:
                self.check(time.monotonic())
            except Exception as e:  # a watcher must not break the run it watches
                log.debug("engine watch: %s", e)

    def check(self, now: float) -> None:
        import ray

        handles = {h._actor_id.hex(): h for h in self.actors()}
        states = {aid: actor_state(aid) for aid in handles}
        waiting = [aid for aid, s in states.items() if s in ("RESTARTING", "PENDING_CREATION")]
        held = [aid for aid, s in states.items() if s != "DEAD"]
        alive = [n for n in ray.nodes() if n.get("Alive")]
        capacity = sum(self.shape.fits(n) for n in alive)
        if not waiting or capacity >= len(held):
            self._since = None
            return
        if self._since is None:
            self._since = now
            log.warning(
                "%d engine(s) lost with their node wait for one that fits (%s); "
                "ray.placement_timeout_s=%g",
                len(waiting),
                describe_cluster(alive),
                self.timeout_s,
            )
        if now - self._since < self.timeout_s:
            return
        self.reason = (
            f"{len(waiting)} engine(s) lost with their node could not be placed again: each "
            f"needs {self.shape.gpus} GPU(s) and {self.shape.cpus:g} CPU(s) on one node, the "
            f"cluster now has {describe_cluster(alive)} for {len(held)} engine(s); waited "
            f"ray.placement_timeout_s={self.timeout_s:g} s. Committed shards are kept: run the "
            "same command again to resume (raise ray.placement_timeout_s to wait for a "
            "replacement node)"
        )
        for aid in waiting:
            ray.kill(handles[aid], no_restart=True)


def actor_state(actor_id: str) -> str | None:
    """ALIVE, RESTARTING, PENDING_CREATION, DEAD, ... from the GCS (no dashboard needed)."""
    from ray._private import state  # Ray's public state API needs the dashboard

    return state.actors(actor_id=actor_id).get("State")
