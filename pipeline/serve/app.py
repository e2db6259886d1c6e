"""The HTTP side: a FastAPI app as a Ray Serve deployment, one engine per replica.

Routes: POST /v1/embeddings and GET /v1/models (OpenAI's API, pipeline/serve/api.py),
GET /health (the replica answers) and GET /ready (its engine has answered). Batch runs with
embed.engines=serve:NAME call `describe` and `encode` through Ray's handles instead. Ray
Serve runs the HTTP proxy, routes requests to replicas, scales them and drains them on
shutdown; one machine and a cluster run the same code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from pipeline.config import actor_range
from pipeline.embed.placement import engine_resources
from pipeline.embed.warm import describe
from pipeline.serve.api import (
    ApiError,
    default_column,
    embeddings_response,
    parse_request,
)
from pipeline.serve.service import Embedder, Encode, EngineQueue, ServicePlan

# Ray Serve's replica logger: its lines go to the replica's log file and, with
# ray.log_to_driver, to the server's log.
log = logging.getLogger("ray.serve")

app = FastAPI(title="dnaembed", summary="OpenAI-compatible DNA embeddings")


def key_digest(key: str | None) -> str | None:
    """What replicas compare a client's key with: its SHA-256, so the key itself never
    leaves the process that read it."""
    return hashlib.sha256(key.encode()).hexdigest() if key else None


def _error(e: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


@serve.deployment(name="dnaembed")
@serve.ingress(app)
class EmbeddingServer:
    def __init__(self, plan: ServicePlan, digest: str | None):
        self.plan = plan
        self.digest = digest
        self.created = int(time.time())
        # Which replica answered (a response header): for users' and our own debugging.
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.queue = EngineQueue(Embedder(plan), plan.cfg.embed.max_batch_tokens)
        self.queue.start()

    def check_health(self) -> None:
        """Ray Serve calls it every few seconds: a replica whose engine failed is replaced."""
        if self.queue.broken is not None:
            raise RuntimeError(f"the engine failed: {type(self.queue.broken).__name__}")

    # ---- probes (no key: load balancers and Kubernetes call them) ----

    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(self) -> JSONResponse:
        ok = self.queue.embedder.dimension is not None
        return JSONResponse(
            {"status": "ready" if ok else "starting", "model": self.plan.name},
            status_code=200 if ok else 503,
        )

    # ---- batch runs' engine calls (Ray handles, not HTTP: pipeline/embed/warm.py) ----

    async def describe(self) -> dict:
        """What this replica's engine computes, for a run to check against its own."""
        p = self.plan
        return describe(p.engine, p.columns, p.cfg.model.name)

    async def encode(self, prompts: list, extras: list | None) -> list:
        """A run's engine call: its raw outputs, in the order of its prompts."""
        return await self.queue.submit(Encode(prompts, extras))

    # ---- OpenAI API ----

    @app.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        try:
            self._authorize(request)
        except ApiError as e:
            return _error(e)
        p = self.plan
        info = {
            "id": p.name,
            "object": "model",
            "created": self.created,
            "owned_by": "dnaembed",
            "max_model_len": p.cfg.model.max_model_len,
            "dnaembed": {
                "model": p.cfg.model.name,
                "columns": p.column_names,
                "default_column": default_column(p.column_names),
                "dimension": self.queue.embedder.dimension,
                "strands": str(p.cfg.serve.strands),
                "dtype": str(p.cfg.model.dtype),
                "add_special_tokens": p.cfg.model.add_special_tokens,
                "model_keys": p.model_keys,
            },
        }
        return JSONResponse({"object": "list", "data": [info]})

    @app.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> JSONResponse:
        t0 = time.perf_counter()
        rid = uuid.uuid4().hex[:16]
        s = self.plan.cfg.serve
        what: dict[str, Any] = {}
        try:
            self._authorize(request)
            body = await self._body(request)
            req = parse_request(
                body,
                self.plan.name,
                self.plan.column_names,
                self.queue.embedder.dimension or 0,
                s.strands,
                s.max_inputs,
            )
            what = {"inputs": len(req.inputs), "bases": sum(map(len, req.inputs))}
            if s.log_sequences:
                what["sequences"] = req.inputs
            job = self.queue.embedder.prepare(req, rid)
            vectors = await self.queue.submit(job)
            answer = JSONResponse(
                embeddings_response(req, self.plan.name, vectors, job.tokens),
                headers={"x-dnaembed-replica": self.replica},
            )
            what.update(columns=req.columns, strands=str(req.strands))
            self._log(rid, 200, t0, what)
            return answer
        except ApiError as e:
            where = {"index": e.index, "position": e.position}
            where = {k: v for k, v in where.items() if v is not None}
            self._log(rid, e.status, t0, {**what, "code": e.code, **where})
            return _error(e)
        except Exception as e:
            # A fault of ours or of the engine: its type in the answer, the traceback in the
            # replica's log (our messages hold no sequence).
            log.exception("request %s failed", rid)
            return _error(ApiError(500, f"internal error ({type(e).__name__})", "internal_error"))

    # ---- helpers ----

    def _authorize(self, request: Request) -> None:
        if self.digest is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            hashlib.sha256(given.strip().encode()).hexdigest(), self.digest
        )
        if not ok:
            raise ApiError(
                401,
                "missing or wrong API key (send it as 'Authorization: Bearer KEY')",
                "invalid_api_key",
            )

    async def _body(self, request: Request) -> Any:
        limit = self.plan.cfg.serve.max_request_bytes
        too_large = ApiError(
            413,
            f"request body over serve.max_request_bytes={limit:,} bytes",
            "request_too_large",
        )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except ValueError as e:
            raise ApiError(400, f"the request body is not JSON ({e})", "invalid_json") from None

    def _log(self, rid: str, status: int, t0: float, what: dict) -> None:
        if self.plan.cfg.serve.log_requests:
            fields = " ".join(f"{k}={v}" for k, v in what.items())
            took = time.perf_counter() - t0
            log.info("embeddings %s status=%d %s time_s=%.3f", rid, status, fields, took)


def deployment_options(plan: ServicePlan) -> dict[str, Any]:
    """Ray Serve options of the deployment: replicas (fixed or autoscaled), each one engine
    actor with the resources a batch run's engine has."""
    s = plan.cfg.serve
    need = engine_resources(plan.engine, plan.cfg.embed)
    actor: dict[str, Any] = {"num_cpus": need.num_cpus, "num_gpus": need.num_gpus}
    if need.env_vars:
        actor["runtime_env"] = {"env_vars": need.env_vars}
    opts: dict[str, Any] = {
        "ray_actor_options": actor,
        "max_ongoing_requests": s.max_ongoing_requests,
        "max_queued_requests": s.max_queued_requests,
        "graceful_shutdown_timeout_s": s.shutdown_timeout_s,
        "graceful_shutdown_wait_loop_s": 0.5,
    }
    lo, hi = actor_range(s.replicas, "serve.replicas")
    if lo == hi:
        opts["num_replicas"] = lo
    else:
        opts["autoscaling_config"] = {
            "min_replicas": lo,
            "max_replicas": hi,
            "target_ongoing_requests": s.target_ongoing_requests,
        }
    return opts
