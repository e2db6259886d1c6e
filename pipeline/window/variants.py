"""VariantWindowStage: VCF alleles -> a reference and an alternate window each.

Window rule (README, "Variants"): with pos0 = POS - 1, the reference window starts at
pos0 - window.size // 2 (variants.layout=centred; end: window.size - variants.end_bases),
shifted to lie inside the contig, and is window.size bases long (the whole contig when
shorter). The alternate window has the same start, REF replaced by ALT, and
is filled from the contig (or cut) at its far end to window.size bases.
"""

from __future__ import annotations

from typing import Any

from pipeline.rows import (
    ALT,
    ALT_INDEX,
    CHUNK_ID,
    END,
    ID,
    POS,
    RECORD_INDEX,
    REF,
    SEQ_ID,
    SEQUENCE,
    SEQUENCE_ALT,
    SEQUENCE_ALT_RC,
    SEQUENCE_RC,
    SOURCE,
    START,
    STRAND,
    VARIANT_MERGE_SCHEMA,
    VARIANT_SCHEMA,
)
from pipeline.window.loci import LocusWindowStage
from pipeline.window.stage import Rows
from pipeline.window.windows import (
    alt_window_sequence,
    reverse_complement,
    row_id,
    variant_window,
)


class VariantWindowStage(LocusWindowStage):
    needs = (SOURCE, SEQ_ID, RECORD_INDEX, ALT_INDEX, POS, ID, REF, ALT)
    adds = (CHUNK_ID, START, END, STRAND, SEQUENCE, SEQUENCE_ALT)
    skip_keys = ("source", "seq_id", "pos", "id", "ref", "alt")
    id_keys = ("source", "record_index", "alt_index")
    schema, merge_schema = VARIANT_SCHEMA, VARIANT_MERGE_SCHEMA

    def __init__(self, *args: Any, before: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Bases of the window before the variant (None: centred).
        self.before = before

    def group(self, row: dict) -> Any:
        # Alleles of one position share their reference window: one batch, one pack, so the
        # engine embeds it once.
        return row["seq_id"], row["pos"]

    def where(self, row: dict) -> str:
        ident = f" {row['id']}" if row["id"] else ""
        return (
            f"{row['source']}: record {row['record_index'] + 1}{ident} "
            f"({row['seq_id']}:{row['pos']} {row['ref']}>{row['alt']})"
        )

    def problem(self, row: dict, lengths: dict[str, int]) -> str | None:
        seq_id, pos, ref = row["seq_id"], row["pos"], row["ref"]
        if missing := self.missing_contig(seq_id, lengths):
            return missing
        length = lengths[seq_id]
        if pos < 1 or pos - 1 + len(ref) > length:
            return f"REF {ref} at {pos} runs past the end of {seq_id} ({length} bases)"
        found = self.reference.fetch(seq_id, pos - 1, pos - 1 + len(ref))
        if found != ref:
            return f"REF {ref} does not match the reference, which has {found} there"
        return None

    def _locus(self, row: dict, lengths: dict[str, int], out: Rows) -> str | None:
        if reason := self.problem(row, lengths):
            return reason
        seq_id, pos, ref, alt = row["seq_id"], row["pos"], row["ref"], row["alt"]
        length = lengths[seq_id]
        start, end = variant_window(pos, self.cfg.size, length, self.before)
        forward = self.fetch(seq_id, start, end)
        # Its reference pieces come normalised from fetch(); ALT is upper-case A, C, G, T, N
        # already (the VCF reader skips any other allele), so the window needs no second pass.
        alt_seq = alt_window_sequence(
            lambda a, b: self.fetch(seq_id, a, b), start, pos, ref, alt, self.cfg.size, length
        )
        strands = ("+", "-") if self.cfg.reverse_complement is True else ("+",)
        for strand in strands:
            rec = {
                "chunk_id": row_id(
                    row["source"],
                    seq_id,
                    pos,
                    ref,
                    alt,
                    strand,
                    self.model_key,
                    "variant",
                    row["record_index"],
                    row["alt_index"],
                    start,
                    end,
                ),
                "source": row["source"],
                "seq_id": seq_id,
                "pos": pos,
                "id": row["id"],
                "ref": ref,
                "alt": alt,
                "start": start,
                "end": end,
                "strand": strand,
                "sequence": forward if strand == "+" else reverse_complement(forward),
                SEQUENCE_ALT: alt_seq if strand == "+" else reverse_complement(alt_seq),
            }
            if self.cfg.merge_strands:
                rec[SEQUENCE_RC] = reverse_complement(forward)
                rec[SEQUENCE_ALT_RC] = reverse_complement(alt_seq)
            out.add(**rec)
        return None
