"""`dnaembed-serve`: the embedding service, a Hydra app like `dnaembed`.

    dnaembed-serve model=genos_1_2b 'embed.layers=[6,-1]' serve.port=8000
    dnaembed-serve model=genos_10b embed.tensor_parallel_size=2 serve.replicas=4 ray=cluster

Starts (or joins, ray=cluster) Ray, checks that the cluster can host the replicas, runs the
deployment on Ray Serve and prints one line when every replica's engine answers; SIGTERM or
SIGINT (Ctrl-C) drain it: requests in flight finish (up to serve.shutdown_timeout_s), new
ones are refused, then it exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.cli import hydra_main, report, user_error
from pipeline.compose import to_config
from pipeline.config import ServiceConfig, actor_range
from pipeline.console import library_logs_routed, logging_to
from pipeline.errors import ConfigError
from pipeline.serve.service import ServicePlan

PROG = "dnaembed-serve"
API_KEY_ENV = "DNAEMBED_API_KEY"
log = logging.getLogger(__name__)
Echo = Callable[[str], None]


def shown(cfg: ServiceConfig) -> str:
    """The resolved config as YAML, the API key masked."""
    masked = replace(cfg, serve=replace(cfg.serve, api_key="<set>" if cfg.serve.api_key else None))
    return OmegaConf.to_yaml(OmegaConf.structured(masked))


def api_key(cfg: ServiceConfig) -> str | None:
    return cfg.serve.api_key or os.environ.get(API_KEY_ENV) or None


def check_port(host: str, port: int) -> None:
    """Fail before Ray starts when the port is taken (Ray Serve's proxy would retry it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(
                f"serve.host={host} serve.port={port}: cannot listen there ({e.strerror})"
            ) from None


def serve_forever(cfg: ServiceConfig, echo: Echo = print, stop: threading.Event | None = None):
    """Run the service until `stop` is set (SIGTERM/SIGINT set it from the CLI)."""
    with logging_to(cfg.log):
        log.info("resolved config:\n%s", shown(cfg))
        _serve(cfg, echo, stop or threading.Event())


def _serve(cfg: ServiceConfig, echo: Echo, stop: threading.Event) -> None:
    from pipeline.cluster import ray_session
    from pipeline.embed.placement import place
    from pipeline.serve.service import plan_service

    s = cfg.serve
    plan = plan_service(cfg)
    check_port(s.host, s.port)
    with ray_session(cfg):
        from ray import serve

        lo, _ = actor_range(s.replicas, "serve.replicas")
        placed = place(plan.engine, cfg.embed, lo, 0, cfg.ray.placement_timeout_s)
        key = api_key(cfg)
        echo(
            f"{PROG}: model {plan.name} ({cfg.model.name}), columns {plan.column_names}, "
            f"{placed}; starting"
        )
        with _quiet("ray.serve", not cfg.log.verbose):  # "Started Serve": not news
            serve.start(
                http_options={"host": s.host, "port": s.port},
                proxy_location={"every_node": "EveryNode", "head_only": "HeadOnly"}[
                    str(s.proxy_location)
                ],
            )
        try:
            with library_logs_routed(cfg.log):  # Serve's own logger exists from here on
                _run_app(plan, key, echo, stop)
        finally:
            serve.shutdown()
        echo(f"{PROG}: stopped")


@contextmanager
def _quiet(name: str, on: bool) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    if on:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _run_app(plan: ServicePlan, key: str | None, echo: Echo, stop: threading.Event) -> None:
    from ray import serve

    from pipeline.serve.app import EmbeddingServer, deployment_options, key_digest

    s = plan.cfg.serve
    app = EmbeddingServer.options(**deployment_options(plan)).bind(plan, key_digest(key))
    # The application's name is the served model's: batch runs find its engines by it
    # (embed.engines=serve:NAME).
    serve.run(app, name=plan.name, route_prefix="/")
    if threading.current_thread() is threading.main_thread():
        # Ours, not Ray's (ray.init installs a SIGTERM handler that exits at once).
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    host = "localhost" if s.host in ("127.0.0.1", "0.0.0.0", "::") else s.host
    echo(
        f"{PROG}: ready at http://{host}:{s.port}/v1 (model {plan.name!r}"
        + (", API key required" if key else "")
        + f"; batch runs: embed.engines=serve:{plan.name})"
    )
    stop.wait()
    echo(f"{PROG}: stopping: requests in flight finish (up to {s.shutdown_timeout_s:g} s)")
    # The app first, while the HTTP proxy still runs: its replicas take no new requests and
    # answer the ones they hold; then Serve itself.
    serve.delete(plan.name)


def _task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    stop = threading.Event()
    try:
        config = to_config(cfg)
        if config.log.file is None:
            run_dir = Path(HydraConfig.get().runtime.output_dir)
            config.log.file = str(run_dir / "dnaembed-serve.log")
            # Our record of the run, the key masked (Hydra's own .hydra/ is off: it would
            # hold the key as given on the command line).
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "config.yaml").write_text(shown(config))
        serve_forever(config, stop=stop)
    except Exception as e:
        message = user_error(e)
        if message is None:
            raise
        raise SystemExit(report(message, PROG)) from None


def main(argv: list[str] | None = None) -> int:
    return hydra_main(_task, "serve", PROG, argv)


if __name__ == "__main__":
    sys.exit(main())
