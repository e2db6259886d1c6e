"""Can this Ray cluster host the embed actors? Answer before starting them, not by hanging.

An engine with tensor_parallel_size x pipeline_parallel_size = k GPUs needs k GPUs on one
node (its workers are subprocesses of the actor). Ray would queue an actor that fits nowhere
forever; we check the nodes first, and on an autoscaling cluster wait a bounded time for a
node that fits (`ray.placement_timeout_s`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError


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
