"""Record- and interval-level aggregates from windows, against token-level truth."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.load.aggregate import aggregate_intervals, aggregate_records
from pipeline.window.windows import chunk_id, spans
from tests.load.conftest import write_run

D = 6


def token_states(lengths: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Per record, one hidden state per token (one token per base)."""
    rng = np.random.default_rng(seed)
    return {r: rng.standard_normal((n, D)).astype(np.float32) for r, n in lengths.items()}


def windowed(states: dict[str, np.ndarray], size: int, stride: int) -> pa.Table:
    """Windows of each record with mean, max and last columns computed from the tokens."""
    rows = {k: [] for k in ("chunk_id", "source", "seq_id", "start", "end", "strand", "n_tokens")}
    cols = {"embedding": [], "emb_l2_max": [], "emb_l2_last": []}
    for rec, h in states.items():
        for start, end in spans(len(h), size, stride):
            for strand in ("+", "-"):
                rows["chunk_id"].append(chunk_id("x.fa", rec, start, end, strand, "m"))
                rows["source"].append("x.fa")
                rows["seq_id"].append(rec)
                rows["start"].append(start)
                rows["end"].append(end)
                rows["strand"].append(strand)
                rows["n_tokens"].append(end - start)
                part = h[start:end] * (1 if strand == "+" else -1)
                cols["embedding"].append(part.mean(0))
                cols["emb_l2_max"].append(part.max(0))
                cols["emb_l2_last"].append(part[-1])
    table = pa.table(
        {
            **rows,
            "start": pa.array(rows["start"], pa.int64()),
            "end": pa.array(rows["end"], pa.int64()),
            "n_tokens": pa.array(rows["n_tokens"], pa.int32()),
        }
    )
    for name, vecs in cols.items():
        flat = np.asarray(vecs, np.float32).reshape(-1)
        table = table.append_column(name, pa.FixedSizeListArray.from_arrays(pa.array(flat), D))
    return table


def vectors(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_pylist(), np.float32)


def test_record_means_are_exact_over_tokens_with_abutting_windows():
    states = token_states({"chr1": 1000, "chr2": 37})
    table = windowed(states, size=300, stride=300)
    out = aggregate_records(table, embedding="embedding").to_pylist()
    plus = {r["seq_id"]: r for r in out if r["strand"] == "+"}
    for rec, h in states.items():
        got = np.asarray(plus[rec]["embedding"])
        np.testing.assert_allclose(got, h.mean(0), rtol=1e-5, atol=1e-6)
        assert (plus[rec]["start"], plus[rec]["end"], plus[rec]["n_tokens"]) == (0, len(h), len(h))
    assert plus["chr1"]["n_windows"] == 4
    assert {(r["seq_id"], r["strand"]) for r in out} == {
        (s, t) for s in states for t in "+-"
    }  # strands stay apart


def test_max_aggregates_to_the_record_max_and_last_is_refused():
    states = token_states({"chr1": 500})
    table = windowed(states, size=128, stride=100)  # overlapping: max is still exact
    out = aggregate_records(table, embedding="emb_l2_max").filter(pa.compute.field("strand") == "+")
    np.testing.assert_array_equal(vectors(out, "emb_l2_max")[0], states["chr1"].max(0))
    with pytest.raises(ValueError, match="last-token pooled: it does not aggregate"):
        aggregate_records(table, embedding="emb_l2_last")
    with pytest.raises(ValueError, match="several embedding columns"):
        aggregate_records(table)


def test_overlapping_windows_are_token_weighted():
    states = token_states({"r": 250})
    h = states["r"]
    table = windowed(states, size=100, stride=50)
    out = aggregate_records(table, embedding="embedding").filter(pa.compute.field("strand") == "+")
    sums = sum(h[s:e].sum(0) for s, e in spans(250, 100, 50))
    tokens = sum(e - s for s, e in spans(250, 100, 50))
    np.testing.assert_allclose(vectors(out, "embedding")[0], sums / tokens, rtol=1e-5)


def test_interval_means_contained_and_overlap():
    states = token_states({"chr1": 1000, "chr2": 400})
    table = windowed(states, size=100, stride=100)
    bed = pa.table(
        {
            "chrom": ["chr1", "chr1", "chr2", "chrX"],
            "start": pa.array([100, 250, 0, 0], pa.int64()),
            "end": pa.array([400, 300, 400, 10], pa.int64()),
            "name": ["geneA", "tiny", "geneB", "nowhere"],
        }
    )
    out = aggregate_intervals(table, bed, embedding="embedding")
    rows = {(r["name"], r["strand"]): r for r in out.to_pylist()}
    # chrX has no windows and "tiny" contains none: left out, never padded.
    assert set(rows) == {(n, s) for n in ("geneA", "geneB") for s in "+-"}
    h = states["chr1"]
    np.testing.assert_allclose(rows["geneA", "+"]["embedding"], h[100:400].mean(0), rtol=1e-5)
    assert rows["geneA", "+"]["n_windows"] == 3 and rows["geneA", "+"]["chrom"] == "chr1"
    np.testing.assert_allclose(
        rows["geneB", "-"]["embedding"], -states["chr2"].mean(0), rtol=1e-5, atol=1e-6
    )

    over = {
        (r["name"], r["strand"]): r
        for r in aggregate_intervals(table, bed, embedding="embedding", how="overlap").to_pylist()
    }
    # [250, 300) lies in window [200, 300): that window's mean stands in for it.
    np.testing.assert_allclose(over["tiny", "+"]["embedding"], h[200:300].mean(0), rtol=1e-5)
    assert over["tiny", "+"]["n_tokens"] == pytest.approx(50)
    with pytest.raises(ValueError, match="how must be"):
        aggregate_intervals(table, bed, embedding="embedding", how="center")


def test_aggregates_read_a_run_directory(tmp_path):
    states = token_states({"chr1": 640})
    table = windowed(states, size=64, stride=64)
    write_run(str(tmp_path / "run"), table)
    out = aggregate_records(str(tmp_path / "run"), embedding="emb_l2_max")
    plus = out.filter(pa.compute.field("strand") == "+")
    np.testing.assert_array_equal(vectors(plus, "emb_l2_max")[0], states["chr1"].max(0))
    with pytest.raises(ValueError, match="last-token pooled"):
        aggregate_records(str(tmp_path / "run"), embedding="emb_l2_last")
