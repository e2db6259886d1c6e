"""RegionWindowStage on a real reference: flanks, clipping, strands, bad intervals."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.config import InputConfig, OnError, WindowConfig
from pipeline.errors import InputError
from pipeline.rows import INTERVAL_SCHEMA
from pipeline.stages import StatsSink
from pipeline.window.regions import RegionWindowStage
from pipeline.window.windows import reverse_complement


def intervals(*rows) -> pa.Table:
    """(seq_id, start, end, strand) rows as the BED reader hands them on."""
    return pa.Table.from_pylist(
        [
            {
                "source": "peaks.bed",
                "seq_id": s,
                "record_index": i,
                "start": a,
                "end": b,
                "name": f"p{i}",
                "score": float(i),
                "bed_strand": strand,
            }
            for i, (s, a, b, strand) in enumerate(rows)
        ],
        schema=INTERVAL_SCHEMA,
    )


def run(reference, table, stats=None, on_error="error", stranded=False, **window):
    path, _ = reference
    stage = RegionWindowStage(
        WindowConfig(**{"flank": 100, **window}),
        stranded,
        "model-key",
        str(path),
        None,
        InputConfig(on_error=OnError(on_error)),
        stats,
    )
    out = list(stage(table))
    return pa.concat_tables(out).to_pylist() if out else []


def test_windows_are_the_interval_with_flanks_clipped_at_contig_ends(reference):
    _, contigs = reference
    rows = run(
        reference,
        intervals(
            ("chrA", 1000, 1200, "+"),  # room on both sides
            ("chrA", 30, 80, "."),  # the flank clipped at the contig start
            ("chrA", 11950, 12000, "+"),  # ... and at its end (chrA is 12000 bases)
            ("chrB", 150, 2100, "-"),  # soft-masked bases come back upper-case
            ("chrC", 0, 1, "+"),  # a one-base contig
        ),
    )
    got = [(r["window_start"], r["window_end"], r["span_start"], r["span_end"]) for r in rows]
    assert got == [
        (900, 1300, 100, 300),
        (0, 180, 30, 80),
        (11850, 12000, 100, 150),
        (50, 2200, 100, 2050),
        (0, 1, 0, 1),
    ]
    for r in rows:
        seq = contigs[r["seq_id"]][r["window_start"] : r["window_end"]].upper()
        assert r["sequence"] == seq and r["strand"] == "+"
        assert (
            seq[r["span_start"] : r["span_end"]]
            == contigs[r["seq_id"]][r["start"] : r["end"]].upper()
        )
    assert [r["name"] for r in rows] == ["p0", "p1", "p2", "p3", "p4"]
    assert [r["bed_strand"] for r in rows] == ["+", ".", "+", "-", "+"]
    assert len({r["chunk_id"] for r in rows}) == 5


def test_stranded_minus_intervals_are_reverse_complements_with_the_span_mirrored(reference):
    _, contigs = reference
    plus, minus = run(
        reference, intervals(("chrA", 1000, 1200, "+"), ("chrA", 1000, 1200, "-")), stranded=True
    )
    assert plus["strand"] == "+" and minus["strand"] == "-"
    assert minus["sequence"] == reverse_complement(plus["sequence"])
    # 100 flank bases on each side: the span is where it was, counted from the other end.
    assert (minus["span_start"], minus["span_end"]) == (100, 300)
    assert minus["sequence"][100:300] == reverse_complement(contigs["chrA"][1000:1200])
    # Same coordinates, another row: the ids differ.
    assert plus["chunk_id"] != minus["chunk_id"]


def test_both_strands_and_merged_strands(reference):
    both = run(reference, intervals(("chrA", 0, 50, "+")), reverse_complement=True)
    assert [r["strand"] for r in both] == ["+", "-"]
    assert (both[1]["span_start"], both[1]["span_end"]) == (100, 150)  # window [0, 150)
    (merged,) = run(reference, intervals(("chrA", 0, 50, "+")), reverse_complement="merge")
    assert merged["sequence_rc"] == reverse_complement(merged["sequence"])


def test_unknown_contig_and_intervals_past_the_end(reference):
    with pytest.raises(InputError, match=r"peaks.bed: interval 1 \(chrZ:5-10.*'chrZ' is not in"):
        run(reference, intervals(("chrA", 0, 10, "+"), ("chrZ", 5, 10, "+")))
    with pytest.raises(InputError, match="past the end of chrA \\(12000 bases\\)"):
        run(reference, intervals(("chrA", 11990, 12010, "+")))
    stats = StatsSink()
    rows = run(
        reference,
        intervals(("chrZ", 5, 10, "+"), ("chrA", 0, 10, "+"), ("chrA", 11990, 12010, "+")),
        stats,
        on_error="skip",
    )
    assert [r["seq_id"] for r in rows] == ["chrA"]
    totals = stats.totals()
    assert totals["records_skipped"] == 2 and totals["windows"] == 1
    assert [s["seq_id"] for s in totals["skipped"]] == ["chrZ", "chrA"]
    assert "not in the reference" in totals["skipped"][0]["reason"]


def test_per_token_size_limit_names_the_interval(reference):
    path, _ = reference
    stage = RegionWindowStage(
        WindowConfig(flank=10), False, "k", str(path), None, InputConfig(), None, max_interval=100
    )
    with pytest.raises(
        InputError,
        match=r"interval 1 \(chrA:0-101.*101 bases is longer than "
        r"embed.per_token_max_tokens=100",
    ):
        list(stage(intervals(("chrA", 0, 100, "+"), ("chrA", 0, 101, "+"))))
