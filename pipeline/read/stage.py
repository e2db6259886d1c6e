"""ReadStage: input files, or pieces of an indexed FASTA -> record batches (one Ray task
reads one file or one piece)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import pyarrow as pa

from pipeline.config import WindowConfig
from pipeline.errors import InputError
from pipeline.read.fastx import (
    Part,
    Skipped,
    iter_fasta_parts,
    iter_records,
    normalise,
    sniff_format,
)
from pipeline.read.pieces import IndexedFasta, check_header, parts
from pipeline.rows import ALLELE_SCHEMA, INTERVAL_SCHEMA, RECORD_SCHEMA, SOURCE
from pipeline.stages import RaySpec, Stage, StatsSink, report_key
from pipeline.storage import failed_requests


class ReadStage(Stage):
    needs = (SOURCE,)
    adds = tuple(RECORD_SCHEMA.names[1:])

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
        window: WindowConfig | None = None,
        part_bases: int = 8 << 20,
    ):
        self.fmt = fmt
        # A long FASTA record read whole (no index) is handed on in parts of this many bases.
        self.part_bases = part_bases
        self.window = window  # the windows that pieces of an indexed FASTA are cut by
        self.rna = rna
        self.invalid_chars = invalid_chars
        self.ambiguity_codes = ambiguity_codes
        self.on_error = on_error
        self.storage_options = storage_options
        self.stats = stats or StatsSink()
        self.max_batch_bases = max_batch_bases
        self.max_batch_records = max_batch_records

    def ray_spec(self) -> RaySpec:
        # One file (or piece) per task: its records stream out in batches as it is parsed.
        return RaySpec(batch_size=1)

    def columns_out(self, columns_in: tuple[str, ...]) -> tuple[str, ...]:
        # Record rows replace the file (or piece) rows.
        return tuple(RECORD_SCHEMA.names)

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        self.check_columns(batch)
        for row in batch.to_pylist():
            if row.get("piece") is None:
                yield from self.read_file(row["source"])
            else:
                yield from self.read_piece(row)

    def read_file(self, uri: str) -> Iterator[pa.Table]:
        retried = failed_requests()
        rows: dict[str, list] = {k: [] for k in RECORD_SCHEMA.names}
        records = bases = pending = 0
        skipped: list[dict] = []
        errors: list[dict] = []
        # A batch holds at most a part's worth of bases: what the task holds at once.
        limit = min(self.max_batch_bases, self.part_bases or self.max_batch_bases)
        try:
            for part in self._parts(uri):
                if isinstance(part, Skipped):
                    records += 1
                    skipped.append({"source": uri, "seq_id": part.seq_id, "reason": part.reason})
                    continue
                if part.offset == 0:
                    records += 1
                if part.length is not None:
                    bases += part.length
                for k, v in (
                    ("source", uri),
                    ("seq_id", part.seq_id),
                    ("record_index", part.index),
                    ("sequence", part.sequence),
                    ("offset", part.offset),
                    # Null on a part that more of its record follows (its length is not known
                    # yet): the window stage takes only the windows that lie in it.
                    ("record_length", part.length),
                ):
                    rows[k].append(v)
                pending += len(part.sequence)
                if pending >= limit or len(rows["seq_id"]) >= self.max_batch_records:
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
                "storage_retries": failed_requests() - retried,
            },
        )

    def _parts(self, uri: str) -> Iterator[Part | Skipped]:
        """A file's records; a long FASTA record in parts of about `part_bases` (bounded
        memory), unless a decision about a whole record must wait for its end (a bad base
        skips it under input.on_error=skip; window.n_policy=skip may keep no window of it)."""
        w = self.window
        whole = w is None or self.on_error == "skip" or w.n_policy == "skip"
        if not whole and self.fmt != "fastq" and sniff_format(uri, self.storage_options) == "fasta":
            yield from iter_fasta_parts(
                uri,
                w.size,
                w.step,
                self.part_bases,
                self.invalid_chars,
                self.ambiguity_codes,
                self.storage_options,
                self.rna,
            )
            return
        for rec in iter_records(
            uri,
            self.fmt,
            self.invalid_chars,
            self.ambiguity_codes,
            self.storage_options,
            self.on_error,
            self.rna,
        ):
            if isinstance(rec, Skipped):
                yield rec
            else:
                yield Part(rec.seq_id, rec.index, 0, rec.sequence, len(rec.sequence))

    def read_piece(self, row: dict) -> Iterator[pa.Table]:
        """One piece of an indexed FASTA (pipeline/read/pieces.py): the bases of its windows
        through the index, normalised as read_file does; a row per record or part of one."""
        if self.window is None:
            raise ValueError("ReadStage reads pieces of a file only when given window=")
        uri = row["source"]
        retried = failed_requests()
        ref = IndexedFasta(uri, self.storage_options)
        try:
            index = ref.lengths()
            names, lengths = list(index), list(index.values())
            out: dict[str, list] = {k: [] for k in RECORD_SCHEMA.names}
            records = bases = pending = 0
            begin = (row["record_index"], row["piece_start"])
            end = (row["next_record"], row["next_start"])
            for r, lo, hi in parts(lengths, begin, end, self.window):
                seq_id = names[r]
                try:
                    if lo == 0:
                        # The piece holding a record's start counts it, once.
                        check_header(uri, seq_id, ref.header(seq_id))
                        records += 1
                        bases += lengths[r]
                    seq = normalise(
                        ref.fetch(seq_id, lo, hi),
                        seq_id,
                        uri,
                        self.invalid_chars,
                        self.ambiguity_codes,
                        self.rna,
                        offset=lo,
                    )
                except UnicodeDecodeError as e:
                    raise InputError(
                        f"{uri}: record {seq_id!r} (its header or bases {lo}-{hi}) holds a "
                        f"byte outside ASCII; fix the input or set input.split_bases=0 ({e})"
                    ) from e
                for k, v in (
                    ("source", uri),
                    ("seq_id", seq_id),
                    ("record_index", r),
                    ("sequence", seq),
                    ("offset", lo),
                    ("record_length", lengths[r]),
                ):
                    out[k].append(v)
                pending += len(seq)
                if pending >= self.max_batch_bases or len(out["seq_id"]) >= self.max_batch_records:
                    yield pa.Table.from_pydict(out, schema=RECORD_SCHEMA)
                    out = {k: [] for k in RECORD_SCHEMA.names}
                    pending = 0
        finally:
            ref.close()
        if out["seq_id"]:
            yield pa.Table.from_pydict(out, schema=RECORD_SCHEMA)
        first = row["piece"] == 0
        self.stats.put(
            report_key("read", uri, "piece", row["piece"]),
            {
                "records": records,
                "bases": bases,
                "records_skipped": 0,
                # The first piece speaks for the file: every row its pieces hand on (so the
                # progress line knows the windows only once all are windowed), and the file
                # read, as the index has it (pieces skip nothing: see pieces.why_not_split).
                "records_to_window": row["parts"] if first else 0,
                "inputs_read": int(first),
                "storage_retries": failed_requests() - retried,
                "skipped": [],
                "input_errors": [],
                "inputs": (
                    [{"uri": uri, "records": len(lengths), "bases": sum(lengths), "complete": True}]
                    if first
                    else []
                ),
            },
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

    needs = (SOURCE,)
    schema: ClassVar[pa.Schema]

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

    def columns_out(self, columns_in: tuple[str, ...]) -> tuple[str, ...]:
        # Locus rows replace the file rows.
        return tuple(self.schema.names)


class RegionReadStage(_LocusReadStage):
    """A BED file -> interval rows."""

    schema = INTERVAL_SCHEMA
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

    schema = ALLELE_SCHEMA
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
