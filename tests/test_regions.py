"""Regions end to end: a BED file on a real reference, real Ray, the real vLLM (CPU) engine,
checked against Hugging Face on windows this test builds itself."""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow as pa
import pytest

from pipeline.embed.reference import HFReferenceEmbedder
from pipeline.load.loader import load_embeddings, read_manifest, to_numpy
from pipeline.run import run
from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec
from pipeline.window.windows import reverse_complement
from tests.conftest import assert_declared_schema, compose_config

pytestmark = pytest.mark.slow

FLANK, MAX_LEN = 200, 1024  # a tile holds 1024 - 2 * 200 = 624 interval bases
BED = """track name=peaks description="real coordinates on the cut reference"
browser position chrA:1-1000
chrA\t1000\t1300\tpeak1\t7.5\t+
chrA\t50\t400\tnear_start\t.\t-
chrB\t17500\t17903\tat_end\t3\t-
chrA\t5000\t6500\tlong\t0\t+
chrZ\t10\t20\tnowhere\t1\t+
chrA\t1000\t1300\tpeak1_again\t1\t+
"""
LAYERS, POOLINGS = (1, 2), ("mean", "max", "last")


@pytest.fixture(scope="module")
def regions_run(ray_session, reference, tmp_path_factory, tiny_model):
    path, _ = reference
    d = tmp_path_factory.mktemp("regions")
    bed = d / "peaks.bed.gz"
    with gzip.open(bed, "wt") as f:
        f.write(BED)
    out = d / "out"
    args = [
        "model=tiny",
        f"input.reference={path}",
        f"input.regions={bed}",
        f"output={out}",
        f"window.flank={FLANK}",
        f"model.max_model_len={MAX_LEN}",
        "regions.stranded=true",
        "input.on_error=skip",
        "embed.layers=[1,-1]",
        "embed.poolings=[mean,max,last]",
        "output.rows_per_shard=2",
        "embed.per_token=true",
    ]
    lines: list[str] = []
    summary = run(compose_config(*args), echo=lines.append)
    return out, summary, lines, args


def hf_rows(tiny_model, reference):
    """What each kept interval's row must hold, computed with HF on windows built here."""
    _, contigs = reference
    a, b = contigs["chrA"].upper(), contigs["chrB"].upper()
    # (window sequence, [(tile start, tile end, span start, span end)] in window coordinates)
    peak = (a[800:1500], [(0, 700, 200, 500)])
    near_start = (reverse_complement(a[0:600]), [(0, 600, 200, 550)])  # '-': mirrored
    at_end = (reverse_complement(b[17300:17903]), [(0, 603, 0, 403)])  # chrB is 17903 long
    # [4800, 6700): the interval's 1500 bases in tiles of 624, 624 and 252, each with up to
    # 200 bases of context either side.
    long = (a[4800:6700], [(0, 1024, 200, 824), (624, 1648, 200, 824), (1248, 1900, 200, 452)])
    hf = HFReferenceEmbedder(tiny_model, dtype="float32")
    tok = DnaTokenizer(TokenizerSpec(tiny_model))
    want = {}
    for name, (seq, tiles) in {
        "peak1": peak,
        "near_start": near_start,
        "at_end": at_end,
        "long": long,
    }.items():
        ids = tok.encode(pa.array([seq], pa.large_string())).to_pylist()[0]
        pooled = hf.pooled(
            [ids[t0:t1] for t0, t1, _, _ in tiles], LAYERS, POOLINGS, [(s, e) for *_, s, e in tiles]
        )
        w = np.array([e - s for *_, s, e in tiles], dtype=np.float64)
        merged = np.stack(
            [
                np.tensordot(w, pooled[:, :, 0], axes=1) / w.sum(),
                pooled[:, :, 1].max(axis=0),
                pooled[-1, :, 2],
            ],
            axis=1,
        )
        want[name] = merged  # [layers, poolings, hidden]
    return want


def test_regions_match_hf_over_the_interval_with_its_flanks(regions_run, tiny_model, reference):
    out = regions_run[0]
    table = load_embeddings(str(out), sort=True)
    rows = table.to_pylist()
    names = [r["name"] for r in rows]
    # Sorted by coordinates; the two rows of one interval by their ids.
    assert names[0] == "near_start" and names[3:] == ["long", "at_end"]
    assert sorted(names[1:3]) == ["peak1", "peak1_again"]
    got = {r["name"]: r for r in rows}
    # Coordinates: the interval as in the BED, and the window the model saw.
    assert [
        (r["seq_id"], r["start"], r["end"], r["window_start"], r["window_end"]) for r in rows
    ] == [
        ("chrA", 50, 400, 0, 600),
        ("chrA", 1000, 1300, 800, 1500),
        ("chrA", 1000, 1300, 800, 1500),
        ("chrA", 5000, 6500, 4800, 6700),
        ("chrB", 17500, 17903, 17300, 17903),
    ]
    assert [r["strand"] for r in rows] == ["-", "+", "+", "+", "-"]
    assert [r["bed_strand"] for r in rows] == ["-", "+", "+", "+", "-"]
    assert got["peak1"]["score"] == 7.5 and got["near_start"]["score"] is None
    assert got["peak1"]["chunk_id"] != got["peak1_again"]["chunk_id"]
    want = hf_rows(tiny_model, reference)
    for name, expected in want.items():
        for li, layer in enumerate(LAYERS):
            for pi, pooling in enumerate(POOLINGS):
                col = "embedding" if (layer, pooling) == (2, "mean") else f"emb_l{layer}_{pooling}"
                ours = np.asarray(got[name][col], dtype=np.float64)
                rel = np.linalg.norm(ours - expected[li, pi]) / np.linalg.norm(expected[li, pi])
                assert rel < 1e-4, (name, col, rel)
    # embed.per_token: the interval's own tokens, one row per base, for each layer; '-' rows
    # as the model read them (from `end` down to `start`).
    tok = DnaTokenizer(TokenizerSpec(tiny_model))
    hf = HFReferenceEmbedder(tiny_model, dtype="float32")
    _, contigs = reference
    a = contigs["chrA"].upper()
    for name, seq, span in (
        ("peak1", a[800:1500], (200, 500)),
        ("near_start", reverse_complement(a[:600]), (200, 550)),
    ):
        ids = tok.encode(pa.array([seq], pa.large_string())).to_pylist()[0]
        states = hf.model(
            input_ids=__import__("torch").as_tensor([ids]), output_hidden_states=True
        ).hidden_states
        for k in LAYERS:
            want = states[k][0, span[0] : span[1]].detach().numpy()
            got_k = np.asarray(got[name][f"tokens_l{k}"], dtype=np.float32)
            assert got_k.shape == want.shape == (span[1] - span[0], 256)
            assert np.linalg.norm(got_k - want) / np.linalg.norm(want) < 2e-3, (name, k)
    assert len(got["long"]["tokens_l2"]) == 1500
    # The duplicate interval is the same window: the same numbers.
    np.testing.assert_array_equal(got["peak1"]["embedding"], got["peak1_again"]["embedding"])


def test_regions_manifest_lists_what_was_skipped_and_loads_like_any_output(regions_run):
    out, _, lines, args = regions_run
    assert_declared_schema(compose_config(*args), out)
    m = read_manifest(str(out))
    assert m["input"] == "regions"
    assert m["counts"]["records"] == 6 and m["counts"]["records_skipped"] == 1
    (skipped,) = m["skipped_records"]
    assert skipped["seq_id"] == "chrZ" and "not in the reference" in skipped["reason"]
    assert m["fingerprint_fields"]["window"]["flank"] == FLANK
    assert m["fingerprint_fields"]["regions"] == {"stranded": True}
    assert "BED" in m["coordinates"]
    # The long interval ran as three tiles; the repeated interval's window was embedded once.
    assert m["counts"]["engine_requests"] == 6 and m["counts"]["engine_requests_shared"] == 1
    meta, emb = to_numpy(str(out), embedding="emb_l1_max")
    assert emb.shape == (5, 256) and "window_start" not in meta.column_names
    assert m["fingerprint_fields"]["embed"]["per_token"] is True
    assert any("each interval +- 200 flank" in line for line in lines)
    # The same command again: complete, nothing to do.
    again = run(compose_config(*args), echo=lambda _: None)
    assert again.already_complete
