"""RegionWindowStage: BED intervals -> one window each, the interval +- window.flank.

The row keeps the interval (`start`, `end`, 0-based half-open) and what the model sees
(`window_start`, `window_end`); `span_start`/`span_end` say where the interval lies in the
row's own sequence (counted from its 5' end, so mirrored on a '-' row). The engine pools over
the span only.
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
from pipeline.window.windows import flanked, mirror, reverse_complement, row_id

REGION_SCHEMA = pa.schema(
    [
        ("chunk_id", pa.string()),
        ("source", pa.string()),
        ("seq_id", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("strand", pa.string()),
        ("name", pa.string()),
        ("score", pa.float64()),
        ("bed_strand", pa.string()),
        ("window_start", pa.int64()),
        ("window_end", pa.int64()),
        ("span_start", pa.int64()),
        ("span_end", pa.int64()),
        ("sequence", pa.large_string()),
    ]
)
REGION_MERGE_SCHEMA = REGION_SCHEMA.append(pa.field(RC_COLUMN, pa.large_string()))
# Columns of a written region row besides the embeddings.
REGION_COLUMNS = (
    "chunk_id",
    "source",
    "seq_id",
    "start",
    "end",
    "strand",
    "name",
    "score",
    "bed_strand",
    "window_start",
    "window_end",
    "n_tokens",
)


class RegionWindowStage(Stage):
    needs = ("source", "seq_id", "record_index", "start", "end", "name", "score", "bed_strand")
    adds = ("chunk_id", "strand", "window_start", "window_end", "span_start", "span_end")

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
        self.cfg = cfg
        self.stranded = stranded
        self.model_key = model_key
        self.reference_uri = reference
        self.storage_options = storage_options
        self.invalid_chars = str(input_cfg.invalid_chars)
        self.ambiguity_codes = str(input_cfg.ambiguity_codes)
        self.on_error = str(input_cfg.on_error)
        self.stats = stats or StatsSink()
        # embed.per_token: the longest interval whose tokens a row may store.
        self.max_interval = max_interval
        self.reference: Reference | None = None

    def setup(self) -> None:
        self.reference = Reference(self.reference_uri, self.storage_options)

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        self.ensure_setup()
        self.check_columns(batch)
        out = Rows(REGION_MERGE_SCHEMA if self.cfg.merge_strands else REGION_SCHEMA)
        lengths = self.reference.lengths()
        for row in batch.to_pylist():
            reason = self._region(row, lengths, out)
            if reason is not None:
                if self.on_error != "skip":
                    raise InputError(f"{_where(row)}: {reason}")
                out.skipped.append(
                    {
                        "source": row["source"],
                        "seq_id": row["seq_id"],
                        "start": row["start"],
                        "end": row["end"],
                        "reason": reason,
                    }
                )
            if len(out) >= self.cfg.batch_windows:
                yield out.emit()
        if len(out):
            yield out.emit()
        if batch.num_rows:
            first = batch.column("record_index")[0].as_py()
            self.stats.put(
                report_key("window", batch.column("source")[0].as_py(), first),
                {
                    **out.counts,
                    "records_windowed": batch.num_rows,
                    "records_skipped": len(out.skipped),
                    "skipped": out.skipped,
                },
            )

    def _region(self, row: dict, lengths: dict[str, int], out: Rows) -> str | None:
        """The interval's row(s) into `out`; why it was skipped, or None."""
        seq_id, start, end = row["seq_id"], row["start"], row["end"]
        if seq_id not in lengths:
            return f"contig {seq_id!r} is not in the reference {self.reference_uri}"
        length = lengths[seq_id]
        if end > length:
            return f"interval ends at {end}, past the end of {seq_id} ({length} bases)"
        if self.max_interval is not None and end - start > self.max_interval:
            return (
                f"interval of {end - start} bases is longer than "
                f"embed.per_token_max_tokens={self.max_interval} (embed.per_token)"
            )
        w0, w1 = flanked(start, end, self.cfg.flank, length)
        forward = normalise(
            self.reference.fetch(seq_id, w0, w1),
            seq_id,
            self.reference_uri,
            self.invalid_chars,
            self.ambiguity_codes,
        )
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
                rec[RC_COLUMN] = reverse_complement(seq)
            out.add(**rec)
        return None


def _where(row: dict) -> str:
    return (
        f"{row['source']}: interval {row['record_index']} "
        f"({row['seq_id']}:{row['start']}-{row['end']}, 0-based)"
    )
