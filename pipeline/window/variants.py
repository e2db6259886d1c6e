"""VariantWindowStage: VCF alleles -> a reference and an alternate window each.

Window rule (README, "Variants"): with pos0 = POS - 1, the reference window starts at
pos0 - window.size // 2, shifted to lie inside the contig, and is window.size bases long (the
whole contig when shorter). The alternate window has the same start, REF replaced by ALT, and
is filled from the contig (or cut) at its far end to window.size bases.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from pipeline.config import WindowConfig
from pipeline.errors import InputError
from pipeline.read.fastx import normalise
from pipeline.read.reference import Reference
from pipeline.stages import Stage, StatsSink, report_key
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


class VariantWindowStage(Stage):
    needs = ("source", "seq_id", "record_index", "alt_index", "pos", "id", "ref", "alt")
    adds = ("chunk_id", "start", "end", "strand", "sequence", ALT_COLUMN)

    def __init__(
        self,
        cfg: WindowConfig,
        model_key: str,
        reference: str,
        storage_options: dict[str, Any] | None,
        input_cfg: Any,
        stats: StatsSink | None = None,
    ):
        self.cfg = cfg
        self.model_key = model_key
        self.reference_uri = reference
        self.storage_options = storage_options
        self.invalid_chars = str(input_cfg.invalid_chars)
        self.ambiguity_codes = str(input_cfg.ambiguity_codes)
        self.on_error = str(input_cfg.on_error)
        self.stats = stats or StatsSink()
        self.reference: Reference | None = None

    def setup(self) -> None:
        self.reference = Reference(self.reference_uri, self.storage_options)

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        self.ensure_setup()
        self.check_columns(batch)
        out = Rows(VARIANT_MERGE_SCHEMA if self.cfg.merge_strands else VARIANT_SCHEMA)
        lengths = self.reference.lengths()
        previous = None
        for row in batch.to_pylist():
            # Emit only between reference windows, so variants sharing one stay together
            # (the engine embeds a shared window once per pack).
            here = (row["seq_id"], row["pos"])
            if len(out) >= self.cfg.batch_windows and here != previous:
                yield out.emit()
            previous = here
            reason = self._variant(row, lengths, out)
            if reason is not None:
                if self.on_error != "skip":
                    raise InputError(f"{_where(row)}: {reason}; input.on_error=skip skips it")
                out.skipped.append(
                    {
                        **{k: row[k] for k in ("source", "seq_id", "pos", "id", "ref", "alt")},
                        "reason": reason,
                    }
                )
        if len(out):
            yield out.emit()
        if batch.num_rows:
            first = (batch.column("record_index")[0].as_py(), batch.column("alt_index")[0].as_py())
            self.stats.put(
                report_key("window", batch.column("source")[0].as_py(), *first),
                {
                    **out.counts,
                    "records_windowed": batch.num_rows,
                    "records_skipped": len(out.skipped),
                    "skipped": out.skipped,
                },
            )

    def _fetch(self, seq_id: str, a: int, b: int) -> str:
        return normalise(
            self.reference.fetch(seq_id, a, b),
            seq_id,
            self.reference_uri,
            self.invalid_chars,
            self.ambiguity_codes,
        )

    def _variant(self, row: dict, lengths: dict[str, int], out: Rows) -> str | None:
        """The allele's row(s) into `out`; why it was skipped, or None."""
        seq_id, pos, ref, alt = row["seq_id"], row["pos"], row["ref"], row["alt"]
        if seq_id not in lengths:
            return f"contig {seq_id!r} is not in the reference {self.reference_uri}"
        length = lengths[seq_id]
        if pos < 1 or pos - 1 + len(ref) > length:
            return f"REF {ref} at {pos} runs past the end of {seq_id} ({length} bases)"
        found = self.reference.fetch(seq_id, pos - 1, pos - 1 + len(ref))
        if found != ref:
            return f"REF {ref} does not match the reference, which has {found} there"
        start, end = variant_window(pos, self.cfg.size, length)
        forward = self._fetch(seq_id, start, end)
        alt_seq = alt_window_sequence(
            lambda a, b: self._fetch(seq_id, a, b), start, pos, ref, alt, self.cfg.size, length
        )
        alt_seq = normalise(
            alt_seq, seq_id, row["source"], self.invalid_chars, self.ambiguity_codes
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


def _where(row: dict) -> str:
    ident = f" {row['id']}" if row["id"] else ""
    return (
        f"{row['source']}: record {row['record_index'] + 1}{ident} "
        f"({row['seq_id']}:{row['pos']} {row['ref']}>{row['alt']})"
    )
