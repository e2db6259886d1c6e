from __future__ import annotations

import gzip

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import attach_labels, read_bed
from pipeline.errors import InputError


def windows(spans):
    return pa.table(
        {
            "seq_id": [s for s, _, _ in spans],
            "start": pa.array([a for _, a, _ in spans], pa.int64()),
            "end": pa.array([b for _, _, b in spans], pa.int64()),
        }
    )


def test_read_bed_plain_and_gzip(tmp_path):
    text = (
        "track name=peaks\n# comment\nchr1\t10\t20\tpeakA\t5.5\t+\n"
        "chr1\t15\t40\tpeakB\t1\t-\nchr2\t0\t5\tpeakC\t0\t+\n"
    )
    (tmp_path / "p.bed").write_text(text)
    with gzip.open(tmp_path / "p.bed.gz", "wt") as f:
        f.write(text)
    for name in ("p.bed", "p.bed.gz"):
        bed = read_bed(str(tmp_path / name))
        assert bed.column_names == ["chrom", "start", "end", "name", "score", "strand"]
        assert bed.column("name").to_pylist() == ["peakA", "peakB", "peakC"]
    (tmp_path / "three.bed").write_text("chr1\t0\t10\n")
    assert read_bed(str(tmp_path / "three.bed")).column_names == ["chrom", "start", "end"]
    (tmp_path / "bad.bed").write_text("chr1\t10\t5\tx\n")
    with pytest.raises(InputError, match="interval 0 ends before it starts"):
        read_bed(str(tmp_path / "bad.bed"))


def test_labels_by_largest_overlap_half_open():
    bed = pa.table(
        {
            "chrom": ["chr1", "chr1", "chr2"],
            "start": [10, 15, 0],
            "end": [20, 40, 5],
            "name": ["A", "B", "C"],
            "score": [1.0, 2.0, 3.0],
        }
    )
    w = windows(
        [
            ("chr1", 0, 10),
            ("chr1", 10, 20),
            ("chr1", 19, 30),
            ("chr1", 40, 50),
            ("chr2", 4, 8),
            ("chr3", 0, 100),
        ]
    )
    out = attach_labels(w, bed)
    # [0,10) touches A only at its end: half-open, no overlap. [10,20): A 10 bp, B 5 bp.
    assert out.column("label").to_pylist() == [None, "A", "B", None, "C", None]
    assert out.column("overlap_bp").to_pylist() == [0, 10, 11, 0, 1, 0]
    assert attach_labels(w, bed, "binary").column("label").to_pylist() == [0, 1, 1, 0, 1, 0]
    assert attach_labels(w, bed, "score").column("label").to_pylist()[1] == 1.0
    assert attach_labels(w, bed, min_overlap=2).column("label").to_pylist()[4] is None
    assert attach_labels(w, bed, default="none").column("label").to_pylist()[0] == "none"


@st.composite
def cases(draw):
    ivs = draw(
        st.lists(
            st.tuples(st.sampled_from(["c1", "c2"]), st.integers(0, 300), st.integers(1, 120)),
            min_size=1,
            max_size=25,
        )
    )
    wins = draw(
        st.lists(
            st.tuples(st.sampled_from(["c1", "c2", "c3"]), st.integers(0, 350), st.integers(1, 60)),
            min_size=1,
            max_size=30,
        )
    )
    return [(c, s, s + n) for c, s, n in ivs], [(c, s, s + n) for c, s, n in wins]


@settings(max_examples=150, deadline=None)
@given(cases(), st.integers(1, 5))
def test_labels_match_a_brute_force_oracle(case, min_overlap):
    ivs, wins = case
    bed = pa.table(
        {
            "chrom": [c for c, _, _ in ivs],
            "start": [s for _, s, _ in ivs],
            "end": [e for _, _, e in ivs],
            "name": [f"i{k}" for k in range(len(ivs))],
        }
    )
    out = attach_labels(windows(wins), bed, min_overlap=min_overlap)
    for (c, s, e), label, ov in zip(
        wins, out.column("label").to_pylist(), out.column("overlap_bp").to_pylist(), strict=True
    ):
        best, name = 0, None
        for k, (ic, is_, ie) in enumerate(ivs):
            o = min(e, ie) - max(s, is_)
            if ic == c and o >= min_overlap and o > best:
                best, name = o, f"i{k}"
        assert (label, ov) == (name, best)
