"""ReadStage: input files -> record batches (one Ray task reads one file)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from pipeline.errors import InputError
from pipeline.read.fastx import Skipped, iter_records
from pipeline.stages import RaySpec, Stage, StatsSink, report_key

RECORD_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("seq_id", pa.string()),
        ("record_index", pa.int64()),
        ("sequence", pa.large_string()),
    ]
)


class ReadStage(Stage):
    needs = ("source",)
    adds = ("seq_id", "record_index", "sequence")

    def __init__(
        self,
        fmt: str = "auto",
        invalid_chars: str = "error",
        ambiguity_codes: str = "to_n",
        on_error: str = "error",
        storage_options: dict[str, Any] | None = None,
        stats: StatsSink | None = None,
        max_batch_bases: int = 64 << 20,
        max_batch_records: int = 8192,
        rna: str = "error",
    ):
        self.fmt = fmt
        self.rna = rna
        self.invalid_chars = invalid_chars
        self.ambiguity_codes = ambiguity_codes
        self.on_error = on_error
        self.storage_options = storage_options
        self.stats = stats or StatsSink()
        self.max_batch_bases = max_batch_bases
        self.max_batch_records = max_batch_records

    def ray_spec(self) -> RaySpec:
        # One file per task: its records stream out in batches as it is parsed.
        return RaySpec(batch_size=1)

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        self.check_columns(batch)
        for uri in batch.column("source").to_pylist():
            yield from self.read_file(uri)

    def read_file(self, uri: str) -> Iterator[pa.Table]:
        rows: dict[str, list] = {k: [] for k in RECORD_SCHEMA.names}
        records = bases = pending = 0
        skipped: list[dict] = []
        errors: list[dict] = []
        items = iter_records(
            uri,
            self.fmt,
            self.invalid_chars,
            self.ambiguity_codes,
            self.storage_options,
            self.on_error,
            self.rna,
        )
        try:
            for rec in items:
                records += 1
                if isinstance(rec, Skipped):
                    skipped.append({"source": uri, "seq_id": rec.seq_id, "reason": rec.reason})
                    continue
                rows["source"].append(uri)
                rows["seq_id"].append(rec.seq_id)
                rows["record_index"].append(rec.index)
                rows["sequence"].append(rec.sequence)
                bases += len(rec.sequence)
                pending += len(rec.sequence)
                if pending >= self.max_batch_bases or len(rows["seq_id"]) >= self.max_batch_records:
                    yield pa.Table.from_pydict(rows, schema=RECORD_SCHEMA)
                    rows = {k: [] for k in RECORD_SCHEMA.names}
                    pending = 0
        except InputError as e:
            if self.on_error != "skip":
                raise
            # The file breaks off here: what came before is kept, and the break is reported,
            # so the corpus is never silently shorter.
            errors.append({"uri": uri, "reason": str(e), "records_read": records})
        if rows["seq_id"]:
            yield pa.Table.from_pydict(rows, schema=RECORD_SCHEMA)
        # Reported once the file is done: a task that dies midway reports nothing, and its
        # retry reports under the same key.
        self.stats.put(
            report_key("read", uri),
            {
                "records": records,
                "bases": bases,
                "records_skipped": len(skipped),
                # For the progress line: records handed on (all but the skipped), and this
                # file done.
                "records_to_window": records - len(skipped),
                "inputs_read": 1,
                "skipped": skipped,
                "input_errors": errors,
                "inputs": [
                    {"uri": uri, "records": records, "bases": bases, "complete": not errors}
                ],
            },
        )


INTERVAL_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("seq_id", pa.string()),
        ("record_index", pa.int64()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("name", pa.string()),
        ("score", pa.float64()),
        ("bed_strand", pa.string()),
    ]
)

ALLELE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("seq_id", pa.string()),
        ("record_index", pa.int64()),
        ("alt_index", pa.int64()),
        ("pos", pa.int64()),
        ("id", pa.string()),
        ("ref", pa.string()),
        ("alt", pa.string()),
    ]
)


class _ReadReport:
    """Rows of one input file gathered into batches, and its report once it is read."""

    def __init__(self, uri: str, schema: pa.Schema, stats: StatsSink) -> None:
        self.uri, self.schema, self.stats = uri, schema, stats
        self.rows: dict[str, list] = {k: [] for k in schema.names}
        self.records = 0
        self.skipped: list[dict] = []

    def __len__(self) -> int:
        return len(self.rows["seq_id"])

    def add(self, **row) -> None:
        for k in self.schema.names:
            self.rows[k].append(row[k])

    def emit(self) -> pa.Table:
        table = pa.Table.from_pydict(self.rows, schema=self.schema)
        self.rows = {k: [] for k in self.schema.names}
        return table

    def report(self) -> None:
        self.stats.put(
            report_key("read", self.uri),
            {
                "records": self.records,
                "records_skipped": len(self.skipped),
                "records_to_window": self.records - len(self.skipped),
                "inputs_read": 1,
                "skipped": self.skipped,
                "inputs": [{"uri": self.uri, "records": self.records, "complete": True}],
            },
        )


class _LocusReadStage(Stage):
    """A BED or VCF file -> rows of loci, one task per file; the window stage reads their
    sequence from the reference. Batches are small, so windowing spreads over tasks."""

    needs = ("source",)

    def __init__(
        self,
        storage_options: dict[str, Any] | None = None,
        stats: StatsSink | None = None,
        max_batch_records: int = 1024,
    ):
        self.storage_options = storage_options
        self.stats = stats or StatsSink()
        self.max_batch_records = max_batch_records

    def ray_spec(self) -> RaySpec:
        return RaySpec(batch_size=1)


class RegionReadStage(_LocusReadStage):
    """A BED file -> interval rows."""

    adds = tuple(INTERVAL_SCHEMA.names[1:])

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        from pipeline.read.bed import iter_intervals

        self.check_columns(batch)
        for uri in batch.column("source").to_pylist():
            out = _ReadReport(uri, INTERVAL_SCHEMA, self.stats)
            for iv in iter_intervals(uri, self.storage_options):
                out.records += 1
                out.add(
                    source=uri,
                    seq_id=iv.seq_id,
                    record_index=iv.index,
                    start=iv.start,
                    end=iv.end,
                    name=iv.name,
                    score=iv.score,
                    bed_strand=iv.strand,
                )
                if len(out) >= self.max_batch_records:
                    yield out.emit()
            if len(out):
                yield out.emit()
            out.report()


class VariantReadStage(_LocusReadStage):
    """A VCF file -> one row per ALT allele; alleles that cannot be embedded (symbolic,
    breakends, no ALT) are listed as skipped with the reason."""

    adds = tuple(ALLELE_SCHEMA.names[1:])

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        from pipeline.read.vcf import SkippedVariant, iter_variants

        self.check_columns(batch)
        for uri in batch.column("source").to_pylist():
            out = _ReadReport(uri, ALLELE_SCHEMA, self.stats)
            last = None
            for v in iter_variants(uri, self.storage_options):
                out.records += 1
                if isinstance(v, SkippedVariant):
                    out.skipped.append(
                        {
                            "source": uri,
                            "seq_id": v.seq_id,
                            "pos": v.pos,
                            "id": v.id,
                            "ref": v.ref,
                            "alt": v.alt,
                            "reason": v.reason,
                        }
                    )
                    continue
                # Batches break between positions only: alleles at one position share their
                # reference window, which is then embedded once.
                if len(out) >= self.max_batch_records and (v.seq_id, v.pos) != last:
                    yield out.emit()
                last = (v.seq_id, v.pos)
                out.add(
                    source=uri,
                    seq_id=v.seq_id,
                    record_index=v.record,
                    alt_index=v.alt_index,
                    pos=v.pos,
                    id=v.id,
                    ref=v.ref,
                    alt=v.alt,
                )
            if len(out):
                yield out.emit()
            out.report()
