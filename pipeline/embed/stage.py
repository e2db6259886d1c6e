"""EmbedStage: token-budget packs -> written rows, through one engine core per actor.

The batch adapter of the engine core (pipeline/embed/core.py): it turns a pack's rows into the
core's items (per row and role, its windows: forward, and the reverse complement where the row
carries one), and the core's named columns back into rows, as the run's kind of input
declares them (pipeline/kinds/).
"""

from __future__ import annotations

import functools
import os
import time

import numpy as np
import pyarrow as pa

from pipeline.config import Config, EmbedConfig, actor_range
from pipeline.embed.core import Embedded, EmbeddingMismatch, EngineCore, Window
from pipeline.embed.placement import engine_resources
from pipeline.kinds import KINDS, Kind
from pipeline.rows import CHUNK_ID, PACK_COLUMN, SPAN_END, SPAN_START, packed
from pipeline.stages import RaySpec, Stage, StageActor, StatsSink, report_key
from pipeline.tokenize.pack import unpack
from pipeline.window.windows import mirror


class EmbedStage(Stage):
    def __init__(
        self,
        core: EngineCore,
        kind: Kind | None = None,
        cfg: EmbedConfig | None = None,
        stats: StatsSink | None = None,
        calls: int | None = None,
    ):
        self.core = core
        # On a deployment's engines (core.spec.deployment): how many packs are in flight at
        # once, one per actor of this stage (which then holds no engine, only its core).
        self.calls = calls
        self.kind = kind or KINDS["tiles"](Config())
        self.cfg = cfg or EmbedConfig()
        self.stats = stats or StatsSink()
        # Inside the packs: the row's own columns, each role's forward token ids, and the
        # span where the kind pools over one (the reverse strands only where merged).
        self.needs = (
            PACK_COLUMN,
            *(packed(c) for c in self.kind.row_columns),
            *(packed(forward) for forward, _ in self.kind.roles.values()),
            *((packed(SPAN_START), packed(SPAN_END)) if self.kind.spans() else ()),
        )
        self.adds = (
            *self.kind.outputs(core.columns),
            *self.kind.state_columns(core.state_layers),
            *(self.kind.score_columns() if core.scores else ()),
        )

    @property
    def columns(self) -> list:
        return self.core.columns

    @property
    def row_columns(self) -> tuple[str, ...]:
        """The columns of a written row besides `adds`."""
        return self.kind.row_columns

    def columns_out(self, columns_in: tuple[str, ...]) -> tuple[str, ...]:
        return (*self.row_columns, *self.adds)

    def output_schema(self, hidden_size: int) -> pa.Schema:
        """The written rows' schema, with no row at hand (a run that embedded nothing still
        writes a shard with it, so its output loads with its columns)."""
        return self.kind.schema(self.core.columns, self.core.state_layers, hidden_size)

    def ray_spec(self) -> RaySpec:
        if self.core.spec.deployment is not None:
            n = self.calls or 2
            return RaySpec(
                batch_size=1,
                actor=EmbedActor,
                pool=(n, n),
                num_cpus=self.cfg.cpus_per_actor,
                block_per_row=True,
            )
        need = engine_resources(self.core.spec, self.cfg)
        # One pack per call and per block, so packs spread evenly over the engines.
        return RaySpec(
            batch_size=1,
            actor=EmbedActor,
            pool=actor_range(self.cfg.num_actors),
            num_cpus=need.num_cpus,
            num_gpus=need.num_gpus,
            max_restarts=self.cfg.max_restarts,
            env_vars=need.env_vars,
            block_per_row=True,
        )

    def setup(self) -> None:
        # When this engine started, imported vLLM, built the engine and was ready: what a
        # run's start-up is made of (the scale benchmark draws it). Meanwhile the progress
        # line shows what it waits for.
        times = self.core.start(lambda what: self.stats.phase(self.engine_id, what))
        self.stats.put(
            report_key("engine_start", self.engine_id),
            {"engine_starts": [{"engine": self.engine_id, **times}]},
        )

    @functools.cached_property
    def engine_id(self) -> str:
        """This engine's name in the run's timings: its Ray actor, or its process."""
        try:
            import ray

            if ray.is_initialized():
                actor = ray.get_runtime_context().get_actor_id()
                if actor:
                    return actor[:12]
        except ImportError:
            pass
        return f"pid{os.getpid()}"

    def embed_windows(self, windows: pa.Table) -> pa.Table:
        """Rows with token ids (per role of the kind: forward and reverse complement) -> the
        written columns: the row's own, then the engine's."""
        return self.embed(windows)[0]

    def embed(self, windows: pa.Table) -> tuple[pa.Table, Embedded]:
        """embed_windows, and the core's answer (its counts)."""
        self.ensure_setup()
        spans = None
        if SPAN_START in windows.column_names:
            spans = list(
                zip(
                    windows.column(SPAN_START).to_pylist(),
                    windows.column(SPAN_END).to_pylist(),
                    strict=True,
                )
            )
        ids = {}
        for role, (forward, reverse) in self.kind.roles.items():
            if forward in windows.column_names:
                rc = _rows(windows, reverse) if reverse in windows.column_names else None
                ids[role] = (_rows(windows, forward), rc)
        head = self.core.head
        ids = self.kind.engine_ids(windows, ids, head.alphabet if head is not None else ())
        ranges = self.kind.score_ranges(ids, spans) if self.core.scores else None
        items: list[list[Window]] = []
        slices: dict[str, tuple[int, int]] = {}
        for role, (fwd, rc) in ids.items():
            start = len(items)
            for i, f in enumerate(fwd):
                span = spans[i] if spans is not None else None
                strands = [(f, span, False)]
                if rc is not None:
                    back = mirror(span, len(rc[i])) if span is not None else None
                    strands.append((rc[i], back, True))
                scored = ranges[role][i] if ranges is not None else [(None, None)] * len(strands)
                items.append(
                    [
                        Window(w, s, reverse=r, score=g, site=site)
                        for (w, s, r), (g, site) in zip(strands, scored, strict=True)
                    ]
                )
            slices[role] = (start, len(items))
        try:
            got = self.core.embed(items)
        except EmbeddingMismatch as e:
            chunk = windows.column(CHUNK_ID)[0].as_py() if windows.num_rows else None
            raise EmbeddingMismatch(f"{e} (pack of chunk {chunk})") from e
        vectors = {
            role: {c: v[a:b] for c, v in got.vectors.items()} for role, (a, b) in slices.items()
        }
        states = {
            role: {name: s[a:b] for name, s in got.states.items()}
            for role, (a, b) in slices.items()
            if got.states
        }
        scores = {role: got.scores[a:b] for role, (a, b) in slices.items()} if got.scores else None
        rows = windows.select(list(self.row_columns))
        return self.kind.written(rows, self.core.columns, vectors, states, scores), got

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_columns(batch)
        windows = unpack(batch)
        t0 = time.time()
        out, got = self.embed(windows)
        t1 = time.time()
        if out.num_rows:
            # Engine requests that completed, and when: keyed by pack, so a retried pack
            # counts once.
            self.stats.put(
                report_key("embed", out.column(CHUNK_ID)[0].as_py()),
                {
                    "windows_embedded": out.num_rows,
                    "engine_tokens": got.tokens,
                    # Tokens the engine computed: those of a cached prefix are not.
                    "engine_tokens_computed": got.computed,
                    "engine_requests": got.requests,
                    # Windows that a row asked for but an identical one in the pack answered.
                    "engine_requests_shared": got.shared,
                    "engine_busy_s": t1 - t0,
                    "engine_t0": [t0],
                    "engine_t1": [t1],
                    "engine_packs": [
                        {
                            "engine": self.engine_id,
                            "t0": t0,
                            "s": t1 - t0,
                            "windows": out.num_rows,
                            "tokens": got.tokens,
                        }
                    ],
                },
            )
        return out


def _rows(windows: pa.Table, column: str) -> list[np.ndarray]:
    """A token id column as one array per row (views of one buffer)."""
    ids = windows.column(column).combine_chunks()
    offsets = ids.offsets.to_numpy()
    values = ids.values.to_numpy()
    return [values[offsets[i] : offsets[i + 1]] for i in range(windows.num_rows)]


class EmbedActor(StageActor):
    """The Ray Data actor of EmbedStage: one engine each (Ray shows this name)."""
