"""Variants: VCF alleles (input.variants) on input.reference, scored by the distance between
the reference and the alternate window's embeddings."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from pipeline.config import VariantLayout
from pipeline.errors import ConfigError
from pipeline.kinds import Kind
from pipeline.rows import (
    ALLELES,
    METRICS,
    SCORE_TYPE,
    TOKEN_IDS,
    TOKEN_IDS_ALT,
    TOKEN_IDS_ALT_RC,
    TOKEN_IDS_RC,
    VARIANT_COLUMNS,
    VARIANT_ORDER,
    VARIANT_SCHEMA,
    embedding_array,
    suffixed,
    vector_type,
)

if TYPE_CHECKING:
    from pipeline.config import Config
    from pipeline.embed.outputs import EmbeddingColumn
    from pipeline.read.sources import Source
    from pipeline.stages import Stage, StatsSink


class Variants(Kind):
    name = "variants"
    key = "variants"
    usage = "input.variants=VCF"
    reference = True
    roles: ClassVar[dict[str, tuple[str, str]]] = {
        "ref": (TOKEN_IDS, TOKEN_IDS_RC),
        "alt": (TOKEN_IDS_ALT, TOKEN_IDS_ALT_RC),
    }
    row_columns = VARIANT_COLUMNS
    window_schema = VARIANT_SCHEMA
    row_order = VARIANT_ORDER
    coordinates = (
        "pos: 1-based, as in the VCF; start, end: the reference window, 0-based "
        "half-open on the forward strand (BED)"
    )
    loci = "variant alleles"
    shown_coordinates = "pos 1-based as in the VCF; start-end 0-based half-open"
    llr = True

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.keep = cfg.variants.keep_embeddings

    def check(self) -> None:
        super().check()
        cfg = self.cfg
        limit = cfg.embed.per_token_max_tokens
        variant_before(cfg)
        per_token = "embed.per_token" if cfg.embed.per_token else "scores.per_token"
        if (cfg.embed.per_token or cfg.scores.per_token) and cfg.window.size > limit:
            raise ConfigError(
                f"{per_token} stores {cfg.window.size} tokens per window (window.size), "
                f"more than embed.per_token_max_tokens={limit}; lower window.size or raise "
                "the limit"
            )

    def before(self) -> int | None:
        return variant_before(self.cfg)

    def fingerprint(self) -> dict[str, Any]:
        fields = asdict(self.cfg.variants)
        if self.cfg.variants.layout == VariantLayout.centred:
            # The centred layout was the only one: its outputs keep their fingerprint.
            del fields["layout"], fields["end_bases"]
        return {"variants": fields}

    def own_scores(self) -> list[str]:
        from pipeline.config import Score
        from pipeline.embed.scores import LLR

        return list(LLR) if Score.llr in self.cfg.scores.compute or self.scores_only else []

    def score_ranges(
        self,
        ids: dict[str, tuple[list[np.ndarray], list[np.ndarray] | None]],
        spans: list[tuple[int, int]] | None,
    ) -> dict[str, list[list[tuple[tuple[int, int], int | None]]]]:
        """Each strand's windows are scored from their fork (the first token where the
        reference and alternate differ: earlier tokens and their contexts are the same in
        both, so their terms cancel), or whole where loglik or per-token scores are asked."""
        from pipeline.config import Score
        from pipeline.embed.core import common_prefix

        s = self.cfg.scores
        whole = Score.loglik in s.compute or self.per_token_scores()
        (ref_f, ref_r), (alt_f, alt_r) = ids["ref"], ids["alt"]
        out: dict[str, list] = {"ref": [], "alt": []}
        for i in range(len(ref_f)):
            pairs = [(ref_f[i], alt_f[i])]
            if ref_r is not None and alt_r is not None:
                pairs.append((ref_r[i], alt_r[i]))
            for role, k in (("ref", 0), ("alt", 1)):
                strands = []
                for pair in pairs:
                    fork = common_prefix(*pair)
                    start = 0 if whole else fork
                    strands.append(((start, len(pair[k])), fork))
                out[role].append(strands)
        return out

    def own_score_values(self, rows: pa.Table, scores: dict[str, list]) -> dict[str, pa.Array]:
        from pipeline.embed import scores as sc

        if not self.own_scores():
            return {}
        sums, means, sites = [], [], []
        refs, alts = rows.column("ref").to_pylist(), rows.column("alt").to_pylist()
        for ref, alt, r, a in zip(refs, alts, scores["ref"], scores["alt"], strict=True):
            total, mean = sc.llr(r, a)
            sums.append(total)
            means.append(mean)
            sites.append(sc.site_term(r, ref, alt))
        return {
            sc.LLR_SUM: pa.array(sums, sc.SCORE_VALUE),
            sc.LLR_MEAN: pa.array(means, sc.SCORE_VALUE),
            sc.LLR_SITE: pa.array(sites, sc.SCORE_VALUE),
        }

    def estimated_tokens(self, sources: list[Source]) -> int | None:
        from pipeline.tokenize.budget import COUNT_LIMIT_BYTES, data_rows

        if sum(s.size for s in sources) > COUNT_LIMIT_BYTES:
            return None
        # A reference and an alternate window per ALT (most lines have one).
        opts = self.cfg.storage.options()
        return 2 * self.cfg.window.size * sum(data_rows(s.uri, opts) for s in sources)

    def read_stages(self, model_key: str, stats: StatsSink) -> list[Stage]:
        from pipeline.read.stage import VariantReadStage
        from pipeline.window.variants import VariantWindowStage

        cfg, storage = self.cfg, self.cfg.storage.options()
        return [
            VariantReadStage(storage, stats),
            VariantWindowStage(
                cfg.window,
                model_key,
                cfg.input.reference,
                storage,
                cfg.input,
                stats,
                before=self.before(),
            ),
        ]

    # Per embedding column E: the scores E_<metric> and, kept, E_<allele>.
    def outputs(self, columns: list[EmbeddingColumn]) -> list[str]:
        out = []
        for c in columns:
            out += [suffixed(c.column, m) for m in METRICS]
            if self.keep:
                out += [suffixed(c.column, a) for a in ALLELES]
        return out

    def output_types(self, columns: list[EmbeddingColumn], hidden: int) -> dict[str, pa.DataType]:
        scores = {suffixed(c.column, m) for c in columns for m in METRICS}
        return {
            name: SCORE_TYPE if name in scores else vector_type(hidden)
            for name in self.outputs(columns)
        }

    def written(
        self,
        rows: pa.Table,
        columns: list[EmbeddingColumn],
        vectors: dict[str, dict[str, np.ndarray]],
        states: dict[str, dict[str, list[np.ndarray]]],
        scores: dict[str, list] | None = None,
    ) -> pa.Table:
        out = rows
        for c in columns:
            ref, alt = vectors["ref"][c.column], vectors["alt"][c.column]
            for metric, values in zip(METRICS, distances(ref, alt), strict=True):
                out = out.append_column(suffixed(c.column, metric), pa.array(values, SCORE_TYPE))
            if self.keep:
                for allele, v in zip(ALLELES, (ref, alt), strict=True):
                    out = out.append_column(suffixed(c.column, allele), embedding_array(v))
        return self._add_scores(self._add_states(out, states), scores)

    def manifest_embeddings(self, columns: list[EmbeddingColumn]) -> list[dict]:
        if not self.keep:
            return []
        return [
            {**asdict(c), "column": suffixed(c.column, allele), "allele": allele}
            for c in columns
            for allele in ALLELES
        ]

    def manifest_scores(self, columns: list[EmbeddingColumn]) -> list[dict]:
        return [
            {"column": suffixed(c.column, m), "embedding": c.column, "metric": m}
            for c in columns
            for m in METRICS
        ] + self.manifest_model_scores()

    def header(self, first: str, what: str, columns: list[EmbeddingColumn]) -> tuple[str, str, str]:
        cfg = self.cfg
        shown = [suffixed(c.column, m) for c in columns for m in METRICS] + self.own_scores()
        layout = ""
        if cfg.variants.layout == VariantLayout.end:
            layout = f", the variant {cfg.variants.end_bases} bases from their end"
        return (
            f"{first} on {cfg.input.reference}",
            f"ref and alt windows of {cfg.window.size}{layout}",
            " -> ".join(x for x in (what, ", ".join(shown)) if x),
        )

    @staticmethod
    def locus(row: dict) -> str:
        return (
            f"{row['seq_id']}:{row['pos']} {row['ref']}>{row['alt']} window "
            f"{row['start']}-{row['end']}({row['strand']})"
        )


def variant_before(cfg: Config) -> int | None:
    """Bases of a variant's window before it (variants.layout; None: centred), checked."""
    v, size = cfg.variants, cfg.window.size
    if v.layout != VariantLayout.end:
        return None
    if v.end_bases > size:
        raise ConfigError(f"variants.end_bases={v.end_bases} is longer than window.size={size}")
    return size - v.end_bases


def distances(ref: np.ndarray, alt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1 - cosine similarity and L2 distance of each row's two embeddings, in float64."""
    a, b = ref.astype(np.float64), alt.astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = 1.0 - np.einsum("ij,ij->i", a, b) / (na * nb)
    return cosine, np.linalg.norm(a - b, axis=1)
