"""Kinds of input: what a run reads, and everything that follows from it.

Each kind is one object (one module of this package): the input key that selects it, its
read and window stages, the columns and order of its written rows, the columns its engine
answers become, its manifest entries and its header line. The kind of a run is decided once,
in the plan (`kind_of`); nothing else asks what was read. A new kind of input is a new module
here that subclasses `Kind` (its key in `InputConfig` beside the others).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from pipeline.errors import ConfigError
from pipeline.rows import (
    N_TOKENS,
    TOKEN_IDS,
    TOKEN_IDS_RC,
    embedding_array,
    token_states_array,
    token_states_type,
    tokens_column,
    vector_type,
)

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.embed.core import TokenScores
    from pipeline.embed.outputs import EmbeddingColumn
    from pipeline.read.sources import Source
    from pipeline.stages import Stage, StatsSink
    from pipeline.tokenize.tokenizer import DnaTokenizer


DEFAULT_ROLE = ""
"""The role of a kind that embeds one sequence per row (its columns carry no suffix)."""


def _is_set(value: Any) -> bool:
    return value not in (None, "", [], ())


class Kind:
    """One kind of input. Instances hold the run's config; cheap to build and to pickle."""

    name: ClassVar[str]
    """Its name in manifests, Parquet metadata and the row order."""
    key: ClassVar[str]
    """The `input.<key>` that selects it."""
    usage: ClassVar[str]
    """How to ask for it, in messages (`input.variants=VCF`)."""
    whole: ClassVar[str] = ""
    """Without a reference: what is done with its files, in messages."""
    reference: ClassVar[bool] = False
    """Reads loci of input.reference (an indexed FASTA) rather than files to tile."""
    takes_flank: ClassVar[bool] = False
    """window.flank applies."""
    per_token: ClassVar[bool] = True
    """embed.per_token applies."""
    tiled: ClassVar[bool] = False
    """A window longer than the model takes is tiled by the engine core, not refused."""
    roles: ClassVar[dict[str, tuple[str, str]]] = {DEFAULT_ROLE: (TOKEN_IDS, TOKEN_IDS_RC)}
    """What the engine embeds per row: role -> (token ids, reverse-complement token ids)."""
    row_columns: ClassVar[tuple[str, ...]]
    """The written row's own columns (before the engine's)."""
    window_schema: ClassVar[pa.Schema]
    """The window stage's rows (types of the row's own columns)."""
    row_order: ClassVar[list[tuple[str, str]]]
    """How written rows are sorted (each shard, and the loaders)."""
    coordinates: ClassVar[str]
    """The manifest's `coordinates`: how to read the row's positions."""
    loci: ClassVar[str] = "records"
    """What one input line is, in messages."""
    shown_coordinates: ClassVar[str] = "0-based half-open coordinates"
    """How `locus` shows a row's position (output summaries)."""
    llr: ClassVar[bool] = False
    """scores=[llr] applies: each row has a reference and an alternate window."""
    scores_only: ClassVar[bool] = False
    """Its rows are scores alone (no embeddings)."""
    shares_prefixes: ClassVar[bool] = True
    """Scored alone, its windows share prefixes (the engine caches them)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    # ---- the config ----

    def check(self) -> None:
        """Checks across keys that depend on the kind."""
        cfg = self.cfg
        if cfg.window.flank and not self.takes_flank:
            raise ConfigError("window.flank applies to input.regions only")
        if cfg.embed.per_token and not self.per_token:
            raise ConfigError("embed.per_token applies to input.regions and input.variants")
        self.check_scores()

    def check_scores(self) -> None:
        from pipeline.config import Score

        cfg, s = self.cfg, self.cfg.scores
        if Score.llr in s.compute and not self.llr:
            raise ConfigError(
                "scores=[llr] applies to input.variants and input.mutagenesis (a reference "
                f"and an alternate per row), not input.{self.key}; use scores=[loglik]"
            )
        if s.per_token and not self.per_token:
            raise ConfigError("scores.per_token applies to input.regions and input.variants")
        if not self.scores_only and not cfg.embed.layers:
            if not self.scores_asked():
                raise ConfigError(
                    "embed.layers=[] computes no embeddings: ask for scores too (scores=["
                    f"{'llr' if self.llr else 'loglik'}]), or list layers"
                )
            if cfg.embed.per_token:
                raise ConfigError("embed.per_token stores the states of embed.layers: list some")

    def scores_asked(self) -> bool:
        """The run computes scores (the LM head runs)."""
        return self.cfg.scores.asked or self.scores_only

    def embeddings_asked(self) -> bool:
        """The run computes embeddings (embed.layers x embed.poolings)."""
        return not self.scores_only and bool(self.cfg.embed.layers)

    def fingerprint(self) -> dict[str, Any]:
        """Fingerprint fields of this kind beyond the common ones."""
        return {}

    def spans(self) -> bool:
        """Rows pool over a part of their window (only our engine model does)."""
        return False

    def per_token_scores(self) -> bool:
        return self.cfg.scores.per_token

    def rows_per_shard(self, asked: int) -> int:
        """Rows per shard (output.rows_per_shard, or fewer where the kind's rows are large)."""
        return asked

    def paths(self) -> Any:
        return getattr(self.cfg.input, self.key)

    # ---- the plan ----

    def check_fits(self, tokenizer: DnaTokenizer) -> None:
        from pipeline.tokenize.tokenizer import check_window_fits

        check_window_fits(tokenizer, self.cfg.window.size, self.cfg.model.max_model_len)

    def window_tokens(self, tokenizer: DnaTokenizer) -> int:
        """The most tokens one window has."""
        return tokenizer.max_tokens(self.cfg.window.size)

    def items(self, sources: list[Source], storage: dict) -> list[dict]:
        """The read tasks' rows: one per file."""
        return [{"source": s.uri} for s in sources]

    def estimated_tokens(self, sources: list[Source]) -> int | None:
        """The engine tokens of the whole input, roughly; None when unknown (then: large)."""
        return None

    def read_stages(self, model_key: str, stats: StatsSink) -> list[Stage]:
        """The stages from a read task's row to windows with their sequences."""
        raise NotImplementedError

    def precheck(self, sources: list[Source], model_key: str) -> None:
        """The input's cheap checks on the driver (pipeline/precheck.py). By default: the
        first loci of each file through the kind's own read and window stages."""
        from pipeline.precheck import check_loci
        from pipeline.stages import StatsSink

        check_loci(self.loci, sources, *self.read_stages(model_key, StatsSink()))

    # ---- what is written ----

    def outputs(self, columns: list[EmbeddingColumn]) -> list[str]:
        """The columns the engine's answers become, in written order."""
        return [c.column for c in columns]

    def output_types(self, columns: list[EmbeddingColumn], hidden: int) -> dict[str, pa.DataType]:
        return {name: vector_type(hidden) for name in self.outputs(columns)}

    def state_columns(self, layers: tuple[int, ...]) -> list[str]:
        """embed.per_token's columns, per layer of the head (and role)."""
        suffixes = [self.role_suffix(r) for r in self.roles]
        return [tokens_column(k, s) for k in layers for s in suffixes]

    def role_suffix(self, role: str) -> str:
        return f"_{role}" if role != DEFAULT_ROLE else ""

    def score_columns(self) -> list[str]:
        """The score columns written (pipeline/embed/scores.py), in order: loglik per role,
        then the kind's own (llr), then per-token ones per role."""
        from pipeline.config import Score
        from pipeline.embed.scores import LOGLIK, PER_TOKEN

        s = self.cfg.scores
        suffixes = [self.role_suffix(r) for r in self.roles]
        out = []
        if Score.loglik in s.compute:
            out += [c + x for x in suffixes for c in LOGLIK]
        out += self.own_scores()
        if self.per_token_scores():
            out += [c + x for x in suffixes for c in PER_TOKEN]
        return out

    def own_scores(self) -> list[str]:
        """Score columns of the kind itself (llr)."""
        return []

    def engine_ids(
        self,
        rows: pa.Table,
        ids: dict[str, tuple[list[np.ndarray], list[np.ndarray] | None]],
        alphabet: tuple[int, ...],
    ) -> dict[str, tuple[list[np.ndarray], list[np.ndarray] | None]]:
        """Per role, the rows' windows for the engine (forward, reverse complement or None):
        by default those the rows carry; a kind may make more from them (mutagenesis: its
        alternates). `alphabet`: the token ids of A, C, G, T[, N] (scores only)."""
        return ids

    def score_ranges(
        self,
        ids: dict[str, tuple[list[np.ndarray], list[np.ndarray] | None]],
        spans: list[tuple[int, int]] | None,
    ) -> dict[str, list[list[tuple[tuple[int, int], int | None]]]]:
        """Per role, row and strand: the (token range to score, site) of its window. By
        default the span pooled over (the whole window without one), mirrored on the
        reverse strand."""
        from pipeline.window.windows import mirror

        out: dict[str, list] = {}
        for role, (fwd, rc) in ids.items():
            per = []
            for i, f in enumerate(fwd):
                span = spans[i] if spans is not None else (0, len(f))
                strands = [(span, None)]
                if rc is not None:
                    strands.append((mirror(span, len(rc[i])), None))
                per.append(strands)
            out[role] = per
        return out

    def schema(self, columns: list[EmbeddingColumn], layers: tuple[int, ...], hidden: int):
        """The written rows' schema, with no row at hand."""
        from pipeline.embed.scores import score_types

        types = {f.name: f.type for f in self.window_schema}
        types[N_TOKENS] = pa.int32()
        types |= self.output_types(columns, hidden)
        states = self.state_columns(layers)
        types |= {name: token_states_type(hidden) for name in states}
        names = [*self.row_columns, *self.outputs(columns), *states, *self.score_columns()]
        by_base = score_types() | self.own_score_types()
        for name in self.score_columns():
            base = name if name in by_base else name.rsplit("_", 1)[0]
            types[name] = by_base[base]
        return pa.schema([(name, types[name]) for name in names])

    def own_score_types(self) -> dict[str, pa.DataType]:
        return {}

    def written(
        self,
        rows: pa.Table,
        columns: list[EmbeddingColumn],
        vectors: dict[str, dict[str, np.ndarray]],
        states: dict[str, dict[str, list[np.ndarray]]],
        scores: dict[str, list[list[TokenScores]]] | None = None,
    ) -> pa.Table:
        """The row's own columns, then the engine's per role: `vectors[role][column]`
        [rows, hidden], `states[role]['tokens_l<k>']` per row [tokens, hidden], `scores[role]`
        per row its strands' scored tokens."""
        out = rows
        for c in columns:
            out = out.append_column(c.column, embedding_array(vectors[DEFAULT_ROLE][c.column]))
        return self._add_scores(self._add_states(out, states), scores)

    def _add_scores(
        self, out: pa.Table, scores: dict[str, list[list[TokenScores]]] | None
    ) -> pa.Table:
        """loglik per role, the kind's own scores, per-token scores per role."""
        from pipeline.config import Score
        from pipeline.embed import scores as sc

        if not scores:
            return out
        s = self.cfg.scores
        if Score.loglik in s.compute:
            for role in self.roles:
                got = [sc.strands_loglik(item) for item in scores[role]]
                x = self.role_suffix(role)
                out = out.append_column(
                    sc.LOGLIK_SUM + x, pa.array([g[0] for g in got], sc.SCORE_VALUE)
                )
                out = out.append_column(
                    sc.LOGLIK_MEAN + x, pa.array([g[1] for g in got], sc.SCORE_VALUE)
                )
        for name, values in self.own_score_values(out, scores).items():
            out = out.append_column(name, values)
        if self.per_token_scores():
            for role in self.roles:
                per_row = []
                for item in scores[role]:
                    lo = item[0].start
                    hi = lo + len(item[0].logp)
                    per_row.append(sc.strands_tokens(item, [t.length for t in item], lo, hi))
                for name, arr in sc.token_arrays(per_row).items():
                    out = out.append_column(name + self.role_suffix(role), arr)
        return out

    def own_score_values(
        self, rows: pa.Table, scores: dict[str, list[list[TokenScores]]]
    ) -> dict[str, pa.Array]:
        return {}

    def _add_states(self, out: pa.Table, states: dict[str, dict[str, list]]) -> pa.Table:
        for role, by_layer in states.items():
            for name, arrays in by_layer.items():
                out = out.append_column(name + self.role_suffix(role), token_states_array(arrays))
        return out

    # ---- the manifest and the console ----

    def manifest_embeddings(self, columns: list[EmbeddingColumn]) -> list[dict]:
        """The embedding (vector) columns written: {column, layer, pooling[, allele]}."""
        from dataclasses import asdict

        return [asdict(c) for c in columns]

    def manifest_strands(self) -> str | None:
        """The manifest's `strands` where the kind decides them (None: window's keys)."""
        return None

    def manifest_scores(self, columns: list[EmbeddingColumn]) -> list[dict]:
        """Score columns: {column, embedding, metric} (embedding distances) or {column,
        score, statistic[, allele]} (the model's log-probabilities)."""
        return self.manifest_model_scores()

    def manifest_model_scores(self) -> list[dict]:
        from pipeline.embed.scores import PER_TOKEN

        out = []
        for name in self.score_columns():
            base, _, allele = name.rpartition("_")
            if allele not in self.roles or allele == DEFAULT_ROLE:
                base, allele = name, ""
            score, _, statistic = base.partition("_")
            if base in PER_TOKEN:
                score, statistic = "per_token", base
            out.append(
                {"column": name, "score": score, "statistic": statistic}
                | ({"allele": allele} if allele else {})
            )
        return out

    def finish(self, out: Any, manifest: dict) -> dict:
        """What the kind makes from the committed shards once all are in (the driver, before
        the manifest, so a run stopped here does it again when resumed): manifest entries."""
        return {}

    def header(self, first: str, what: str, columns: list[EmbeddingColumn]) -> tuple[str, str, str]:
        """(input, window shape, outputs) of the run's header line."""
        raise NotImplementedError

    @staticmethod
    def locus(row: dict) -> str:
        """A written row's place, for people (`python -m pipeline.load`)."""
        return f"{row['seq_id']}:{row['start']}-{row['end']}({row['strand']})"


def _discover() -> dict[str, type[Kind]]:
    kinds: dict[str, type[Kind]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Kind) and obj is not Kind:
                kinds[obj.name] = obj
    return kinds


KINDS = _discover()


def get(name: str) -> type[Kind]:
    """The kind named in a manifest."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown kind of input {name!r} (known: {', '.join(KINDS)})") from None


def kind_of(cfg: Config) -> Kind:
    """What the run reads: files to tile (input.path), BED regions or VCF variants."""
    i = cfg.input
    by_key = {k.key: k for k in KINDS.values()}
    # In the order InputConfig declares the keys.
    ordered = [by_key[f.name] for f in fields(i) if f.name in by_key]
    given = [k.key for k in ordered if _is_set(getattr(i, k.key))]
    loci = [k for k in ordered if k.reference]
    if not given:
        ways = ", or ".join(k.usage for k in ordered if not k.reference)
        if loci:
            ways += ", or input.reference=FASTA with " + " or ".join(k.usage for k in loci)
        raise ConfigError(f"missing input: pass {ways}")
    if len(given) > 1:
        raise ConfigError(
            f"a run reads one input, got {', '.join('input.' + k for k in given)}: "
            "run them separately"
        )
    kind = by_key[given[0]]
    if not kind.reference and _is_set(i.reference):
        raise ConfigError(
            f"input.reference is read for {' or '.join('input.' + k.key for k in loci)}; "
            f"input.{kind.key} {kind.whole}"
        )
    if kind.reference and not _is_set(i.reference):
        raise ConfigError(f"input.{kind.key} needs input.reference=FASTA (indexed, or bgzip)")
    return kind(cfg)
