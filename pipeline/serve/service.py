"""What a request computes: the engine core of a batch run, on sequences that arrive over
HTTP instead of from files, read with the batch pipeline's sequence rules and tokenizer.

`plan_service` runs on the driver (config checks, model, tokenizer, head: fails fast, as a
batch run's plan does); `Embedder` runs in each replica around one engine core, and
`EngineQueue` batches the requests a replica holds into engine calls of up to
embed.max_batch_tokens tokens, one call at a time, in the one thread that owns the engine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import ServiceConfig, Strands, actor_range
from pipeline.embed.core import EngineCore, Window
from pipeline.embed.engine import SERVICE_ENGINE_ENV, EngineSpec
from pipeline.embed.outputs import EmbeddingColumn
from pipeline.embed.plan import EnginePlan, plan_engine
from pipeline.errors import ConfigError
from pipeline.identity import model_key_fields
from pipeline.read.fastx import InvalidBase, normalise
from pipeline.serve.api import EmbeddingRequest, bad_request
from pipeline.tokenize.tokenizer import DnaTokenizer, UnknownToken
from pipeline.util import stable_hash
from pipeline.window.windows import reverse_complement

# Per strand of a request: the engine windows it needs ('f' forward, 'r' reverse complement).
_WINDOWS = {Strands.forward: "f", Strands.reverse: "r", Strands.merge: "fr"}


@dataclass
class ServicePlan:
    """Everything decided on the driver before a replica starts (travels to each one)."""

    cfg: ServiceConfig
    engine: EngineSpec
    tokenizer: DnaTokenizer
    columns: list[EmbeddingColumn]
    name: str
    model_keys: dict[str, str]

    @property
    def column_names(self) -> list[str]:
        return [c.column for c in self.columns]


def plan_service(cfg: ServiceConfig) -> ServicePlan:
    """Check the config and the model, load the tokenizer, decide the head. Fails fast."""
    e = cfg.embed
    if actor_range(e.num_actors) != (1, 1):
        raise ConfigError(
            f"embed.num_actors={e.num_actors!r} is for batch runs; the service's engines are "
            "its replicas: serve.replicas (an int, or [min, max] to autoscale)"
        )
    if e.per_token:
        raise ConfigError("embed.per_token is for region and variant runs, not the service")
    # serve.spans: dnaembed's model even for vLLM's default head, so that batch runs of
    # regions and per-token output can use these engines (pipeline/embed/warm.py).
    engine = plan_engine(cfg, spans=cfg.serve.spans, base_env=SERVICE_ENGINE_ENV)
    return ServicePlan(
        cfg,
        engine.spec,
        engine.tokenizer,
        engine.columns,
        cfg.serve.name or cfg.model.name,
        model_keys(cfg, engine),
    )


def model_keys(cfg: ServiceConfig, engine: EnginePlan) -> dict[str, str]:
    """The model key a batch run's chunk ids carry for the same model, head and sequence
    rules (`model` in its manifest), per strands: a user can check that a served embedding
    is the one a batch output holds."""
    keys = {}
    for strands in Strands:
        fields_ = model_key_fields(
            cfg.model,
            cfg.embed,
            cfg.input,
            engine.layers,
            merge_strands=strands == Strands.merge,
            flank=0,
        )
        keys[str(strands)] = stable_hash({**fields_, **engine.affecting})
    return keys


@dataclass
class Job:
    """One request's engine windows, ready to run: token ids per (input, strand window)."""

    rid: str
    strands: Strands
    n_inputs: int
    bases: int
    tokens: int  # the inputs' own tokens (OpenAI's usage), whatever the strands
    windows: dict[str, np.ndarray] = field(default_factory=dict)  # chunk id -> token ids

    @property
    def engine_tokens(self) -> int:
        return sum(len(v) for v in self.windows.values())


def _chunk(rid: str, i: int, w: str) -> str:
    return f"{rid}/{i}/{w}"


class Embedder:
    """One replica's engine: requests in, {column: vector} per input out."""

    def __init__(self, plan: ServicePlan):
        self.plan = plan
        self.core = EngineCore(plan.engine, plan.columns)
        self.tokenizer = plan.tokenizer

    @property
    def dimension(self) -> int | None:
        """The embeddings' size, once the engine has answered."""
        return self.core.dimension

    def setup(self) -> None:
        """Build the engine and run one request (call in the engine's thread)."""
        self.core.start()

    def prepare(self, req: EmbeddingRequest, rid: str) -> Job:
        """Validate and tokenize a request's inputs as a batch run reads a record; raise
        ApiError (400) naming the input and position of the first fault."""
        rules = self.plan.cfg.input
        seqs = []
        for i, s in enumerate(req.inputs):
            try:
                seqs.append(
                    normalise(
                        s,
                        f"input[{i}]",
                        "request",
                        rules.invalid_chars,
                        rules.ambiguity_codes,
                        rules.rna,
                    )
                )
            except InvalidBase as e:
                hint = (
                    " (RNA: the server reads U as T with input.rna=to_t)" if e.char == "U" else ""
                )
                raise bad_request(
                    f"input[{i}] has {e.char!r} at position {e.position} (0-based), outside "
                    f"IUPAC DNA{hint}",
                    "invalid_dna",
                    "input",
                    index=i,
                    position=e.position,
                ) from None
        ids = self._encode(seqs)
        job = Job(rid, req.strands, len(seqs), sum(map(len, seqs)), sum(map(len, ids)))
        windows = _WINDOWS[req.strands]
        rc_ids = self._encode([reverse_complement(s) for s in seqs]) if "r" in windows else None
        for i, fwd in enumerate(ids):
            if "f" in windows:
                job.windows[_chunk(rid, i, "f")] = fwd
            if rc_ids is not None:
                job.windows[_chunk(rid, i, "r")] = rc_ids[i]
        return job

    def _encode(self, seqs: list[str]) -> list[np.ndarray]:
        try:
            ids = self.tokenizer.encode(pa.array(seqs, pa.large_string()))
        except UnknownToken as e:
            raise bad_request(
                f"input[{e.row}] has {e.char!r} at position {e.offset} (0-based) and the "
                "model's tokenizer has no token for it (the server keeps IUPAC codes: "
                "input.ambiguity_codes=keep)",
                "unknown_token",
                "input",
                index=e.row,
                position=e.offset,
            ) from None
        offsets = ids.offsets.to_numpy()
        values = ids.values.to_numpy()
        out = [values[offsets[i] : offsets[i + 1]] for i in range(len(seqs))]
        limit = self.plan.cfg.model.max_model_len
        for i, v in enumerate(out):
            if len(v) > limit:
                fits = limit - len(self.tokenizer.prefix) if self.tokenizer.char_level else None
                raise bad_request(
                    f"input[{i}] is {len(seqs[i]):,} bases, {len(v):,} tokens: more than the "
                    f"model takes (model.max_model_len={limit:,}); embeddings are never "
                    "truncated: split it",
                    "input_too_long",
                    "input",
                    index=i,
                    **({"position": fits} if fits is not None else {}),
                )
        return out

    def run(self, jobs: list[Job]) -> list[list[dict[str, np.ndarray]]]:
        """Embed several requests in one engine call; per job, per input: {column: vector}
        (strands averaged by the core, as a batch run merges them)."""
        items = [
            [
                Window(job.windows[_chunk(job.rid, i, w)], reverse=w == "r")
                for w in _WINDOWS[job.strands]
            ]
            for job in jobs
            for i in range(job.n_inputs)
        ]
        vectors = self.core.embed(items).vectors
        results, row = [], 0
        for job in jobs:
            results.append(
                [{c: v[row + i] for c, v in vectors.items()} for i in range(job.n_inputs)]
            )
            row += job.n_inputs
        return results


@dataclass
class Encode:
    """A batch run's engine call (pipeline/embed/warm.py): token ids and each request's
    options, answered with the engine's raw outputs."""

    prompts: list[np.ndarray]
    extras: list[dict | None] | None

    @property
    def engine_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


class EngineQueue:
    """Requests wait here while the engine runs; whenever it is free, the waiting ones go in
    one call (up to `budget` engine tokens, at least one request). One thread owns the
    engine: it is built and called there only.

    A batch run's call (Encode, a whole pack) runs alone, in its turn: it is already as
    large as an engine call should be, and its rows stay in a call of their own."""

    def __init__(self, embedder: Embedder, budget: int):
        self.embedder = embedder
        self.budget = budget
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engine")
        self._waiting: deque[tuple[Job | Encode, asyncio.Future]] = deque()
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        # The error of an engine call that failed: requests are checked before they reach
        # the engine, so a failure there is the engine's, and the replica is replaced.
        self.broken: Exception | None = None

    def start(self) -> None:
        """Build the engine (blocks until it answers)."""
        self._pool.submit(self.embedder.setup).result()

    async def submit(self, job: Job | Encode) -> Any:
        if self._loop_task is None:
            self._wake = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((job, future))
        assert self._wake is not None
        self._wake.set()
        return await future

    def _take(self) -> list[tuple[Job | Encode, asyncio.Future]]:
        batch: list[tuple[Job | Encode, asyncio.Future]] = []
        tokens = 0
        while self._waiting:
            job, future = self._waiting[0]
            if future.done():  # the client went away before its turn
                self._waiting.popleft()
                continue
            if batch and (
                isinstance(job, Encode)
                or isinstance(batch[0][0], Encode)
                or tokens + job.engine_tokens > self.budget
            ):
                break
            self._waiting.popleft()
            batch.append((job, future))
            tokens += job.engine_tokens
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while batch := self._take():
                first = batch[0][0]
                try:
                    if isinstance(first, Encode):
                        results = [
                            await loop.run_in_executor(
                                self._pool, self.embedder.core.encode, first.prompts, first.extras
                            )
                        ]
                    else:
                        results = await loop.run_in_executor(
                            self._pool, self.embedder.run, [j for j, _ in batch]
                        )
                except Exception as e:  # every request of the call fails alike
                    self.broken = e
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
