from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.config import WindowConfig
from pipeline.read.stage import ReadStage
from pipeline.rows import WINDOW_SCHEMA
from pipeline.stages import StatsSink
from pipeline.window.stage import WindowStage
from pipeline.window.windows import reverse_complement
from tests.fastx_fixtures import fasta_text, fastq_text, random_records, write


def records_table(records, source="src"):
    return pa.table(
        {
            "source": [source] * len(records),
            "seq_id": [r[0] for r in records],
            "record_index": list(range(len(records))),
            "sequence": pa.array([r[1] for r in records], pa.large_string()),
        }
    )


def run_window(records, stats=None, **cfg):
    stage = WindowStage(WindowConfig(**cfg), "model", stats or StatsSink())
    tables = list(stage(records_table(records)))
    return (
        pa.concat_tables(tables, promote_options="none") if tables else WINDOW_SCHEMA.empty_table()
    )


def test_windows_carry_coordinates_and_sequence():
    seq = "ACGTACGTAA"
    out = run_window([("r", seq)], size=4, stride=3).to_pylist()
    assert [(w["start"], w["end"]) for w in out] == [(0, 4), (3, 7), (6, 10)]
    assert [w["sequence"] for w in out] == [seq[0:4], seq[3:7], seq[6:10]]
    assert {w["strand"] for w in out} == {"+"}
    assert len({w["chunk_id"] for w in out}) == 3


def test_reverse_complement_rows_share_coordinates():
    out = run_window([("r", "AACCGGTTA")], size=4, stride=4, reverse_complement=True).to_pylist()
    plus = [w for w in out if w["strand"] == "+"]
    minus = [w for w in out if w["strand"] == "-"]
    assert [(w["start"], w["end"]) for w in plus] == [(w["start"], w["end"]) for w in minus]
    for p, m in zip(plus, minus, strict=True):
        assert m["sequence"] == reverse_complement(p["sequence"])
        assert m["chunk_id"] != p["chunk_id"]


def test_n_policy_skip_and_skipped_records_reported():
    stats = StatsSink()
    records = [
        ("good", "ACGT" * 10),
        ("mostly_n", "ACGT" + "N" * 36),
        ("empty", ""),
        ("short", "ACG"),
        ("mixed", "ACGT" * 4 + "N" * 20 + "ACGT"),
    ]
    out = run_window(
        records, stats, size=20, stride=20, n_policy="skip", max_n_fraction=0.5, min_length=5
    )
    kept = {(w["seq_id"], w["start"]) for w in out.to_pylist()}
    assert kept == {("good", 0), ("good", 20), ("mixed", 0)}
    totals = stats.totals()
    reasons = {s["seq_id"]: s["reason"] for s in totals["skipped"]}
    assert set(reasons) == {"mostly_n", "empty", "short"}
    assert reasons["empty"] == "empty sequence"
    assert "min_length" in reasons["short"]
    assert "max_n_fraction" in reasons["mostly_n"]
    assert totals["windows"] == 3
    assert totals["windows_skipped_n"] == 3  # mostly_n x2, mixed [20, 40)
    assert totals["records_skipped"] == 3


def test_drop_policy_on_short_record_is_reported():
    stats = StatsSink()
    out = run_window([("tiny", "ACGT"), ("ok", "ACGTACGT")], stats, size=8, last="drop")
    assert out.column("seq_id").to_pylist() == ["ok"]
    (skip,) = stats.totals()["skipped"]
    assert skip["seq_id"] == "tiny" and "window.last=drop" in skip["reason"]


def test_min_length_drops_short_final_windows():
    stats = StatsSink()
    out = run_window([("r", "A" * 21)], stats, size=10, min_length=5)
    assert [(w["start"], w["end"]) for w in out.to_pylist()] == [(0, 10), (10, 20)]
    assert stats.totals()["windows_dropped"] == 1


def test_batches_are_bounded():
    out_batches = list(
        WindowStage(WindowConfig(size=10, stride=10, batch_windows=7), "m")(
            records_table([("r", "A" * 1000)])
        )
    )
    assert [t.num_rows for t in out_batches] == [7] * 14 + [2]


def test_missing_column_is_named():
    with pytest.raises(KeyError, match=r"WindowStage needs column\(s\) \['record_index'\]"):
        list(
            WindowStage(WindowConfig(), "m")(
                pa.table({"source": ["s"], "seq_id": ["r"], "sequence": ["A"]})
            )
        )


@pytest.mark.parametrize("kind", ["fa", "fa.gz", "fq", "fq.gz"])
def test_fasta_fastq_gz_give_the_same_windows(tmp_path, kind):
    records = random_records(seed=5, n=6, min_len=1, max_len=400)
    text = fasta_text(records, 70) if kind.startswith("fa") else fastq_text(records)
    path = write(tmp_path / f"x.{kind}", text, gz=kind.endswith("gz"))
    reference = write(tmp_path / "ref.fa", fasta_text(records, None))

    def windows(p):
        tables = ReadStage()(pa.table({"source": [str(p)]}))
        stage = WindowStage(WindowConfig(size=64, stride=48, reverse_complement=True), "m")
        rows = [w for t in tables for out in stage(t) for w in out.to_pylist()]
        return [(w["seq_id"], w["start"], w["end"], w["strand"], w["sequence"]) for w in rows]

    assert windows(path) == windows(reference)
    assert len(windows(path)) > 12
