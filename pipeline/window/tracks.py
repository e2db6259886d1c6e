"""TrackWindowStage: records (or parts of long ones) -> windows whose scored spans tile each
contig once per strand.

Windows of window.size every size - context bases (spans(), window.last=keep). On the forward
strand a window scores from where the previous one ended, so each scored base has at least
`context` bases before it in its window (the first window: from the contig's start). On the
reverse strand the same windows score up to where the next one starts, so each base has
`context` bases after it (the last window: to the contig's end). Either way the scored spans
of a strand tile the contig: every base in exactly one row per strand.
"""

from __future__ import annotations

import re
from bisect import bisect_left

from pipeline.config import WindowConfig
from pipeline.rows import (
    SPAN_END,
    SPAN_START,
    STRAND,
    TRACK_SCHEMA,
    WINDOW_END,
    WINDOW_START,
)
from pipeline.stages import StatsSink
from pipeline.window.stage import Rows, WindowStage, part_spans, skip_reason
from pipeline.window.windows import chunk_id, reverse_complement

_ACGT = re.compile("[ACGT]")


def scored_spans(
    start: int, end: int, length: int | None, context: int, step: int
) -> dict[str, tuple[int, int]]:
    """A window's scored span per strand, on forward coordinates. `length`: the contig's,
    None where the window is surely not its last (a part that more follows)."""
    forward = (start + context if start > 0 else 0, end)
    reverse = (start, end if end == length else start + step)
    return {"+": forward, "-": reverse}


def clip(span: tuple[int, int], intervals: list[tuple[int, int]] | None) -> tuple[int, int] | None:
    """The part of `span` from the first to the last base inside `intervals` (sorted, not
    overlapping); None: no base inside. No intervals: the span itself."""
    if intervals is None:
        return span
    a, b = span
    i = bisect_left(intervals, (a,))
    if i and intervals[i - 1][1] > a:
        i -= 1
    lo = hi = None
    for s, e in intervals[i:]:
        if s >= b:
            break
        lo = max(a, s) if lo is None else lo
        hi = min(b, e)
    return None if lo is None else (lo, hi)


class TrackWindowStage(WindowStage):
    """WindowStage with windows of its own: a scored span per strand, limited to contigs
    and intervals."""

    adds = (
        "chunk_id",
        "start",
        "end",
        STRAND,
        WINDOW_START,
        WINDOW_END,
        SPAN_START,
        SPAN_END,
    )

    def __init__(
        self,
        cfg: WindowConfig,
        context: int,
        strands: tuple[str, ...],
        model_key: str,
        contigs: frozenset[str] | None = None,
        intervals: dict[str, list[tuple[int, int]]] | None = None,
        stats: StatsSink | None = None,
    ):
        super().__init__(cfg, model_key, stats)  # cfg: size, and step = size - context
        self.context = context
        self.strands = strands
        self.contigs = contigs
        self.intervals = intervals

    def _rows(self) -> Rows:
        out = Rows(TRACK_SCHEMA)
        out.counts["track_bases"] = 0
        return out

    def _record(
        self,
        source: str,
        seq_id: str,
        seq: str,
        out: Rows,
        offset: int,
        length: int | None,
    ):
        """The windows of one record (or part) into `out`; returns why it was skipped."""
        c = self.cfg
        if self.contigs is not None and seq_id not in self.contigs:
            return None  # not asked for (tracks.contigs): no rows, and no reason to list
        intervals = None
        if self.intervals is not None:
            intervals = self.intervals.get(seq_id)
            if not intervals:
                return None
        if length is not None:
            reason = skip_reason(length, c)
            if reason:
                return reason
        for start, end in part_spans(offset, len(seq), length, c, out.counts):
            sub = seq[start - offset : end - offset]
            spans = scored_spans(start, end, length, self.context, c.step)
            for strand in self.strands:
                span = clip(spans[strand], intervals)
                if span is None:
                    continue
                a, b = span
                if _ACGT.search(seq, a - offset, b - offset) is None:
                    continue  # all N: a gap, nothing to score
                own = (a - start, b - start) if strand == "+" else (end - b, end - a)
                out.add(
                    chunk_id=chunk_id(source, seq_id, start, end, strand, self.model_key),
                    source=source,
                    seq_id=seq_id,
                    start=a,
                    end=b,
                    strand=strand,
                    window_start=start,
                    window_end=end,
                    span_start=own[0],
                    span_end=own[1],
                    sequence=sub if strand == "+" else reverse_complement(sub),
                )
                out.counts["track_bases"] += b - a
            if len(out) >= c.batch_windows:
                yield out.emit()
        return None
