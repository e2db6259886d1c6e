from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.errors import InputError
from pipeline.read.stage import ReadStage
from pipeline.stages import StatsSink
from tests.fastx_fixtures import fasta_text, random_records, write

MALFORMED_FASTQ = (
    "@ok1\nACGT\n+\nIIII\n"
    "@short_qual\nACGT\n+\nII\n"
    "@ok1\nGGGG\n+\nIIII\n"  # duplicate id
    "@bad_char\nACXT\n+\nIIII\n"
    "@ok2\r\nCCCC\r\n+\r\nIIII\r\n"  # CRLF is fine
    "@cut\nACGTACGT\n+\nIII"  # cut mid-line at the end of the file
)


def read(path, **kw):
    stats = StatsSink()
    tables = list(ReadStage(stats=stats, **kw)(pa.table({"source": [str(path)]})))
    rows = [r for t in tables for r in t.to_pylist()]
    return rows, stats.totals()


def test_malformed_records_fail_naming_file_record_and_reason(tmp_path):
    path = write(tmp_path / "m.fq", MALFORMED_FASTQ)
    with pytest.raises(
        InputError,
        match=r"m\.fq: malformed fastq record 1 \(0-based\) "
        r"'short_qual': quality has 2 characters",
    ):
        read(path)


def test_malformed_records_skipped_and_counted(tmp_path):
    path = write(tmp_path / "m.fq", MALFORMED_FASTQ)
    rows, totals = read(path, on_error="skip")
    assert [(r["seq_id"], r["sequence"]) for r in rows] == [("ok1", "ACGT"), ("ok2", "CCCC")]
    reasons = [(s["seq_id"], s["reason"]) for s in totals["skipped"]]
    assert [r[0] for r in reasons] == ["short_qual", "ok1", "bad_char", "cut"]
    assert "quality has 2 characters, the sequence 4" in reasons[0][1]
    assert "duplicate sequence id 'ok1' (record 2)" in reasons[1][1]
    assert "'X' at position 2" in reasons[2][1]
    assert "record cut at the end of the file" in reasons[3][1]
    assert all(s["source"] == str(path) for s in totals["skipped"])
    # records in = records passed on + records skipped
    assert totals["records"] == 6 == len(rows) + totals["records_skipped"]
    assert totals["records_to_window"] == len(rows) and totals["inputs_read"] == 1
    assert totals["input_errors"] == []


def test_truncated_gzip(tmp_path):
    full = write(tmp_path / "full.fa.gz", fasta_text(random_records(4, 30, 800, 900)), gz=True)
    cut = tmp_path / "cut.fa.gz"
    cut.write_bytes(full.read_bytes()[: len(full.read_bytes()) * 2 // 3])
    with pytest.raises(InputError, match=r"cut\.fa\.gz: truncated or corrupt gzip"):
        read(cut)
    rows, totals = read(cut, on_error="skip")
    (err,) = totals["input_errors"]
    assert err["uri"] == str(cut) and "truncated" in err["reason"]
    assert err["records_read"] == len(rows) == totals["records"] > 0
    assert totals["records_to_window"] == len(rows)
    assert totals["inputs"][0]["complete"] is False
