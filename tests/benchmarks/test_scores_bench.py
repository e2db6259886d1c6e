"""The variant scores benchmark (benchmarks/questions/scores.py): its generated VCF and the
windows it gives vLLM follow the pipeline's rules, and a CPU smoke run (tiny model, 255-base
windows, both layouts, vLLM's prompt_logprobs beside) writes its rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.questions import scores
from tests.conftest import REPO


def test_vcf_and_windows_follow_the_pipeline(tmp_path):
    from pipeline.read.vcf import Variant, iter_variants
    from pipeline.window.windows import alt_window_sequence, variant_window

    seqs = scores.write_reference(tmp_path / "ref.fa.gz", 2, 20_000)
    alleles = scores.write_vcf(tmp_path / "v.vcf.gz", seqs, 200, seed=1)
    parsed = list(iter_variants(str(tmp_path / "v.vcf.gz")))
    assert all(isinstance(v, Variant) for v in parsed) and len(parsed) == len(alleles) == 200
    assert [(v.seq_id, v.pos, v.ref, v.alt) for v in parsed] == alleles
    snvs = sum(len(r) == len(a) == 1 for _, _, r, a in alleles)
    assert 140 <= snvs <= 180 and snvs < len(alleles)  # mostly SNVs, some indels
    to_ids = scores.LUT[np.frombuffer(b"ACGT", np.uint8)]
    for layout, before in (("centred", None), ("end", 255 - 31)):
        ref, alt, offsets = scores.windows(seqs, alleles, 255, scores.before_of(layout, 255, 31))
        for i, (c, pos, r, a) in enumerate(alleles):
            start, end = variant_window(pos, 255, len(seqs[c]), before)
            fetch = lambda x, y, s=seqs[c]: s[x:y]  # noqa: E731
            want_alt = alt_window_sequence(fetch, start, pos, r, a, 255, len(seqs[c]))
            assert offsets[i] == pos - 1 - start
            for got, want in ((ref[i], seqs[c][start:end]), (alt[i], want_alt)):
                assert got.tolist() == [int(to_ids["ACGT".index(b)]) for b in want]


def test_values_per_window():
    assert scores.per_window("255:31,8192:256", [255], "x") == {255: 31}
    assert scores.per_window("40", [255, 8192], "x") == {255: 40, 8192: 40}
    assert scores.per_window("9,255:4", [255, 8192], "x") == {255: 4, 8192: 9}
    with pytest.raises(SystemExit):
        scores.per_window("255:4", [8192], "x")


@pytest.mark.slow  # ~80-110 s on 2 cores: two runs of the user's command and vLLM's engine
def test_cpu_smoke_run(tmp_path):
    out = tmp_path / "scores.json"
    env = {**os.environ, "SCORES_WORK": str(tmp_path / "work")}
    cmd = [sys.executable, "-m", "benchmarks.questions.scores", "--device", "cpu"]
    cmd += ["--shapes", "tiny", "--windows", "255", "--variants", "48", "--end-bases", "31"]
    cmd += ["--peer-variants", "48", "--fidelity", "16", "--parts", "layouts,peer"]
    cmd += ["--contigs", "2", "--contig-mbp", "0.2", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "windows per variant" in proc.stdout
    report = json.loads(out.read_text())
    rows = {r["layout"]: r for r in report["rows"]}
    assert set(rows) == {"centred", "end"} and report["beside"] == []
    for r in rows.values():
        assert "error" not in r, r
        assert r["command"][:2] == ["-m", "pipeline"] and "embed.layers=[]" in r["command"]
        assert r["variants"] == 48 and r["records_skipped"] == 0
        assert r["engine_tokens"] == 2 * 48 * 255 and r["windows_submitted_per_variant"] == 2.0
        assert 0 < r["engine_span_s"] < r["wall_s"]
        assert r["variants_per_h_span"] > r["variants_per_h_wall"] > 0
        peer = r["peer"]["on"]
        assert peer["variants"] == 48 and peer["tokens"] == 2 * 48 * 255
        assert peer["variants_per_h"] > 0
        # float32 on CPU: vLLM's prompt logprobs and dnaembed's scores agree closely.
        assert r["fidelity"]["variants"] == 16 and r["fidelity"]["max_abs_diff"] < 1e-2
    end, centred = rows["end"], rows["centred"]
    # The alternate window reuses its reference's cached blocks of left context.
    assert end["engine_tokens_computed"] < end["engine_tokens"]
    assert end["windows_per_variant"] < centred["windows_per_variant"] <= 2.0
    got = report["peer"]["tiny-on"]
    assert got["enable_prefix_caching"] is True and got["engine_start_s"] > 0
