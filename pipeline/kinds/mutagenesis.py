"""Mutagenesis: every base of BED intervals (input.mutagenesis) to each of the three others,
on input.reference, scored like variants (log-likelihood ratios), with one summary row per
base (its three alternates' mean, and the most damaging)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from pipeline.errors import ConfigError
from pipeline.kinds import Kind
from pipeline.kinds.variants import variant_before
from pipeline.rows import (
    MUTAGENESIS_SCHEMA,
    TOKEN_IDS,
    TOKEN_IDS_RC,
    VARIANT_COLUMNS,
    VARIANT_ORDER,
)

if TYPE_CHECKING:
    from pipeline.embed.outputs import EmbeddingColumn
    from pipeline.read.sources import Source
    from pipeline.stages import Stage, StatsSink

BASES = "ACGT"
_COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}
WORST_ALT = "worst_alt"
WORST_LLR_SUM = "worst_llr_sum"


class Mutagenesis(Kind):
    name = "mutagenesis"
    key = "mutagenesis"
    usage = "input.mutagenesis=BED"
    reference = True
    per_token = False
    llr = True
    scores_only = True
    # The rows carry the reference window; the alternates are made from it (engine_ids).
    roles: ClassVar[dict[str, tuple[str, str]]] = {"ref": (TOKEN_IDS, TOKEN_IDS_RC)}
    row_columns = VARIANT_COLUMNS
    window_schema = MUTAGENESIS_SCHEMA
    row_order = VARIANT_ORDER
    coordinates = (
        "pos: 1-based, as a VCF would show the substitution; start, end: the reference "
        "window, 0-based half-open on the forward strand (BED); alt null: the base's summary"
    )
    loci = "intervals"
    shown_coordinates = "pos 1-based as in a VCF; start-end 0-based half-open"

    def check(self) -> None:
        super().check()
        from pipeline.config import Score

        extra = [str(s) for s in self.cfg.scores.compute if s != Score.llr]
        if extra:
            raise ConfigError(
                f"input.mutagenesis writes llr scores only; scores.compute={extra} does not apply"
            )
        variant_before(self.cfg)

    def fingerprint(self) -> dict[str, Any]:
        v = self.cfg.variants
        return {
            "mutagenesis": asdict(self.cfg.mutagenesis),
            "layout": {"layout": str(v.layout), "end_bases": v.end_bases},
        }

    def before(self) -> int | None:
        return variant_before(self.cfg)

    def estimated_tokens(self, sources: list[Source]) -> int | None:
        from pipeline.tokenize.budget import COUNT_LIMIT_BYTES, bed_bases

        if sum(s.size for s in sources) > COUNT_LIMIT_BYTES:
            return None
        bases = sum(bed_bases(s.uri, self.cfg.storage.options())[0] for s in sources)
        # A reference and three alternates per base.
        return 4 * self.cfg.window.size * bases

    def read_stages(self, model_key: str, stats: StatsSink) -> list[Stage]:
        from pipeline.read.stage import RegionReadStage
        from pipeline.window.mutagenesis import MutagenesisWindowStage

        cfg, storage = self.cfg, self.cfg.storage.options()
        return [
            RegionReadStage(storage, stats),
            MutagenesisWindowStage(
                cfg.window,
                model_key,
                cfg.input.reference,
                storage,
                cfg.input,
                stats,
                before=self.before(),
                max_bases=cfg.mutagenesis.max_bases,
            ),
        ]

    def precheck(self, sources: list[Source], model_key: str) -> None:
        """Every interval within mutagenesis.max_bases (the whole BED: it is small), then the
        default checks of the first intervals."""
        from pipeline.read.bed import iter_intervals

        limit = self.cfg.mutagenesis.max_bases
        for s in sources:
            for iv in iter_intervals(s.uri, self.cfg.storage.options()):
                if iv.end - iv.start > limit:
                    raise ConfigError(
                        f"{s.uri}: interval {iv.index} ({iv.seq_id}:{iv.start}-{iv.end}, "
                        f"0-based) has {iv.end - iv.start} bases, more than "
                        f"mutagenesis.max_bases={limit} (each base makes 4 rows); split it "
                        "or raise the limit"
                    )
        super().precheck(sources, model_key)

    # ---- the engine's windows ----

    def engine_ids(
        self,
        rows: pa.Table,
        ids: dict[str, tuple[list[np.ndarray], list[np.ndarray] | None]],
        alphabet: tuple[int, ...],
    ) -> dict[str, tuple[list[np.ndarray], list[np.ndarray] | None]]:
        """Beside the reference window, one window per base (A, C, G, T): the reference's
        with the row's base replaced (the one equal to the reference is the reference, which
        the core runs once)."""
        fwd, rc = ids["ref"]
        token = dict(zip(BASES, alphabet[:4], strict=True))
        offsets = self._offsets(rows, fwd)
        out = dict(ids)
        for base in BASES:
            f_out, r_out = [], [] if rc is not None else None
            for i, f in enumerate(fwd):
                off, minus = offsets[i]
                # A '-' row's own sequence is the reverse complement: its base is complemented.
                b = _COMPLEMENT[base] if minus else base
                w = f.copy()
                w[off] = token[b]
                f_out.append(w)
                if rc is not None:
                    r = rc[i].copy()
                    r[len(r) - 1 - off] = token[_COMPLEMENT[b]]
                    r_out.append(r)
            out[base] = (f_out, r_out)
        return out

    @staticmethod
    def _offsets(rows: pa.Table, fwd: list[np.ndarray]) -> list[tuple[int, bool]]:
        """Per row: the mutated token's index in its own window, and whether it is a '-' row."""
        pos = rows.column("pos").to_pylist()
        start = rows.column("start").to_pylist()
        strand = rows.column("strand").to_pylist()
        out = []
        for p, s, st, f in zip(pos, start, strand, fwd, strict=True):
            off = p - 1 - s
            out.append((len(f) - 1 - off if st == "-" else off, st == "-"))
        return out

    def score_ranges(
        self,
        ids: dict[str, tuple[list[np.ndarray], list[np.ndarray] | None]],
        spans: list[tuple[int, int]] | None,
    ) -> dict[str, list[list[tuple[tuple[int, int], int | None]]]]:
        """Every window from the mutated base to its end (its fork), that base the site."""
        from pipeline.embed.core import common_prefix

        # The mutated base is where the A and C windows differ, the same for every role.
        forks = [common_prefix(a, c) for a, c in zip(ids["A"][0], ids["C"][0], strict=True)]
        out: dict[str, list] = {}
        for role, (f_all, r_all) in ids.items():
            per = []
            for i, f in enumerate(f_all):
                fork = forks[i]
                strands = [((fork, len(f)), fork)]
                if r_all is not None:
                    back = len(r_all[i]) - 1 - fork
                    strands.append(((back, len(r_all[i])), back))
                per.append(strands)
            out[role] = per
        return out

    # ---- what is written ----

    def outputs(self, columns: list[EmbeddingColumn]) -> list[str]:
        return []

    def own_scores(self) -> list[str]:
        from pipeline.embed.scores import LLR

        return [*LLR, WORST_ALT, WORST_LLR_SUM]

    def own_score_types(self) -> dict[str, pa.DataType]:
        from pipeline.embed.scores import SCORE_VALUE

        return {WORST_ALT: pa.string(), WORST_LLR_SUM: SCORE_VALUE}

    def own_score_values(self, rows: pa.Table, scores: dict[str, list]) -> dict[str, pa.Array]:
        """An alternate row: its log-likelihood ratio; a summary row (ALT null): the mean of
        its base's three, and the most damaging (the lowest llr_sum) with its value."""
        from pipeline.embed import scores as sc

        cols: dict[str, list] = {c: [] for c in self.own_scores()}
        refs, alts = rows.column("ref").to_pylist(), rows.column("alt").to_pylist()
        for i, (ref, alt) in enumerate(zip(refs, alts, strict=True)):
            per = {}
            for b in (alt,) if alt is not None else [x for x in BASES if x != ref]:
                total, mean = sc.llr(scores["ref"][i], scores[b][i])
                per[b] = (total, mean, sc.site_term(scores["ref"][i], ref, b))
            values = np.array(list(per.values()), dtype=np.float64)
            cols[sc.LLR_SUM].append(float(values[:, 0].mean()))
            cols[sc.LLR_MEAN].append(float(values[:, 1].mean()))
            cols[sc.LLR_SITE].append(float(values[:, 2].mean()))
            worst = min(per, key=lambda b: per[b][0]) if alt is None else None
            cols[WORST_ALT].append(worst)
            cols[WORST_LLR_SUM].append(per[worst][0] if worst else None)
        types = {**{c: sc.SCORE_VALUE for c in sc.LLR}, **self.own_score_types()}
        return {c: pa.array(v, types[c]) for c, v in cols.items()}

    def manifest_model_scores(self) -> list[dict]:
        out = super().manifest_model_scores()
        for entry in out:
            if entry["column"] == WORST_ALT:
                entry.update(score="llr", statistic="worst_alt")
            elif entry["column"] == WORST_LLR_SUM:
                entry.update(score="llr", statistic="worst_sum")
        return out

    def header(self, first: str, what: str, columns: list[EmbeddingColumn]) -> tuple[str, str, str]:
        cfg = self.cfg
        return (
            f"{first} on {cfg.input.reference}",
            f"every base x 3 alternates, windows of {cfg.window.size}",
            "llr_sum, llr_mean, llr_site (+ a summary row per base)",
        )

    @staticmethod
    def locus(row: dict) -> str:
        alt = row["alt"] if row["alt"] is not None else "*"
        return (
            f"{row['seq_id']}:{row['pos']} {row['ref']}>{alt} window "
            f"{row['start']}-{row['end']}({row['strand']})"
        )
