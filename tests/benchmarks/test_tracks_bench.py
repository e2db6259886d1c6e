"""The tracks benchmark (benchmarks/questions/tracks.py): its host part counts the tokens the
pipeline's stages make of its generated chromosome, and its projection adds up."""

from __future__ import annotations

import json

from benchmarks.questions import tracks


def test_the_host_part_counts_both_strands_tokens(tmp_path, monkeypatch):
    monkeypatch.setattr(tracks, "WORK", tmp_path / "work")
    out = tmp_path / "out"
    args = ["--parts", "host", "--device", "cpu", "--model", "small", "--smoke", "--out", str(out)]
    assert tracks.main(args) == 0
    host = json.loads((out / "tracks.json").read_text())["host"]
    # 50,000 bases, 1,000 N at each end; windows of 1,024 every 768 over the whole record,
    # each kept on both strands where its scored bases hold an A, C, G or T.
    assert host["bases"] == 50_000
    n = tracks.n_run(50_000)
    starts = range(0, 50_000 - 1024 + 768, 768)
    tokens = 0
    for a in starts:
        b = min(a + 1024, 50_000)
        forward = (a + 256 if a else 0, b)
        reverse = (a, b if b == 50_000 else a + 768)
        tokens += (b - a) * sum(lo < 50_000 - n and hi > n for lo, hi in (forward, reverse))
    assert host["tokens"] == tokens


def test_the_projection_is_engine_start_up_and_bigwigs():
    f = {"steady_tok_s": 400_000.0, "tokens_per_base": 1.143, "startup_s": 60.0, "bigwig_s": 8.0}
    p = tracks.projection(f, engines=1, scored=10_000_000)
    engine = tracks.GRCH38 * 2.286 / 400_000
    bigwig = 8.0 * tracks.GRCH38 / 10_000_000
    assert p["grch38_on_1_engine_s"] == round(engine)
    assert p["grch38_on_1_s"] == round(engine + 60 + bigwig)
    assert p["grch38_on_8_s"] == round(engine / 8 + 60 + bigwig)
    assert tracks.GRCH38 == 3_088_269_832
