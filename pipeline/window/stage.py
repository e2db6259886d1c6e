"""WindowStage: records -> windows with coordinates, strand and chunk id."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from pipeline.config import WindowConfig
from pipeline.stages import Stage, StatsSink, report_key
from pipeline.window.windows import chunk_id, id_array, id_hash, reverse_complement, spans

WINDOW_SCHEMA = pa.schema(
    [
        ("chunk_id", pa.string()),
        ("source", pa.string()),
        ("seq_id", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("strand", pa.string()),
        ("sequence", pa.large_string()),
    ]
)


class WindowStage(Stage):
    needs = ("source", "seq_id", "record_index", "sequence")
    adds = ("chunk_id", "start", "end", "strand")

    def __init__(self, cfg: WindowConfig, model_key: str, stats: StatsSink | None = None):
        self.cfg = cfg
        self.model_key = model_key
        self.stats = stats or StatsSink()

    @staticmethod
    def _emit(rows: dict[str, list], counts: dict[str, int]) -> pa.Table:
        table = pa.Table.from_pydict(rows, schema=WINDOW_SCHEMA)
        counts["windows"] += table.num_rows
        counts["windows_hash"] += id_hash(id_array(table.column("chunk_id")))
        return table

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        self.check_columns(batch)
        c = self.cfg
        strands = ("+", "-") if c.reverse_complement else ("+",)
        rows: dict[str, list] = {k: [] for k in WINDOW_SCHEMA.names}
        counts = {
            "windows": 0,
            "windows_hash": 0,
            "windows_skipped_n": 0,
            "windows_dropped": 0,
            "bases_uncovered": 0,
        }
        skipped: list[dict] = []
        sources = batch.column("source").to_pylist()
        seq_ids = batch.column("seq_id").to_pylist()
        for i, seq in enumerate(batch.column("sequence").to_pylist()):
            source, seq_id = sources[i], seq_ids[i]
            reason = None
            if not seq:
                reason = "empty sequence"
            elif len(seq) < c.min_length:
                reason = f"length {len(seq)} < window.min_length {c.min_length}"
            kept = 0
            if reason is None:
                all_spans = spans(len(seq), c.size, c.step, c.last)
                if not all_spans:
                    reason = f"length {len(seq)} < window.size {c.size} with window.last=drop"
                else:
                    covered_to = all_spans[-1][1]
                    counts["bases_uncovered"] += len(seq) - covered_to
                for start, end in all_spans if reason is None else ():
                    if end - start < c.min_length:
                        counts["windows_dropped"] += 1
                        continue
                    sub = seq[start:end]
                    if c.n_policy == "skip" and sub.count("N") > c.max_n_fraction * len(sub):
                        counts["windows_skipped_n"] += len(strands)
                        continue
                    for strand in strands:
                        rows["chunk_id"].append(
                            chunk_id(source, seq_id, start, end, strand, self.model_key)
                        )
                        rows["source"].append(source)
                        rows["seq_id"].append(seq_id)
                        rows["start"].append(start)
                        rows["end"].append(end)
                        rows["strand"].append(strand)
                        rows["sequence"].append(sub if strand == "+" else reverse_complement(sub))
                        kept += 1
                    if len(rows["chunk_id"]) >= c.batch_windows:
                        yield self._emit(rows, counts)
                        rows = {k: [] for k in WINDOW_SCHEMA.names}
                if reason is None and kept == 0:
                    reason = (
                        f"no window kept (window.max_n_fraction={c.max_n_fraction}, "
                        f"window.min_length={c.min_length})"
                    )
            if reason is not None:
                skipped.append({"source": source, "seq_id": seq_id, "reason": reason})
        if rows["chunk_id"]:
            yield self._emit(rows, counts)
        # One report per input batch, keyed by its first record (each record is in exactly
        # one batch): a retried task overwrites its report instead of counting twice.
        if batch.num_rows:
            first = batch.column("record_index")[0].as_py()
            self.stats.put(
                report_key("window", sources[0], first),
                {**counts, "records_skipped": len(skipped), "skipped": skipped},
            )
