"""WindowStage: records -> windows with coordinates, strand and chunk id."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

import pyarrow as pa

from pipeline.config import NPolicy, WindowConfig
from pipeline.rows import (
    CHUNK_ID,
    END,
    MERGE_SCHEMA,
    RECORD_INDEX,
    SEQ_ID,
    SEQUENCE,
    SEQUENCE_RC,
    SOURCE,
    START,
    STRAND,
    WINDOW_SCHEMA,
)
from pipeline.stages import Stage, StatsSink, report_key
from pipeline.window.windows import chunk_id, id_array, id_hash, reverse_complement, spans


class Rows:
    """Window rows being gathered, and the counts of one input batch."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.rows: dict[str, list] = {k: [] for k in schema.names}
        self.counts = {
            "windows": 0,
            "windows_hash": 0,
            "windows_skipped_n": 0,
            "windows_dropped": 0,
            "bases_uncovered": 0,
        }
        self.skipped: list[dict] = []

    def __len__(self) -> int:
        return len(self.rows["chunk_id"])

    def add(self, **row) -> None:
        for k, v in row.items():
            self.rows[k].append(v)

    def emit(self) -> pa.Table:
        table = pa.Table.from_pydict(self.rows, schema=self.schema)
        self.rows = {k: [] for k in self.schema.names}
        self.counts["windows"] += table.num_rows
        self.counts["windows_hash"] += id_hash(id_array(table.column("chunk_id")))
        return table


def skip_reason(length: int, c: WindowConfig) -> str | None:
    """Why a record of `length` bases has no window, or None."""
    if not length:
        return "empty sequence"
    if length < c.min_length:
        return f"length {length} < window.min_length {c.min_length}"
    if length < c.size and c.last == "drop":
        return f"length {length} < window.size {c.size} with window.last=drop"
    return None


def part_spans(
    offset: int, n: int, length: int | None, c: WindowConfig, counts: dict | None = None
) -> list[tuple[int, int]]:
    """The windows of a record that lie in its part [offset, offset + n): those of spans();
    where the record's length is not known yet (more follows), its full windows there, which
    spans() makes the same for any length past the part. The part that ends the record counts
    the bases no window covers into `counts`."""
    stop = offset + n
    if length is None:
        first = -(-offset // c.step) * c.step
        return [(s, s + c.size) for s in range(first, stop - c.size + 1, c.step)]
    all_spans = spans(length, c.size, c.step, c.last)
    if counts is not None and stop == length and all_spans:
        counts["bases_uncovered"] += length - all_spans[-1][1]
    out = []
    # Starts rise, and so do ends: the windows inside [offset, stop) are one run of them.
    for start, end in all_spans[bisect_left(all_spans, (offset,)) :]:
        if end > stop:
            break
        out.append((start, end))
    return out


class WindowStage(Stage):
    needs = (SOURCE, SEQ_ID, RECORD_INDEX, SEQUENCE)
    adds = (CHUNK_ID, START, END, STRAND)

    def __init__(self, cfg: WindowConfig, model_key: str, stats: StatsSink | None = None):
        self.cfg = cfg
        self.model_key = model_key
        self.stats = stats or StatsSink()
        if cfg.merge_strands:
            self.adds = (*self.adds, SEQUENCE_RC)

    def columns_out(self, columns_in: tuple[str, ...]) -> tuple[str, ...]:
        # Window rows replace the record rows.
        return tuple(self._rows().schema.names)

    def _rows(self) -> Rows:
        """The window rows of one input batch, to be gathered."""
        return Rows(MERGE_SCHEMA if self.cfg.merge_strands else WINDOW_SCHEMA)

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        self.check_columns(batch)
        out = self._rows()
        sources = batch.column("source").to_pylist()
        seq_ids = batch.column("seq_id").to_pylist()
        seqs = batch.column("sequence").to_pylist()
        # Part of a record (a piece of an indexed FASTA, or of a long record read whole):
        # where it starts in the record, and the record's length (null: more of the record
        # follows, its length not yet known); absent: whole records.
        offsets = (
            batch.column("offset").to_pylist() if "offset" in batch.column_names else None
        ) or [0] * batch.num_rows
        lengths = (
            batch.column("record_length").to_pylist()
            if "record_length" in batch.column_names
            else [len(s) for s in seqs]
        )
        for source, seq_id, seq, offset, length in zip(
            sources, seq_ids, seqs, offsets, lengths, strict=True
        ):
            reason = yield from self._record(source, seq_id, seq, out, offset or 0, length)
            if reason is not None:
                out.skipped.append({"source": source, "seq_id": seq_id, "reason": reason})
        if len(out):
            yield out.emit()
        # One report per input batch, keyed by its first record, or part of one (each is in
        # exactly one batch): a retried task overwrites its report instead of counting twice.
        if batch.num_rows:
            first = batch.column("record_index")[0].as_py()
            part = [offsets[0]] if offsets[0] else []
            self.stats.put(
                report_key("window", sources[0], first, *part),
                {
                    **out.counts,
                    "records_windowed": batch.num_rows,
                    "records_skipped": len(out.skipped),
                    "skipped": out.skipped,
                },
            )

    def _record(
        self,
        source: str,
        seq_id: str,
        seq: str,
        out: Rows,
        offset: int,
        length: int | None,
    ):
        """Windows of one record into `out` (yielding full batches); returns why the record
        was skipped, or None. Part of a record (`seq` starts at `offset` of a record `length`
        long, None: not known yet): the record's windows that lie in `seq`, which are those
        starting in its part (the reader reads exactly their span)."""
        c = self.cfg
        whole = offset == 0 and len(seq) == length
        if length is not None:
            reason = skip_reason(length, c)
            if reason:
                return reason
        strands = ("+", "-") if c.reverse_complement is True else ("+",)
        kept = 0
        for start, end in part_spans(offset, len(seq), length, c, out.counts):
            if end - start < c.min_length:
                out.counts["windows_dropped"] += 1
                continue
            sub = seq[start - offset : end - offset]
            if c.n_policy == NPolicy.skip and sub.count("N") > c.max_n_fraction * len(sub):
                out.counts["windows_skipped_n"] += len(strands)
                continue
            for strand in strands:
                row = {
                    "chunk_id": chunk_id(source, seq_id, start, end, strand, self.model_key),
                    "source": source,
                    "seq_id": seq_id,
                    "start": start,
                    "end": end,
                    "strand": strand,
                    "sequence": sub if strand == "+" else reverse_complement(sub),
                }
                if c.merge_strands:
                    row[SEQUENCE_RC] = reverse_complement(sub)
                out.add(**row)
                kept += 1
            if len(out) >= c.batch_windows:
                yield out.emit()
        # Whether a record kept any window is known only from all its parts; pieces are not
        # made where a record can keep none (window.n_policy=skip: pipeline/read/pieces.py).
        if kept == 0 and whole:
            return (
                f"no window kept (window.max_n_fraction={c.max_n_fraction}, "
                f"window.min_length={c.min_length})"
            )
        return None
