"""MutagenesisWindowStage: BED intervals -> per base, its reference window, once per row.

Every base of an interval whose reference base is A, C, G or T becomes four rows: one per
other base (ALT) and one summary row (ALT null), each carrying the same reference window
(placed as a variant's: variants.layout). The engine stage makes the alternate windows from
it (pipeline/kinds/mutagenesis.py), so every row can be scored on its own.
"""

from __future__ import annotations

from typing import Any

from pipeline.rows import (
    CHUNK_ID,
    END,
    MUTAGENESIS_MERGE_SCHEMA,
    MUTAGENESIS_SCHEMA,
    NAME,
    RECORD_INDEX,
    SEQ_ID,
    SEQUENCE,
    SEQUENCE_RC,
    SOURCE,
    START,
)
from pipeline.window.loci import LocusWindowStage
from pipeline.window.stage import Rows
from pipeline.window.windows import reverse_complement, row_id, variant_window

BASES = "ACGT"


class MutagenesisWindowStage(LocusWindowStage):
    needs = (SOURCE, SEQ_ID, RECORD_INDEX, START, END, NAME)
    adds = (CHUNK_ID, SEQUENCE)
    skip_keys = ("source", "seq_id", "start", "end")
    schema, merge_schema = MUTAGENESIS_SCHEMA, MUTAGENESIS_MERGE_SCHEMA

    def __init__(self, *args: Any, before: int | None = None, max_bases: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.before = before
        self.max_bases = max_bases

    def group(self, row: dict) -> Any:
        # An interval's rows in one batch: neighbouring bases share packs.
        return row["source"], row["record_index"]

    def where(self, row: dict) -> str:
        return self.interval_where(row)

    def problem(self, row: dict, lengths: dict[str, int]) -> str | None:
        start, end = row["start"], row["end"]
        if reason := self.interval_problem(row, lengths):
            return reason
        if end - start > self.max_bases:
            return f"interval of {end - start} bases is longer than mutagenesis.max_bases"
        return None

    def _locus(self, row: dict, lengths: dict[str, int], out: Rows) -> str | None:
        if reason := self.problem(row, lengths):
            return reason
        seq_id, start, end = row["seq_id"], row["start"], row["end"]
        length, size = lengths[seq_id], self.cfg.size
        first = variant_window(start + 1, size, length, self.before)
        last = variant_window(end, size, length, self.before)
        # One read covers every window of the interval.
        lo, hi = first[0], max(first[1], last[1])
        bases = self.fetch(seq_id, lo, hi)
        strands = ("+", "-") if self.cfg.reverse_complement is True else ("+",)
        for g in range(start, end):
            ref = bases[g - lo]
            if ref not in BASES:
                continue
            w0, w1 = variant_window(g + 1, size, length, self.before)
            forward = bases[w0 - lo : w1 - lo]
            for alt in [b for b in BASES if b != ref] + [None]:
                for strand in strands:
                    rec = {
                        "chunk_id": row_id(
                            row["source"],
                            seq_id,
                            g + 1,
                            ref,
                            alt or "",
                            strand,
                            self.model_key,
                            "mutagenesis",
                            row["record_index"],
                            w0,
                            w1,
                        ),
                        "source": row["source"],
                        "seq_id": seq_id,
                        "pos": g + 1,
                        "id": row["name"],
                        "ref": ref,
                        "alt": alt,
                        "start": w0,
                        "end": w1,
                        "strand": strand,
                        "sequence": forward if strand == "+" else reverse_complement(forward),
                    }
                    if self.cfg.merge_strands:
                        rec[SEQUENCE_RC] = reverse_complement(forward)
                    out.add(**rec)
        return None
