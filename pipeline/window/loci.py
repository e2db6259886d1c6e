"""What the region and variant window stages share: an indexed reference read on the worker,
one input row at a time, rows that cannot be embedded skipped or refused by input.on_error."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import pyarrow as pa

from pipeline.config import WindowConfig
from pipeline.errors import InputError
from pipeline.read.fastx import normalise
from pipeline.read.reference import Reference
from pipeline.stages import Stage, StatsSink, report_key
from pipeline.window.stage import Rows


class LocusWindowStage(Stage):
    """Windows of loci (BED intervals, VCF alleles) read from `reference`. A subclass says
    how one input row becomes rows (`_locus`), and what a skipped one lists (`skip_keys`)."""

    skip_keys: ClassVar[tuple[str, ...]] = ()
    # What tells one input row from every other (its report key).
    id_keys: ClassVar[tuple[str, ...]] = ("source", "record_index")
    schema: ClassVar[pa.Schema]
    merge_schema: ClassVar[pa.Schema]

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
        if cfg.merge_strands:
            self.adds = (
                *self.adds,
                *(n for n in self.merge_schema.names if n not in self.schema.names),
            )

    def columns_out(self, columns_in: tuple[str, ...]) -> tuple[str, ...]:
        # Window rows replace the locus rows.
        return tuple((self.merge_schema if self.cfg.merge_strands else self.schema).names)

    def setup(self) -> None:
        self.reference = Reference(self.reference_uri, self.storage_options)

    def fetch(self, seq_id: str, start: int, end: int) -> str:
        """Reference bases, normalised as input.invalid_chars and ambiguity_codes say."""
        return normalise(
            self.reference.fetch(seq_id, start, end),
            seq_id,
            self.reference_uri,
            self.invalid_chars,
            self.ambiguity_codes,
        )

    def group(self, row: dict) -> Any:
        """Rows of one group stay in one output batch (default: every row its own)."""
        return None

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        self.ensure_setup()
        self.check_columns(batch)
        out = Rows(self.merge_schema if self.cfg.merge_strands else self.schema)
        lengths = self.reference.lengths()
        previous = object()
        for row in batch.to_pylist():
            here = self.group(row)
            if len(out) >= self.cfg.batch_windows and (here is None or here != previous):
                yield out.emit()
            previous = here
            reason = self._locus(row, lengths, out)
            if reason is None:
                continue
            if self.on_error != "skip":
                raise InputError(f"{self.where(row)}: {reason}; input.on_error=skip skips it")
            out.skipped.append({**{k: row[k] for k in self.skip_keys}, "reason": reason})
        if len(out):
            yield out.emit()
        if batch.num_rows:
            # Keyed by the batch's first input row: a retried task overwrites its report.
            first = batch.slice(0, 1).to_pylist()[0]
            self.stats.put(
                report_key("window", *(first[k] for k in self.id_keys)),
                {
                    **out.counts,
                    "records_windowed": batch.num_rows,
                    "records_skipped": len(out.skipped),
                    "skipped": out.skipped,
                },
            )

    def usable(self, rows: Iterable[dict]) -> tuple[int, list[str]]:
        """How many input rows this stage would embed, and why it would skip the others,
        checked without making windows (cheap: the driver runs it on a run's first rows
        before any engine starts). With input.on_error=error the first problem raises the
        error the stage would raise."""
        self.ensure_setup()
        lengths = self.reference.lengths()
        n, reasons = 0, []
        for row in rows:
            reason = self.problem(row, lengths)
            if reason is None:
                n += 1
                continue
            message = f"{self.where(row)}: {reason}"
            if self.on_error != "skip":
                raise InputError(f"{message}; input.on_error=skip skips it")
            reasons.append(message)
        return n, reasons

    def problem(self, row: dict, lengths: dict[str, int]) -> str | None:
        """Why the input row cannot be embedded (without reading its window), or None."""
        raise NotImplementedError

    def _locus(self, row: dict, lengths: dict[str, int], out: Rows) -> str | None:
        """The input row's window row(s) into `out`; why it was skipped, or None."""
        raise NotImplementedError

    def where(self, row: dict) -> str:
        raise NotImplementedError

    def interval_where(self, row: dict) -> str:
        """Where a BED interval row is, in messages."""
        return (
            f"{row['source']}: interval {row['record_index']} "
            f"({row['seq_id']}:{row['start']}-{row['end']}, 0-based)"
        )

    def interval_problem(self, row: dict, lengths: dict[str, int]) -> str | None:
        """Why a BED interval cannot be read from the reference, or None."""
        seq_id, end = row["seq_id"], row["end"]
        if missing := self.missing_contig(seq_id, lengths):
            return missing
        if end > lengths[seq_id]:
            return f"interval ends at {end}, past the end of {seq_id} ({lengths[seq_id]} bases)"
        return None

    def missing_contig(self, seq_id: str, lengths: dict[str, int]) -> str | None:
        if seq_id not in lengths:
            return f"contig {seq_id!r} is not in the reference {self.reference_uri}"
        return None
