"""Regions: BED intervals (input.regions) on input.reference, each pooled inside its flanks."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError
from pipeline.kinds import Kind
from pipeline.rows import REGION_COLUMNS, REGION_ORDER, REGION_SCHEMA

if TYPE_CHECKING:
    from pipeline.embed.outputs import EmbeddingColumn
    from pipeline.read.sources import Source
    from pipeline.stages import Stage, StatsSink
    from pipeline.tokenize.tokenizer import DnaTokenizer


class Regions(Kind):
    name = "regions"
    key = "regions"
    usage = "input.regions=BED"
    reference = True
    takes_flank = True
    tiled = True
    row_columns = REGION_COLUMNS
    window_schema = REGION_SCHEMA
    row_order = REGION_ORDER
    coordinates = (
        "start, end: the BED interval; window_start, window_end: what the model saw; "
        "0-based half-open on the forward strand (BED)"
    )
    loci = "intervals"

    def fingerprint(self) -> dict[str, Any]:
        return {"regions": asdict(self.cfg.regions)}

    def spans(self) -> bool:
        return True

    def check_fits(self, tokenizer: DnaTokenizer) -> None:
        """Regions pool over token ranges of their window: one token per base, no specials;
        and the flanks must leave room for the interval in every tile."""
        flank, max_model_len = self.cfg.window.flank, self.cfg.model.max_model_len
        if not tokenizer.char_level or tokenizer.n_special:
            raise ConfigError(
                "input.regions needs a tokenizer with one token per base and no special tokens "
                f"(model.add_special_tokens={tokenizer.spec.add_special_tokens}); this one is not"
            )
        if 2 * flank >= max_model_len:
            raise ConfigError(
                f"window.flank={flank} on both sides leaves no room for the interval in "
                f"model.max_model_len={max_model_len} tokens; lower window.flank"
            )

    def window_tokens(self, tokenizer: DnaTokenizer) -> int:
        return 2 * self.cfg.window.flank + 1

    def estimated_tokens(self, sources: list[Source]) -> int | None:
        from pipeline.tokenize.budget import COUNT_LIMIT_BYTES, bed_bases

        if sum(s.size for s in sources) > COUNT_LIMIT_BYTES:
            return None
        bases = 0
        for s in sources:
            interval_bases, rows = bed_bases(s.uri, self.cfg.storage.options())
            bases += interval_bases + 2 * self.cfg.window.flank * rows
        return bases

    def read_stages(self, model_key: str, stats: StatsSink) -> list[Stage]:
        from pipeline.read.stage import RegionReadStage
        from pipeline.window.regions import RegionWindowStage

        cfg, storage = self.cfg, self.cfg.storage.options()
        return [
            RegionReadStage(storage, stats),
            RegionWindowStage(
                cfg.window,
                cfg.regions.stranded,
                model_key,
                cfg.input.reference,
                storage,
                cfg.input,
                stats,
                cfg.embed.per_token_max_tokens
                if cfg.embed.per_token or cfg.scores.per_token
                else None,
            ),
        ]

    def header(self, first: str, what: str, columns: list[EmbeddingColumn]) -> tuple[str, str, str]:
        cfg = self.cfg
        return (
            f"{first} on {cfg.input.reference}",
            f"each interval +- {cfg.window.flank} flank",
            what,
        )

    @staticmethod
    def locus(row: dict) -> str:
        return f"{Kind.locus(row)} window {row['window_start']}-{row['window_end']}"
