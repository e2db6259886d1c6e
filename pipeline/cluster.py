"""Ray for a run or the service: joined or started, and where the driver's own actors go."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from pipeline.config import LogConfig, RayConfig
from pipeline.console import library_logs_routed, worker_output_to_log


class RayKeys(Protocol):
    """The config groups Ray is started from: a run's and the service's have both."""

    ray: RayConfig
    log: LogConfig


@contextmanager
def ray_session(cfg: RayKeys) -> Iterator[None]:
    """Ray for this run or service: joined or started (then stopped at the end)."""
    import ray
    import ray.data  # sets up its loggers on import: before they are routed

    with library_logs_routed(cfg.log):
        started = not ray.is_initialized()
        if started:
            ray.init(
                # "local": a new Ray for this run, even where `ray start` left one running.
                address=cfg.ray.address or "local",
                num_cpus=cfg.ray.num_cpus if cfg.ray.address is None else None,
                object_store_memory=(
                    cfg.ray.object_store_memory if cfg.ray.address is None else None
                ),
                include_dashboard=False,
                log_to_driver=cfg.ray.log_to_driver,
                logging_level=str(cfg.ray.log_level),
            )
            logging.getLogger("ray.data").setLevel(str(cfg.ray.log_level))
        try:
            with worker_output_to_log(cfg.log):
                yield
        finally:
            if started:
                ray.shutdown()


def on_this_node() -> Any:
    """Pin an actor to the driver's node: the run's bookkeeping must not die with a worker
    node (it would end the run); the driver's own node going means the run is gone anyway."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
