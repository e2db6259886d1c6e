"""RegionWindowStage: BED intervals -> one window each, the interval +- window.flank.

The row keeps the interval (`start`, `end`, 0-based half-open) and what the model sees
(`window_start`, `window_end`); `span_start`/`span_end` say where the interval lies in the
row's own sequence (counted from its 5' end, so mirrored on a '-' row). The engine pools over
the span only.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import WindowConfig
from pipeline.rows import (
    BED_STRAND,
    CHUNK_ID,
    END,
    NAME,
    RECORD_INDEX,
    REGION_MERGE_SCHEMA,
    REGION_SCHEMA,
    SCORE,
    SEQ_ID,
    SEQUENCE,
    SEQUENCE_RC,
    SOURCE,
    SPAN_END,
    SPAN_START,
    START,
    STRAND,
    WINDOW_END,
    WINDOW_START,
)
from pipeline.stages import StatsSink
from pipeline.window.loci import LocusWindowStage
from pipeline.window.stage import Rows
from pipeline.window.windows import flanked, mirror, reverse_complement, row_id


class RegionWindowStage(LocusWindowStage):
    needs = (SOURCE, SEQ_ID, RECORD_INDEX, START, END, NAME, SCORE, BED_STRAND)
    adds = (CHUNK_ID, STRAND, WINDOW_START, WINDOW_END, SPAN_START, SPAN_END, SEQUENCE)
    skip_keys = ("source", "seq_id", "start", "end")
    schema, merge_schema = REGION_SCHEMA, REGION_MERGE_SCHEMA

    def __init__(
        self,
        cfg: WindowConfig,
        stranded: bool,
        model_key: str,
        reference: str,
        storage_options: dict[str, Any] | None,
        input_cfg: Any,
        stats: StatsSink | None = None,
        max_interval: int | None = None,
    ):
        super().__init__(cfg, model_key, reference, storage_options, input_cfg, stats)
        self.stranded = stranded
        # embed.per_token: the longest interval whose tokens a row may store.
        self.max_interval = max_interval

    def where(self, row: dict) -> str:
        return self.interval_where(row)

    def problem(self, row: dict, lengths: dict[str, int]) -> str | None:
        start, end = row["start"], row["end"]
        if reason := self.interval_problem(row, lengths):
            return reason
        if self.max_interval is not None and end - start > self.max_interval:
            return (
                f"interval of {end - start} bases is longer than "
                f"embed.per_token_max_tokens={self.max_interval} (embed.per_token)"
            )
        return None

    def _locus(self, row: dict, lengths: dict[str, int], out: Rows) -> str | None:
        if reason := self.problem(row, lengths):
            return reason
        seq_id, start, end = row["seq_id"], row["start"], row["end"]
        length = lengths[seq_id]
        w0, w1 = flanked(start, end, self.cfg.flank, length)
        forward = self.fetch(seq_id, w0, w1)
        span = (start - w0, end - w0)
        if self.cfg.reverse_complement is True:
            strands = ("+", "-")
        else:
            strands = ("-",) if self.stranded and row["bed_strand"] == "-" else ("+",)
        for strand in strands:
            seq = forward if strand == "+" else reverse_complement(forward)
            a, b = span if strand == "+" else mirror(span, len(forward))
            rec = {
                "chunk_id": row_id(
                    row["source"],
                    seq_id,
                    start,
                    end,
                    strand,
                    self.model_key,
                    "region",
                    row["record_index"],
                ),
                "source": row["source"],
                "seq_id": seq_id,
                "start": start,
                "end": end,
                "strand": strand,
                "name": row["name"],
                "score": row["score"],
                "bed_strand": row["bed_strand"],
                "window_start": w0,
                "window_end": w1,
                "span_start": a,
                "span_end": b,
                "sequence": seq,
            }
            if self.cfg.merge_strands:
                rec[SEQUENCE_RC] = reverse_complement(seq)
            out.add(**rec)
        return None
