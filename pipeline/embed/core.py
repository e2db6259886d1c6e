"""The engine core: token ids (with spans and strands) in, named float columns out.

Batch runs (pipeline/embed/stage.py, rows of packs) and the service (pipeline/serve/service.py,
requests) both call it; neither knows the other's inputs. One core owns one engine: it builds
it (with the environment its spec declares) and calls it in a thread of its own, whichever
thread asks (Ray Data calls an actor's function from another thread than the one that built
it); after a failed call it is broken for good (its process is replaced, never reused). It
asks the engine for each distinct (tokens, span, scored range) once per call, tiles a window
longer than the model takes and merges the tiles' poolings, and averages an item's strands.

With scores (a head with an alphabet) it also returns, per window, the log-probabilities of
the tokens in its scored range (pipeline/embed/scores.py turns them into columns). An engine
that scores alone caches prefixes: of windows that share their first blocks of tokens (a
variant's reference and alternates) one computes them and the others only what follows; the
scores a cached block skipped are taken from the window that computed them (in a causal model
a token with the same preceding tokens has the same prediction).
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.embed.engine import EngineSpec, build_llm
from pipeline.embed.outputs import (
    SCORE_FIXED,
    SCORE_KEY,
    SPAN_KEY,
    TOKENS_KEY,
    DeviceHead,
    EmbeddingColumn,
)
from pipeline.rows import tokens_column


class EmbeddingMismatch(RuntimeError):
    """The engine answered for other tokens than it was given: never write such a result."""


class EngineBroken(RuntimeError):
    """An earlier call failed: this engine gives no more answers."""


@dataclass(frozen=True)
class Window:
    """One strand of an item, as the engine sees it."""

    ids: np.ndarray
    span: tuple[int, int] | None = None
    """The token range [a, b) pooled over; None: the whole window."""
    reverse: bool = False
    """The reverse complement: its per-token states come back base by base in forward order."""
    score: tuple[int, int] | None = None
    """Scores: the token range [a, b) whose log-probabilities are wanted (token 0 has no
    context: it is never scored); None: none."""
    site: int | None = None
    """Variants: the first token where this window and its allele's twin differ."""


@dataclass
class TokenScores:
    """One window's scored tokens, in the window's own order: t = start, start + 1, ..."""

    start: int
    logp: np.ndarray
    """[m] log P(x_t | x_<t) (NaN: not scored, e.g. token 0)."""
    entropy: np.ndarray
    """[m] entropy of the prediction of x_t over the vocabulary (nats)."""
    alphabet: np.ndarray
    """[m, len(alphabet)] log-probs of the head's alphabet (A, C, G, T[, N]) at t."""
    reverse: bool = False
    site: int | None = None
    """The window's `site`."""
    length: int = 0
    """The window's tokens."""
    base: np.ndarray | None = None
    """[m] each scored token's place in the alphabet (0-3: A, C, G, T; 4: N), -1 for any
    other token."""


Phase = Callable[[str], None]
"""Told what an engine's start waits for ("importing vLLM", ...)."""

Item = Sequence[Window]
"""What one answer is made of: its strands' windows (their embeddings averaged)."""


@dataclass
class Embedded:
    """The answer to one call, per item in the order given."""

    vectors: dict[str, np.ndarray]
    """Embedding column -> [items, hidden] float32."""
    states: dict[str, list[np.ndarray]] = field(default_factory=dict)
    """With per-token output: `tokens_l<k>` -> per item its span's [tokens, hidden] float32."""
    requests: int = 0
    """Distinct engine requests run."""
    tokens: int = 0
    """Tokens the engine ran."""
    shared: int = 0
    """Windows asked for but answered by an identical one of the same call."""
    computed: int = 0
    """Tokens the engine computed: `tokens` less those a cached prefix answered."""
    scores: list[list[TokenScores]] = field(default_factory=list)
    """With scores: per item, per strand (the item's order) its scored tokens."""


@dataclass
class _Requests:
    """The distinct engine requests of one call, and which windows use each."""

    prompts: list = field(default_factory=list)
    spans: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    tokens: int = 0
    uses: int = 0
    _index: dict = field(default_factory=dict)

    def add(
        self, ids: np.ndarray, span: tuple[int, int] | None, score: tuple[int, int] | None = None
    ) -> int:
        self.uses += 1
        if span == (0, len(ids)):
            span = None
        key = (hashlib.blake2b(ids.tobytes(), digest_size=16).digest(), span, score)
        if key not in self._index:
            self._index[key] = len(self.prompts)
            self.prompts.append(ids)
            self.spans.append(span)
            self.scores.append(score)
            self.tokens += len(ids)
        return self._index[key]


class EngineCore:
    """One engine and what is computed around it. Cheap to build and to pickle; `start()`
    builds the engine in the thread that will call it."""

    def __init__(
        self,
        spec: EngineSpec,
        columns: list[EmbeddingColumn],
        per_token: bool = False,
        tile_tokens: int | None = None,
        flank: int = 0,
    ):
        self.spec = spec
        self.columns = columns
        self.per_token = per_token
        # Windows longer than tile_tokens are tiled (regions), each tile with up to `flank`
        # tokens of context either side; None: never (a longer window is the caller's error).
        self.tile_tokens = tile_tokens
        self.flank = flank
        self.engine: Any = None
        """LocalEngine, or a deployment's (pipeline/embed/warm.py): token ids in, raw
        outputs out."""
        self.dimension: int | None = None
        self.block_size = 0
        self.broken: BaseException | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._thread: int | None = None

    @functools.cached_property
    def head(self) -> DeviceHead | None:
        # Read once: the scores path asks for it per request.
        return DeviceHead.from_dict(self.spec.head) if self.spec.head is not None else None

    @functools.cached_property
    def _alphabet_places(self) -> np.ndarray:
        """Token id -> its place in the head's alphabet (-1: none); ids past the table's
        end are looked up at its last entry, which is -1."""
        head = self.head
        assert head is not None
        lut = np.full(max(head.alphabet) + 2, -1, np.int64)
        lut[list(head.alphabet)] = np.arange(len(head.alphabet))
        return lut

    @property
    def scores(self) -> bool:
        """The engine runs the LM head (its head has an alphabet)."""
        return self.head is not None and self.head.scores

    @property
    def state_layers(self) -> tuple[int, ...]:
        """The layers whose per-token states are returned (none without per-token output)."""
        if not self.per_token:
            return ()
        if self.head is None:
            raise ValueError("per-token output runs on dnaembed's head, not vLLM's pooler")
        return self.head.layers

    @property
    def state_columns(self) -> tuple[str, ...]:
        """The per-token outputs: `tokens_l<k>` per layer of `state_layers`."""
        return tuple(tokens_column(k) for k in self.state_layers)

    def start(self, phase: Phase | None = None) -> dict[str, float]:
        """Build the engine (or reach the deployment's) and run one tiny request (the first
        real call then pays no lazy initialisation). Returns when it started, imported vLLM,
        built the engine and was ready: what start-up is made of. `phase(what)` is told what
        it waits for as it goes (the run's progress line shows it)."""
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="engine")
        return self._in_thread(self._start, phase or (lambda _: None))

    def embed(self, items: Sequence[Item]) -> Embedded:
        """Each item's embedding columns (and per-token states), its strands averaged."""
        self._check_usable()
        return self._in_thread(self._embed, items)

    def encode(self, prompts: list[np.ndarray], extras: list[dict | None] | None) -> list:
        """The engine's raw answers to token ids and their per-request options: what the
        deployment's engines run for a batch run's cores (pipeline/embed/warm.py)."""
        self._check_usable()
        return self._in_thread(self._encode_raw, prompts, extras)

    def _check_usable(self) -> None:
        if self._pool is None:
            raise RuntimeError("the engine core is not started")
        if self.broken is not None:
            raise EngineBroken(f"an earlier engine call failed: {self.broken!r}") from self.broken

    def _in_thread(self, fn: Any, *args: Any) -> Any:
        """`fn(*args)` in the engine's thread (directly when already there)."""
        if threading.get_ident() == self._thread:
            return fn(*args)
        assert self._pool is not None
        return self._pool.submit(fn, *args).result()

    def _start(self, phase: Phase) -> dict[str, float]:
        self._thread = threading.get_ident()
        t0 = time.time()
        if self.spec.deployment is not None:
            from pipeline.embed.warm import DeploymentEngine

            phase(f"reaching deployment {self.spec.deployment!r}")
            engine: Any = DeploymentEngine(self.spec.deployment)
            t1 = t2 = time.time()
        else:
            phase("importing vLLM")
            import vllm  # noqa: F401  (timed apart from the build)

            t1 = time.time()
            phase("building the engine: loading weights, sizing the KV cache")
            engine = LocalEngine(self.spec)
            t2 = time.time()
        phase("warming up")
        (out,) = engine.encode([np.zeros(16, np.int64)], None, None)
        self.engine = engine
        size = out.size
        head = self.head
        if head is None:
            self.dimension = size
        elif head.layers:
            self.dimension = size // (len(head.layers) * len(head.poolings))
        self.block_size = engine.block_size
        phase("ready")
        return {"t0": t0, "imported": t1, "built": t2, "ready": time.time()}

    def _encode_raw(self, prompts: list[np.ndarray], extras: list[dict | None] | None) -> list:
        try:
            return self.engine.encode(prompts, extras, None)
        except BaseException as e:
            self.broken = e
            raise

    def _embed(self, items: Sequence[Item]) -> Embedded:
        requests = _Requests()
        # Per item, per strand: the (request, weight, offset) parts of its window. Asked strand by
        # strand (every item's first window, then every second one), so the engine gets the
        # forward windows of a call together.
        parts: list[list[list]] = [[] for _ in items]
        for j in range(max((len(item) for item in items), default=0)):
            for item, got in zip(items, parts, strict=True):
                if len(item) > j:
                    got.append(self._tiles(item[j], requests))
        try:
            vectors, states, scores, computed = self._encode(requests)
        except BaseException as e:
            self.broken = e
            raise
        out = Embedded(
            self._split(self._merge_strands(vectors, parts)) if self.columns else {},
            requests=len(requests.prompts),
            tokens=requests.tokens,
            shared=requests.uses - len(requests.prompts),
            computed=computed,
        )
        if states is not None:
            out.states = self._per_token(states, items, parts)
        if scores is not None:
            out.scores = self._item_scores(scores, requests, items, parts)
        return out

    def _tiles(self, window: Window, requests: _Requests) -> list[tuple[int, int]]:
        tokens = window.ids
        n = len(tokens)
        span = window.span or (0, n)
        limit = self.tile_tokens
        score = _scored(window.score)
        if limit is None or n <= limit:
            return [(requests.add(tokens, span, score), span[1] - span[0], 0)]
        # Tiles of the span; their poolings merge exactly (mean by token counts, max of
        # maxes, the last tile's last); each scores the part of the range in its own span.
        core = limit - 2 * self.flank
        a, b = span
        tiles = []
        for lo in range(a, b, core):
            hi = min(b, lo + core)
            w0, w1 = max(0, lo - self.flank), min(n, hi + self.flank)
            part = None
            if window.score is not None:
                s0, s1 = max(lo, window.score[0]), min(hi, window.score[1])
                part = _scored((s0 - w0, s1 - w0)) if s0 < s1 else None
            tiles.append((requests.add(tokens[w0:w1], (lo - w0, hi - w0), part), hi - lo, w0))
        return tiles

    @property
    def shares_prefixes(self) -> bool:
        """The engine caches prefixes: it scores alone (no pooling needs every state) windows
        that share them."""
        return self.scores and not self.head.layers and self.spec.prefix_caching

    def _encode(
        self, requests: _Requests
    ) -> tuple[np.ndarray, list[np.ndarray] | None, list[np.ndarray] | None, int]:
        """[requests, K] pooled vectors; with per-token output each request's span as
        [tokens, layers, hidden]; with scores each request's [b - a, width] score block; and
        the tokens computed."""
        n = len(requests.prompts)
        raw: list[np.ndarray | None] = [None] * n
        cached = [0] * n
        # Cached blocks of this call only (its salt), so every state a cached block skipped
        # was computed by a window of this call (vLLM shares blocks within a step too).
        salt = uuid.uuid4().hex if self.shares_prefixes else None
        self._run(requests, list(range(n)), raw, cached, salt)
        vectors = [v for v in raw if v is not None]
        assert len(vectors) == n
        scores = None
        if self.scores:
            vectors, scores = self._split_scores(vectors, requests)
            if self.shares_prefixes:
                self._fill_cached(requests, scores, cached)
        states = None
        if self.per_token:
            vectors, states = self._split_states(vectors, requests)
        emb = np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)
        if emb.ndim != 2 or not np.isfinite(emb).all():
            raise EmbeddingMismatch(f"engine returned non-finite or ragged embeddings {emb.shape}")
        return emb, states, scores, requests.tokens - sum(cached)

    def _run(
        self,
        requests: _Requests,
        which: list[int],
        raw: list,
        cached: list[int],
        salt: str | None,
    ) -> None:
        """Run the requests `which` (indices) in one engine call; outputs into `raw`."""
        if not which:
            return
        spans = [requests.spans[r] for r in which]
        ranges = [requests.scores[r] for r in which]
        extras = None
        if self.per_token or any(s is not None for s in spans + ranges):
            extras = [
                {
                    **({SPAN_KEY: list(s)} if s is not None else {}),
                    **({TOKENS_KEY: True} if self.per_token else {}),
                    **({SCORE_KEY: list(g)} if g is not None else {}),
                }
                or None
                for s, g in zip(spans, ranges, strict=True)
            ]
        outputs = self.engine.encode([requests.prompts[r] for r in which], extras, salt)
        if len(outputs) != len(which):
            raise EmbeddingMismatch(f"{len(which)} prompts but {len(outputs)} embeddings")
        for r, out in zip(which, outputs, strict=True):
            raw[r] = out
            if requests.scores[r] is not None:
                cached[r] = int(raw[r][-self._score_size(requests.scores[r])])

    def _groups(self, requests: _Requests) -> list[list[int]]:
        """Requests that may share cached blocks: those whose first block is the same (a
        block is cached with the whole prefix it ends)."""
        size = max(1, self.block_size)
        groups: dict[bytes, list[int]] = {}
        for r, ids in enumerate(requests.prompts):
            key = ids[:size].tobytes() if len(ids) > size else b"\0" + ids.tobytes()
            groups.setdefault(key, []).append(r)
        return list(groups.values())

    def _score_size(self, score: tuple[int, int]) -> int:
        """Values of one request's score block: a header row (its cached token count first),
        then a row per scored token."""
        head = self.head
        assert head is not None
        return (1 + score[1] - score[0]) * head.score_width

    def _split_scores(
        self, vectors: list[np.ndarray], requests: _Requests
    ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """Each engine output = the rest, then (when asked) its score block."""
        head = self.head
        assert head is not None
        rest, scores = [], []
        for v, score in zip(vectors, requests.scores, strict=True):
            if score is None:
                rest.append(v)
                scores.append(None)
                continue
            size = self._score_size(score)
            if v.size < size:
                raise EmbeddingMismatch(f"engine output of {v.size} values for scores {score}")
            rest.append(v[: v.size - size])
            block = v[v.size - size + head.score_width :]
            scores.append(block.reshape(score[1] - score[0], head.score_width))
        return rest, scores

    def _fill_cached(
        self, requests: _Requests, scores: list[np.ndarray | None], cached: list[int]
    ) -> None:
        """Scored tokens a cached prefix skipped (NaN), from a window of the same group that
        has them: a token t of two windows with the same first t tokens has the same
        prediction; its own log-prob is that prediction's at its token. What no window has
        is computed again, uncached."""
        lut = self._alphabet_places  # -1: a token outside it, which cannot be filled
        missing = []
        for group in self._groups(requests):
            for r in group:
                block = scores[r]
                if block is None or not cached[r]:
                    continue
                a = requests.scores[r][0]
                holes = np.flatnonzero(np.isnan(block[:, 0]))
                ids = requests.prompts[r]
                for d in group:
                    if d == r or scores[d] is None or not holes.size:
                        continue
                    donor, da = scores[d], requests.scores[d][0]
                    t = a + holes
                    j = t - da
                    tok = lut[np.minimum(ids[t], len(lut) - 1)]
                    ok = (t <= common_prefix(ids, requests.prompts[d])) & (j >= 0)
                    ok &= j < len(donor)
                    ok &= tok >= 0
                    jj = np.where(ok, j, 0)
                    ok &= ~np.isnan(donor[jj, 0])
                    h, jj, tok = holes[ok], jj[ok], tok[ok]
                    block[h, 1:] = donor[jj, 1:]
                    block[h, 0] = donor[jj, SCORE_FIXED + tok]
                    holes = np.flatnonzero(np.isnan(block[:, 0]))
                if holes.size:
                    missing.append(r)
        if missing:
            raw: list = [None] * len(requests.prompts)
            again = [0] * len(requests.prompts)
            # A unique salt: nothing cached, every state computed.
            self._run(requests, missing, raw, again, uuid.uuid4().hex)
            _, fresh = self._split_scores([raw[r] for r in missing], _subset(requests, missing))
            for r, block in zip(missing, fresh, strict=True):
                scores[r] = block
                cached[r] = 0

    def _item_scores(
        self,
        scores: list[np.ndarray | None],
        requests: _Requests,
        items: Sequence[Item],
        parts: list[list[list]],
    ) -> list[list[TokenScores | None]]:
        """Per item and strand, its window's scored tokens (tiles joined)."""
        head = self.head
        assert head is not None
        out = []
        for item, strands in zip(items, parts, strict=True):
            per: list[TokenScores | None] = []
            for window, tiles in zip(item, strands, strict=True):
                if window.score is None:
                    per.append(None)
                    continue
                a, b = window.score
                block = np.full((b - a, head.score_width), np.nan, np.float32)
                for r, _, offset in tiles:
                    got, rng = scores[r], requests.scores[r]
                    if got is not None:
                        lo = offset + rng[0] - a
                        block[lo : lo + len(got)] = got
                alphabet = block[:, SCORE_FIXED:]
                ids = np.asarray(window.ids[a:b])
                lut = self._alphabet_places
                per.append(
                    TokenScores(
                        a,
                        block[:, 0],
                        block[:, 1],
                        alphabet,
                        window.reverse,
                        window.site,
                        len(window.ids),
                        lut[np.minimum(ids, len(lut) - 1)],
                    )
                )
            out.append(per)
        return out

    def _split_states(
        self, vectors: list[np.ndarray], requests: _Requests
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each engine output = the pooled vector, then the span's [tokens, layers, hidden]."""
        head = self.head
        assert head is not None
        n_l, n_p = len(head.layers), len(head.poolings)
        pooled, states = [], []
        for v, ids, span in zip(vectors, requests.prompts, requests.spans, strict=True):
            n = (span[1] - span[0]) if span is not None else len(ids)
            d, rest = divmod(v.size, n_l * (n_p + n))
            if rest:
                raise EmbeddingMismatch(f"engine output of {v.size} values for {n} tokens")
            pooled.append(v[: n_l * n_p * d])
            states.append(v[n_l * n_p * d :].reshape(n, n_l, d))
        return pooled, states

    def _merge_strands(self, vectors: np.ndarray, parts: list[list[list]]) -> np.ndarray:
        """[items, K]: the mean over each item's strands of its windows' vectors."""
        strands = max((len(p) for p in parts), default=0)
        acc = np.zeros((len(parts), vectors.shape[1] if vectors.size else 0), np.float32)
        count = np.zeros((len(parts), 1), np.float32)
        for j in range(strands):
            rows = [i for i, p in enumerate(parts) if len(p) > j]
            acc[rows] += self._merge_tiles(vectors, [parts[i][j] for i in rows])
            count[rows] += 1
        return acc / np.maximum(count, np.float32(1))

    def _merge_tiles(self, vectors: np.ndarray, windows: list[list]) -> np.ndarray:
        """[windows, K]: each window's vector, its tiles' poolings merged where it has several."""
        out = vectors[[tiles[0][0] for tiles in windows]] if windows else vectors[:0]
        for i, tiles in enumerate(windows):
            if len(tiles) > 1:
                out[i] = self._merge(vectors[[r for r, _, _ in tiles]], [w for _, w, _ in tiles])
        return out

    def _merge(self, tiles: np.ndarray, weights: list[int]) -> np.ndarray:
        """One vector from a window's tiles, pooling by pooling."""
        head = self.head
        assert head is not None
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

    def _split(self, emb: np.ndarray) -> dict[str, np.ndarray]:
        """The engine's vector per item -> one [items, hidden] array per column."""
        head = self.head
        if head is None:
            return {self.columns[0].column: emb}
        d = emb.shape[1] // (len(head.layers) * len(head.poolings)) if emb.size else 0
        out = {}
        for c in self.columns:
            i = head.index(c.layer, c.pooling)
            out[c.column] = emb[:, i * d : (i + 1) * d]
        return out

    def _per_token(
        self, states: list[np.ndarray], items: Sequence[Item], parts: list[list[list]]
    ) -> dict[str, list[np.ndarray]]:
        """Per item: its span's states per layer, tiles joined, strands averaged base by base."""
        merged = []
        for item, strands in zip(items, parts, strict=True):
            per_strand = []
            for window, tiles in zip(item, strands, strict=True):
                s = np.concatenate([states[r] for r, _, _ in tiles])
                per_strand.append(s[::-1] if window.reverse else s)
            merged.append(sum(per_strand) / np.float32(len(per_strand)))
        return {name: [m[:, li] for m in merged] for li, name in enumerate(self.state_columns)}


def _scored(score: tuple[int, int] | None) -> tuple[int, int] | None:
    """A range to ask the engine for: token 0 has no context, so it starts at 1."""
    if score is None:
        return None
    a, b = max(1, score[0]), score[1]
    return (a, b) if a < b else None


def common_prefix(x: np.ndarray, y: np.ndarray) -> int:
    """How many first tokens two windows share."""
    n = min(len(x), len(y))
    differ = x[:n] != y[:n]
    # argmax finds the first difference without listing them all (a variant's windows
    # differ from the fork to their end).
    first = int(differ.argmax()) if n else 0
    return first if n and differ[first] else n


def _subset(requests: _Requests, which: list[int]) -> _Requests:
    sub = _Requests()
    sub.prompts = [requests.prompts[r] for r in which]
    sub.spans = [requests.spans[r] for r in which]
    sub.scores = [requests.scores[r] for r in which]
    return sub


class LocalEngine:
    """A vLLM engine in this process: token ids and per-request options in, each prompt's
    raw output (float32) out, checked against its prompt."""

    def __init__(self, spec: EngineSpec):
        self.llm = build_llm(spec)

    @property
    def block_size(self) -> int:
        """The engine's KV-cache block size (0 when it does not say)."""
        try:
            return int(self.llm.llm_engine.vllm_config.cache_config.block_size)
        except (AttributeError, TypeError, ValueError):
            return 0

    def encode(
        self,
        prompts: Sequence[np.ndarray],
        extras: Sequence[dict | None] | None,
        salt: str | None,
    ) -> list[np.ndarray]:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        sent = []
        for ids in prompts:
            prompt = TokensPrompt(prompt_token_ids=np.asarray(ids).tolist())
            if salt is not None:
                # Cached blocks of this call only: every state a cached block skipped was
                # computed by a window of the same call.
                prompt["cache_salt"] = salt
            sent.append(prompt)
        params = None
        if extras is not None:
            params = [PoolingParams(extra_kwargs=x) for x in extras]
        outputs = self.llm.encode(sent, params, pooling_task="embed", use_tqdm=False)
        if len(outputs) != len(sent):
            raise EmbeddingMismatch(f"{len(sent)} prompts but {len(outputs)} embeddings")
        raw = []
        for r, (prompt, out) in enumerate(zip(sent, outputs, strict=True)):
            got, ids = out.prompt_token_ids, prompt["prompt_token_ids"]
            # Callers match answers by their own ids; this proves the engine kept the order.
            if len(got) != len(ids) or got[:8] != ids[:8] or got[-8:] != ids[-8:]:
                raise EmbeddingMismatch(f"engine output {r} does not match its prompt")
            raw.append(out.outputs.data.float().numpy())
        return raw
