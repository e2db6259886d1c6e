"""VariantWindowStage: VCF alleles -> a reference and an alternate window each.

Window rule (README, "Variants"): with pos0 = POS - 1, the reference window starts at
pos0 - window.size // 2, shifted to lie inside the contig, and is window.size bases long (the
whole contig when shorter). The alternate window has the same start, REF replaced by ALT, and
is filled from the contig (or cut) at its far end to window.size bases.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.window.loci import LocusWindowStage
from pipeline.window.stage import RC_COLUMN, Rows
from pipeline.window.windows import (
    alt_window_sequence,
    reverse_complement,
    row_id,
    variant_window,
)

ALT_COLUMN = "sequence_alt"
ALT_RC_COLUMN = "sequence_alt_rc"
VARIANT_SCHEMA = pa.schema(
    [
        ("chunk_id", pa.string()),
        ("source", pa.string()),
        ("seq_id", pa.string()),
        ("pos", pa.int64()),
        ("id", pa.string()),
        ("ref", pa.string()),
        ("alt", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("strand", pa.string()),
        ("sequence", pa.large_string()),
        (ALT_COLUMN, pa.large_string()),
    ]
)
VARIANT_MERGE_SCHEMA = VARIANT_SCHEMA.append(pa.field(RC_COLUMN, pa.large_string())).append(
    pa.field(ALT_RC_COLUMN, pa.large_string())
)
# Columns of a written variant row besides the scores (and kept embeddings).
VARIANT_COLUMNS = (
    "chunk_id",
    "source",
    "seq_id",
    "pos",
    "id",
    "ref",
    "alt",
    "start",
    "end",
    "strand",
    "n_tokens",
)


class VariantWindowStage(LocusWindowStage):
    needs = ("source", "seq_id", "record_index", "alt_index", "pos", "id", "ref", "alt")
    adds = ("chunk_id", "start", "end", "strand", "sequence", ALT_COLUMN)
    skip_keys = ("source", "seq_id", "pos", "id", "ref", "alt")
    id_keys = ("source", "record_index", "alt_index")
    schema, merge_schema = VARIANT_SCHEMA, VARIANT_MERGE_SCHEMA

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
        start, end = variant_window(pos, self.cfg.size, length)
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
                ALT_COLUMN: alt_seq if strand == "+" else reverse_complement(alt_seq),
            }
            if self.cfg.merge_strands:
                rec[RC_COLUMN] = reverse_complement(forward)
                rec[ALT_RC_COLUMN] = reverse_complement(alt_seq)
            out.add(**rec)
        return None
