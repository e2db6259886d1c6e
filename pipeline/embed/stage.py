"""EmbedStage: token-budget packs -> float32 embeddings per row (one vLLM engine per actor).

One column per (layer, pooling) of the run. A row may ask the engine for several windows:
its reverse complement (merged strands: the mean of both), the alternate allele's window
(variants: scored against the reference window), or tiles of a region longer than the model
takes (their span poolings merged exactly). Identical windows in a pack are embedded once.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute

from pipeline.config import EmbedConfig, InputKind, actor_range
from pipeline.embed.engine import EngineSpec, build_llm
from pipeline.embed.outputs import (
    ALLELES,
    DEFAULT_COLUMN,
    METRICS,
    SPAN_KEY,
    TOKENS_KEY,
    DeviceHead,
    EmbeddingColumn,
    suffixed,
    tokens_column,
)
from pipeline.stages import RaySpec, Stage, StageActor, StatsSink, report_key
from pipeline.tokenize.pack import PACK_COLUMN, unpack
from pipeline.tokenize.stage import ALT_IDS, ALT_RC_IDS, RC_IDS
from pipeline.window.regions import REGION_COLUMNS, REGION_SCHEMA
from pipeline.window.stage import WINDOW_SCHEMA
from pipeline.window.variants import VARIANT_COLUMNS, VARIANT_SCHEMA
from pipeline.window.windows import mirror
from pipeline.write.layout import OUTPUT_COLUMNS, embedding_array

# Token id columns, and which embedding of the row each one feeds (strands are averaged).
ROLES = {"token_ids": "ref", RC_IDS: "ref", ALT_IDS: "alt", ALT_RC_IDS: "alt"}


class EmbeddingMismatch(RuntimeError):
    """The engine answered for other tokens than it was given: never write such a row."""


def variant_columns(columns: list[EmbeddingColumn], keep_embeddings: bool) -> list[str]:
    """The written columns of a variant run, per embedding column E."""
    out = []
    for c in columns:
        out += [suffixed(c.column, m) for m in METRICS]
        if keep_embeddings:
            out += [suffixed(c.column, a) for a in ALLELES]
    return out


@dataclass
class _Requests:
    """The distinct engine requests of one pack, and which rows use each."""

    prompts: list = field(default_factory=list)
    spans: list = field(default_factory=list)
    tokens: int = 0
    uses: int = 0
    _index: dict = field(default_factory=dict)

    def add(self, ids: np.ndarray, span: tuple[int, int] | None) -> int:
        self.uses += 1
        if span == (0, len(ids)):
            span = None
        key = (hashlib.blake2b(ids.tobytes(), digest_size=16).digest(), span)
        if key not in self._index:
            self._index[key] = len(self.prompts)
            self.prompts.append(ids)
            self.spans.append(span)
            self.tokens += len(ids)
        return self._index[key]


class EmbedStage(Stage):
    needs = (PACK_COLUMN,)

    def __init__(
        self,
        spec: EngineSpec,
        cfg: EmbedConfig | None = None,
        stats: StatsSink | None = None,
        columns: list[EmbeddingColumn] | None = None,
        kind: InputKind = InputKind.tiles,
        max_model_len: int | None = None,
        flank: int = 0,
        keep_embeddings: bool = False,
        per_token: bool = False,
    ):
        self.spec = spec
        self.cfg = cfg or EmbedConfig()
        self.stats = stats or StatsSink()
        # The default: vLLM's pooler, one column.
        self.columns = columns or [EmbeddingColumn(DEFAULT_COLUMN, -1, "mean")]
        self.kind = InputKind(kind)
        self.max_model_len = max_model_len
        self.flank = flank
        self.keep_embeddings = keep_embeddings
        self.per_token = per_token
        if self.kind == InputKind.variants:
            adds = variant_columns(self.columns, keep_embeddings)
        else:
            adds = [c.column for c in self.columns]
        self.token_columns: tuple[str, ...] = ()
        if per_token:
            suffixes = [f"_{a}" for a in ALLELES] if self.kind == InputKind.variants else [""]
            self.token_columns = tuple(
                tokens_column(k, x) for k in self._head().layers for x in suffixes
            )
        self.adds = (*adds, *self.token_columns)
        self.llm: Any = None

    def _head(self) -> DeviceHead:
        if self.spec.head is None:
            raise ValueError("this stage runs on vLLM's own pooler, not dnaembed's head")
        return DeviceHead.from_dict(self.spec.head)

    @property
    def row_columns(self) -> tuple[str, ...]:
        """The columns of a written row besides `adds`."""
        return {
            InputKind.tiles: OUTPUT_COLUMNS,
            InputKind.regions: REGION_COLUMNS,
            InputKind.variants: VARIANT_COLUMNS,
        }[self.kind]

    def output_schema(self, hidden_size: int) -> pa.Schema:
        """The written rows' schema, with no row at hand (a run that embedded nothing still
        writes a shard with it, so its output loads with its columns)."""
        window = {
            InputKind.tiles: WINDOW_SCHEMA,
            InputKind.regions: REGION_SCHEMA,
            InputKind.variants: VARIANT_SCHEMA,
        }[self.kind]
        types = {f.name: f.type for f in window}
        types["n_tokens"] = pa.int32()
        vector = pa.list_(pa.float32(), hidden_size)
        scores = {suffixed(c.column, m) for c in self.columns for m in METRICS}
        for name in self.adds:
            if name in scores:
                types[name] = pa.float64()
            elif name in self.token_columns:
                types[name] = pa.large_list(pa.list_(pa.float16(), hidden_size))
            else:
                types[name] = vector
        return pa.schema([(name, types[name]) for name in (*self.row_columns, *self.adds)])

    def ray_spec(self) -> RaySpec:
        # One pack per call and per block, so packs spread evenly over the engines.
        return RaySpec(
            batch_size=1,
            actor=EmbedActor,
            pool=actor_range(self.cfg.num_actors),
            num_cpus=self.cfg.cpus_per_actor,
            num_gpus=self.spec.gpus,
            max_restarts=self.cfg.max_restarts,
            # Ours are set in the actor (use_engine_env); the user's travel with Ray.
            env_vars={k: str(v) for k, v in self.cfg.env_vars.items()},
            block_per_row=True,
        )

    def setup(self) -> None:
        t0 = time.time()
        from vllm.inputs import TokensPrompt

        t1 = time.time()
        self.llm = build_llm(self.spec)
        t2 = time.time()
        # One tiny request first, so the first real pack does not pay for lazy initialisation.
        self.llm.encode(
            [TokensPrompt(prompt_token_ids=[0] * 16)], pooling_task="embed", use_tqdm=False
        )
        # When this engine started, imported vLLM, built the engine and was ready: what a
        # run's start-up is made of (the scale benchmark draws it).
        self.stats.put(
            report_key("engine_start", self.engine_id),
            {
                "engine_starts": [
                    {
                        "engine": self.engine_id,
                        "t0": t0,
                        "imported": t1,
                        "built": t2,
                        "ready": time.time(),
                    }
                ]
            },
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
        """Rows with `token_ids` (and any other token id column, see ROLES) -> the written
        columns: the row's own, then one per embedding (or, for variants, its scores)."""
        return self.embed(windows)[0]

    def embed(self, windows: pa.Table) -> tuple[pa.Table, _Requests]:
        """embed_windows, and the distinct requests the engine ran for it."""
        self.ensure_setup()
        requests = _Requests()
        uses = {}
        for column in (c for c in ROLES if c in windows.column_names):
            uses[column] = self._requests(windows, column, requests)
        vectors, tokens = self._encode(requests, windows)
        merged: dict[str, list[np.ndarray]] = {}
        per_token: dict[str, list[list[np.ndarray]]] = {}
        for column, parts in uses.items():
            merged.setdefault(ROLES[column], []).append(self._merge_parts(vectors, parts))
            if tokens is not None:
                rows = [np.concatenate([tokens[r] for r, _ in p]) for p in parts]
                if column in (RC_IDS, ALT_RC_IDS):  # base by base, as the forward strand
                    rows = [t[::-1] for t in rows]
                per_token.setdefault(ROLES[column], []).append(rows)
        # Each embedding: the mean over the strands the row carries.
        emb = {role: sum(v) / np.float32(len(v)) for role, v in merged.items()}
        out = windows.select(list(self.row_columns))
        if self.kind != InputKind.variants:
            for c, part in zip(self.columns, self._split(emb["ref"]), strict=True):
                out = out.append_column(c.column, embedding_array(part))
            return self._add_tokens(out, per_token), requests
        refs, alts = self._split(emb["ref"]), self._split(emb["alt"])
        for c, ref, alt in zip(self.columns, refs, alts, strict=True):
            for metric, values in zip(METRICS, _scores(ref, alt), strict=True):
                out = out.append_column(suffixed(c.column, metric), pa.array(values, pa.float64()))
            if self.keep_embeddings:
                for allele, vectors in zip(ALLELES, (ref, alt), strict=True):
                    out = out.append_column(suffixed(c.column, allele), embedding_array(vectors))
        return self._add_tokens(out, per_token), requests

    def _add_tokens(self, out: pa.Table, per_token: dict[str, list]) -> pa.Table:
        """embed.per_token: one float16 [tokens, hidden] list per row and layer (strands
        averaged base by base)."""
        if not per_token:
            return out
        for role, strands in per_token.items():
            rows = [sum(ts) / np.float32(len(ts)) for ts in zip(*strands, strict=True)]
            suffix = f"_{role}" if self.kind == InputKind.variants else ""
            for li, k in enumerate(self._head().layers):
                out = out.append_column(
                    tokens_column(k, suffix), token_array([r[:, li] for r in rows])
                )
        return out

    def _requests(self, windows: pa.Table, column: str, requests: _Requests) -> list[list]:
        """Per row, the (request, weight) parts of its `column` window: one part, or the tiles
        of a region longer than the model takes."""
        ids = windows.column(column).combine_chunks()
        offsets = ids.offsets.to_numpy()
        values = ids.values.to_numpy()
        spans = None
        if "span_start" in windows.column_names:
            spans = zip(
                windows.column("span_start").to_pylist(),
                windows.column("span_end").to_pylist(),
                strict=True,
            )
        rows = []
        for i in range(windows.num_rows):
            tokens = values[offsets[i] : offsets[i + 1]]
            n = len(tokens)
            span = (0, n) if spans is None else next(spans)
            if column in (RC_IDS, ALT_RC_IDS):
                span = mirror(span, n)
            rows.append(self._tiles(tokens, span, requests))
        return rows

    def _tiles(self, tokens: np.ndarray, span: tuple[int, int], requests: _Requests) -> list:
        n = len(tokens)
        limit = self.max_model_len
        if limit is None or n <= limit:
            return [(requests.add(tokens, span), span[1] - span[0])]
        # Tiles of the span, each with up to `flank` tokens of context either side; their
        # poolings merge exactly (mean by token counts, max of maxes, the last tile's last).
        core = limit - 2 * self.flank
        a, b = span
        parts = []
        for lo in range(a, b, core):
            hi = min(b, lo + core)
            w0, w1 = max(0, lo - self.flank), min(n, hi + self.flank)
            parts.append((requests.add(tokens[w0:w1], (lo - w0, hi - w0)), hi - lo))
        return parts

    def _encode(
        self, requests: _Requests, windows: pa.Table
    ) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """[requests, K] pooled vectors, and with embed.per_token each request's span as
        [tokens, layers, hidden]."""
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=ids.tolist()) for ids in requests.prompts]
        params = None
        if self.per_token or any(s is not None for s in requests.spans):
            params = [
                PoolingParams(
                    extra_kwargs={
                        **({SPAN_KEY: list(s)} if s is not None else {}),
                        **({TOKENS_KEY: True} if self.per_token else {}),
                    }
                    or None
                )
                for s in requests.spans
            ]
        outputs = self.llm.encode(prompts, params, pooling_task="embed", use_tqdm=False)
        if len(outputs) != len(prompts):
            raise EmbeddingMismatch(f"{len(prompts)} prompts but {len(outputs)} embeddings")
        vectors = []
        for i, (prompt, out) in enumerate(zip(prompts, outputs, strict=True)):
            got = out.prompt_token_ids
            sent = prompt["prompt_token_ids"]
            # Rows carry their own ids; this check proves the engine kept them aligned.
            if len(got) != len(sent) or got[:8] != sent[:8] or got[-8:] != sent[-8:]:
                raise EmbeddingMismatch(
                    f"engine output {i} does not match its prompt (pack of chunk "
                    f"{windows.column('chunk_id')[0].as_py()})"
                )
            vectors.append(out.outputs.data.float().numpy())
        tokens = None
        if self.per_token:
            vectors, tokens = self._split_tokens(vectors, requests)
        emb = np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)
        if emb.ndim != 2 or not np.isfinite(emb).all():
            raise EmbeddingMismatch(f"engine returned non-finite or ragged embeddings {emb.shape}")
        return emb, tokens

    def _split_tokens(
        self, vectors: list[np.ndarray], requests: _Requests
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each engine output = the pooled vector, then the span's [tokens, layers, hidden]."""
        head = self._head()
        n_l, n_p = len(head.layers), len(head.poolings)
        pooled, tokens = [], []
        for v, ids, span in zip(vectors, requests.prompts, requests.spans, strict=True):
            n = (span[1] - span[0]) if span is not None else len(ids)
            d, rest = divmod(v.size, n_l * (n_p + n))
            if rest:
                raise EmbeddingMismatch(f"engine output of {v.size} values for {n} tokens")
            pooled.append(v[: n_l * n_p * d])
            tokens.append(v[n_l * n_p * d :].reshape(n, n_l, d))
        return pooled, tokens

    def _merge_parts(self, vectors: np.ndarray, rows: list[list]) -> np.ndarray:
        """[rows, K]: each row's vector, its tiles' poolings merged where it has several."""
        out = vectors[[parts[0][0] for parts in rows]] if rows else vectors[:0]
        for i, parts in enumerate(rows):
            if len(parts) > 1:
                out[i] = self._merge(vectors[[r for r, _ in parts]], [w for _, w in parts])
        return out

    def _merge(self, tiles: np.ndarray, weights: list[int]) -> np.ndarray:
        """One vector from a region's tiles, pooling by pooling."""
        head = self._head()
        n_l, n_p = len(head.layers), len(head.poolings)
        t = tiles.reshape(len(tiles), n_l, n_p, -1).astype(np.float64)
        out = np.empty(t.shape[1:], dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
        for j, how in enumerate(head.poolings):
            if how == "mean":
                out[:, j] = np.tensordot(w, t[:, :, j], axes=1) / w.sum()
            elif how == "max":
                out[:, j] = t[:, :, j].max(axis=0)
            else:  # last: the last tile holds the span's last token
                out[:, j] = t[-1, :, j]
        return out.reshape(-1).astype(np.float32)

    def _split(self, emb: np.ndarray) -> list[np.ndarray]:
        """The engine's vector per row -> one [rows, hidden] array per column."""
        if self.spec.head is None:
            return [emb]
        head = DeviceHead.from_dict(self.spec.head)
        d = emb.shape[1] // (len(head.layers) * len(head.poolings))
        parts = []
        for c in self.columns:
            i = head.index(c.layer, c.pooling)
            parts.append(emb[:, i * d : (i + 1) * d])
        return parts

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.check_columns(batch)
        windows = unpack(batch)
        t0 = time.time()
        out, req = self.embed(windows)
        t1 = time.time()
        if out.num_rows:
            # Engine requests that completed, and when: keyed by pack, so a retried pack
            # counts once.
            self.stats.put(
                report_key("embed", out.column("chunk_id")[0].as_py()),
                {
                    "windows_embedded": out.num_rows,
                    "engine_tokens": req.tokens,
                    "engine_requests": len(req.prompts),
                    # Windows that a row asked for but an identical one in the pack answered.
                    "engine_requests_shared": req.uses - len(req.prompts),
                    "engine_busy_s": t1 - t0,
                    "engine_t0": [t0],
                    "engine_t1": [t1],
                    "engine_packs": [
                        {
                            "engine": self.engine_id,
                            "t0": t0,
                            "s": t1 - t0,
                            "windows": out.num_rows,
                            "tokens": req.tokens,
                        }
                    ],
                },
            )
        return out


def token_array(rows: list[np.ndarray]) -> pa.LargeListArray:
    """Per-row [tokens, hidden] arrays as large_list<fixed_size_list<float16>[hidden]>."""
    d = rows[0].shape[1] if rows else 0
    values = np.concatenate(rows).astype(np.float16) if rows else np.zeros((0, d), np.float16)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    inner = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), d)
    return pa.LargeListArray.from_arrays(pa.array(offsets), inner)


def _scores(ref: np.ndarray, alt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1 - cosine similarity and L2 distance of each row's two embeddings, in float64."""
    a, b = ref.astype(np.float64), alt.astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = 1.0 - np.einsum("ij,ij->i", a, b) / (na * nb)
    return cosine, np.linalg.norm(a - b, axis=1)


class EmbedActor(StageActor):
    """The Ray Data actor of EmbedStage: one engine each (Ray shows this name)."""
