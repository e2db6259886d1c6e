"""Tiles: FASTA/FASTQ files (input.path) cut into windows of window.size every window.stride."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.kinds import Kind
from pipeline.rows import OUTPUT_COLUMNS, SORT_KEYS, WINDOW_SCHEMA

if TYPE_CHECKING:
    from pipeline.config import Config, WindowConfig
    from pipeline.embed.outputs import EmbeddingColumn
    from pipeline.read.sources import Source
    from pipeline.read.stage import ReadStage
    from pipeline.stages import Stage, StatsSink


class Tiles(Kind):
    name = "tiles"
    key = "path"
    usage = "input=PATH (FASTA/FASTQ to tile)"
    whole = "files are tiled whole"
    per_token = False
    row_columns = OUTPUT_COLUMNS
    window_schema = WINDOW_SCHEMA
    row_order = SORT_KEYS
    coordinates = "0-based half-open [start, end) on the forward strand (BED)"

    def items(self, sources: list[Source], storage: dict) -> list[dict]:
        """One read task per file, or per piece of an indexed FASTA (input.split_bases)."""
        from pipeline.read.pieces import plan_pieces

        return plan_pieces(sources, self.cfg.input, self.cfg.window, storage)

    def estimated_tokens(self, sources: list[Source]) -> int | None:
        from pipeline.tokenize.budget import file_bases

        return sum(file_bases(s, str(self.cfg.input.format)) for s in sources)

    def read_stages(self, model_key: str, stats: StatsSink) -> list[Stage]:
        from pipeline.window.stage import WindowStage

        return [
            read_stage(self.cfg, stats, self.cfg.window),
            WindowStage(self.cfg.window, model_key, stats),
        ]

    def precheck(self, sources: list[Source], model_key: str) -> None:
        from pipeline.precheck import check_tiles

        cfg = self.cfg
        check_tiles(sources, cfg.input, cfg.window.min_length, cfg.storage.options())

    def header(self, first: str, what: str, columns: list[EmbeddingColumn]) -> tuple[str, str, str]:
        w = self.cfg.window
        return first, f"window {w.size} every {w.step}", what


def read_stage(cfg: Config, stats: StatsSink, window: WindowConfig) -> ReadStage:
    """The read stage of FASTA/FASTQ files (input.*'s rules) whose records are cut into
    `window`s: pieces of an indexed file, and long records read in parts, end where those
    windows do."""
    from pipeline.read.stage import ReadStage

    i = cfg.input
    return ReadStage(
        i.format,
        i.invalid_chars,
        i.ambiguity_codes,
        i.on_error,
        cfg.storage.options(),
        stats,
        rna=i.rna,
        window=window,
    )
