"""Warm engines: a batch run's engine cores calling the engines of a running `dnaembed-serve`
deployment on the same Ray cluster (embed.engines=serve:NAME), through Ray Serve's handles.

The run keeps everything else of its own: reading, windows, packs, tiles and strands (its
EngineCore), exactly-once shards and the lease. Only the engine's calls (token ids and each
request's options in, raw outputs out) go to the deployment's replicas, which queue them
beside the HTTP requests they answer (pipeline/serve/service.py). A deployment computes what
the run's own engine would or the run is refused before it reads anything (`attach`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from pipeline.embed.engine import FINGERPRINTED_KEYS, EngineSpec
from pipeline.embed.outputs import DeviceHead, EmbeddingColumn
from pipeline.errors import ClusterError, ConfigError

log = logging.getLogger(__name__)

# Ray Serve's name of the deployment inside a dnaembed-serve application.
DEPLOYMENT = "dnaembed"
# How often a call waiting for its answer checks that the deployment still runs.
POLL_S = 5.0


class DeploymentGone(ClusterError):
    """The deployment a run's engines were on stopped answering."""


@dataclass
class Offer:
    """What a deployment computes, as it describes itself."""

    name: str
    spec: EngineSpec
    columns: list[EmbeddingColumn]
    model: str
    """Its model.name."""
    replicas: int = 1

    @property
    def shown(self) -> str:
        head = "dnaembed's engine model" if self.spec.head else "vLLM's pooler"
        cols = ", ".join(c.column for c in self.columns)
        return (
            f"model {self.model} ({self.spec.model}, {self.spec.dtype}), columns [{cols}] on "
            f"{head}, {self.replicas} replica(s)"
        )


def describe(spec: EngineSpec, columns: list[EmbeddingColumn], model: str) -> dict:
    """A deployment's description of itself (what `Offer.of` reads on the run's side)."""
    return {
        "spec": {f.name: getattr(spec, f.name) for f in fields(spec)},
        "columns": [(c.column, c.layer, c.pooling) for c in columns],
        "model": model,
    }


def _status(name: str) -> Any:
    """The application's status overview, or None when Serve does not run it."""
    from ray import serve

    try:
        return serve.status().applications.get(name)
    except Exception as e:  # no controller, or the cluster went: the same for the run
        log.debug("serve status: %s", e)
        return None


def _running() -> list[str]:
    from ray import serve

    try:
        return sorted(serve.status().applications)
    except Exception:
        return []


def _handle(name: str) -> Any:
    from ray import serve

    app = _status(name)
    if app is None or str(getattr(app.status, "value", app.status)) != "RUNNING":
        others = [a for a in _running() if a != name]
        state = "is not running" if app is None else f"is {app.status}"
        raise ClusterError(
            f"embed.engines=serve:{name}: the deployment {name!r} {state} on this Ray cluster"
            + (f" (it runs {', '.join(others)})" if others else "")
            + "; start it (dnaembed-serve ... serve.name=NAME ray=cluster) or use the run's "
            "own engines: embed.engines=own"
        )
    return serve.get_app_handle(name)


def offer(name: str, timeout_s: float = 60.0) -> Offer:
    """Ask the running deployment `name` what it computes (fails naming it)."""
    handle = _handle(name)
    try:
        got = handle.describe.remote().result(timeout_s=timeout_s)
    except Exception as e:
        raise ClusterError(
            f"embed.engines=serve:{name}: the deployment {name!r} did not describe its engines "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    spec = EngineSpec(**got["spec"])
    columns = [EmbeddingColumn(*c) for c in got["columns"]]
    app = _status(name)
    replicas = 1
    if app is not None and DEPLOYMENT in app.deployments:
        states = app.deployments[DEPLOYMENT].replica_states
        replicas = max(1, sum(n for s, n in states.items() if str(s).endswith("RUNNING")))
    return Offer(name, spec, columns, got["model"], replicas)


def attach(
    name: str, run: EngineSpec, columns: list[EmbeddingColumn], model: str, needs: Needs
) -> tuple[EngineSpec, Offer]:
    """The run's engine spec on deployment `name`: its model and head, checked to compute
    what the run asks (ConfigError naming every key that differs, and what it offers)."""
    got = offer(name)
    wrong = mismatches(run, columns, model, needs, got)
    if wrong:
        raise ConfigError(
            f"embed.engines=serve:{name}: the deployment does not compute what this run asks: "
            + "; ".join(wrong)
            + f". It offers {got.shown}. Start a deployment with the run's settings, or use "
            "the run's own engines: embed.engines=own"
        )
    return replace(got.spec, deployment=name), got


@dataclass(frozen=True)
class Needs:
    """What a run needs of an engine beyond its columns."""

    spans: bool = False
    """Pools over part of a window (regions) or returns per-token states."""
    per_token: bool = False
    scores: bool = False
    """Runs the LM head (variant and mutagenesis scores, tracks)."""


def mismatches(
    run: EngineSpec, columns: list[EmbeddingColumn], model: str, needs: Needs, got: Offer
) -> list[str]:
    """The differences that would make the deployment's answers other than the run's."""
    d = got.spec
    out = []
    if (run.model, run.revision) != (d.model, d.revision):
        out.append(f"model: run {model} ({run.model}), deployment {got.model} ({d.model})")
    for key, a, b in (
        ("model.tokenizer", run.tokenizer, d.tokenizer),
        ("model.dtype", run.dtype, d.dtype),
        ("model.quantization", run.quantization, d.quantization),
        ("model.trust_remote_code", run.trust_remote_code, d.trust_remote_code),
    ):
        if a != b:
            out.append(f"{key}: run {a}, deployment {b}")
    if run.max_model_len > d.max_model_len:
        out.append(
            f"model.max_model_len: run {run.max_model_len:,}, deployment {d.max_model_len:,} "
            "(a run's windows must fit the deployment's)"
        )
    for key in FINGERPRINTED_KEYS:
        a, b = run.engine_kwargs.get(key), d.engine_kwargs.get(key)
        if a != b:
            out.append(f"embed.engine_kwargs.{key}: run {a}, deployment {b}")
    if needs.scores:
        out.append("scores: the run computes scores (the LM head), which no deployment serves")
    offered = {(c.layer, c.pooling) for c in got.columns}
    missing = [c.column for c in columns if (c.layer, c.pooling) not in offered]
    if missing:
        out.append(
            f"embed.layers x embed.poolings: the run asks for {', '.join(missing)}, which the "
            f"deployment does not compute"
        )
    if (needs.spans or needs.per_token) and d.head is None:
        out.append(
            "input.regions or embed.per_token: the run pools over intervals or keeps per-token "
            "states, which needs dnaembed's engine model; the deployment runs vLLM's pooler "
            "(start it with serve.spans=true)"
        )
    if needs.per_token and d.head is not None:
        layers = DeviceHead.from_dict(d.head).layers
        asked = tuple(sorted({c.layer for c in columns}))
        if tuple(layers) != asked:
            out.append(
                f"embed.per_token: the run keeps the states of layers {list(asked)}, the "
                f"deployment computes layers {list(layers)}"
            )
    return out


class DeploymentEngine:
    """The engine of an EngineCore, on a deployment's replicas: the calls LocalEngine takes,
    answered by whichever replica Ray Serve routes each to."""

    def __init__(self, name: str):
        self.name = name
        self.handle = _handle(name)
        self.block_size = 0

    def encode(
        self,
        prompts: Sequence[np.ndarray],
        extras: Sequence[dict | None] | None,
        salt: str | None,
    ) -> list[np.ndarray]:
        if salt is not None:
            raise RuntimeError("cached prefixes are not shared with a deployment's engines")
        ids = [np.asarray(p, dtype=np.int32) for p in prompts]
        try:
            response = self.handle.encode.remote(ids, list(extras) if extras else None)
            while True:
                try:
                    return response.result(timeout_s=POLL_S)
                except TimeoutError:
                    # A pack takes long on a busy engine; a deployment that was stopped
                    # answers never: tell them apart.
                    if _status(self.name) is None:
                        raise self._gone("it was stopped") from None
        except DeploymentGone:
            raise
        except Exception as e:
            app = _status(self.name)
            why = "it was stopped" if app is None else f"it is {app.status}"
            raise self._gone(f"{why}; {type(e).__name__}: {_first_line(e)}") from e

    def _gone(self, why: str) -> DeploymentGone:
        return DeploymentGone(
            f"the deployment {self.name!r} (embed.engines=serve:{self.name}) stopped answering "
            f"the run: {why}. Committed shards are kept: run the same command again once it "
            "runs, or with the run's own engines (embed.engines=own) to resume"
        )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""
