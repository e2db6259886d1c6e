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
