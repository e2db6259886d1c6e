"""The benchmark scripts, small: FLOP counts, workloads, and a CPU smoke run of every contender."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.harness import shapes, workloads
from tests.conftest import REPO


def test_shapes_have_the_advertised_sizes():
    small, big = shapes.SHAPES["genos_1_2b"], shapes.SHAPES["genos_10b"]
    assert 1.1e9 < small.total_params() < 1.3e9
    assert 9.8e9 < big.total_params() < 10.8e9
    assert 0.3e9 < small.active_params() < 0.4e9
    # 2 x active params per token, plus causal attention that grows with length.
    assert big.flops(8192) == pytest.approx(
        2 * big.active_params() * 8192 + 2 * 12 * 8192**2 * 4096
    )


def test_genome_workload_lengths():
    records = workloads.make_records("genome", 3_000_000, 8192, seed=0)
    lengths = [len(r) for _, r in records]
    assert sum(lengths) == 3_000_000
    assert min(lengths) >= 1000 and max(lengths) <= 2_000_000
    assert len({*lengths}) > 5  # a mix, with short tails once windowed
    uniform = workloads.make_records("uniform", 5 * 8192, 8192, seed=0)
    assert [len(r) for _, r in uniform] == [8192] * 5
    assert all(np.isin(r, [0, 1, 2, 3]).all() for _, r in uniform)


@pytest.mark.slow
def test_cpu_smoke_run_of_every_contender(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.questions.engine_vs_pipeline",
            "--device",
            "cpu",
            "--models",
            "tiny",
            "--workloads",
            "uniform",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    rows = {r["contender"]: r for r in report["runs"]}
    assert set(rows) == {"engine", "dnaembed", "hf_today", "hf_tuned", "raydata", "hf_fp32"}
    for name, r in rows.items():
        assert "error" not in r, (name, r)
        assert r["tok_s_wall"] > 0
        assert r["pearson_min_fp32"] >= 0.9999 and r["rel_l2_max_fp32"] <= 1e-4, (name, r)
        if name == "hf_fp32":  # the reference: the sample only, no throughput claimed
            assert r["windows"] == 8 and r["tok_s"] is None and r["rel_l2_max_fp32"] == 0
            continue
        assert r["windows"] == 8 and r["tokens"] == 8 * 2048
        assert r["tok_s"] > 0 and r["steady_s"] <= r["wall_s"], (name, r)
        assert r["pearson_min"] >= 0.9999 and r["rel_l2_max"] <= 1e-4, (name, r)
    assert "tiny/uniform: dnaembed / engine" in report["ratios"]
    assert "tiny/uniform: dnaembed / raydata" in report["ratios"]
    assert "model | workload | contender" in proc.stdout

    # Lanes that ran side by side merge into one table, fidelity taken across lanes.
    refs = [r for r in report["runs"] if r["contender"] in ("hf_today", "hf_fp32")]
    others = [
        {k: v for k, v in r.items() if not k.startswith(("pearson", "rel_l2", "n"))}
        for r in report["runs"]
        if r["contender"] not in ("hf_today", "hf_fp32")
    ]
    lanes = []
    for i, part in enumerate((others, refs)):
        lanes.append(tmp_path / f"lane{i}.json")
        lanes[-1].write_text(json.dumps({**report, "runs": part}))
    merged_path = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.harness.report",
            *map(str, lanes),
            "--out",
            str(merged_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = {r["contender"]: r for r in json.loads(merged_path.read_text())["runs"]}
    for name, r in rows.items():
        for key in ("pearson_min", "rel_l2_max", "pearson_min_fp32", "rel_l2_max_fp32"):
            assert merged[name][key] == pytest.approx(r[key]), (name, key)
    assert json.loads(merged_path.read_text())["ratios"] == report["ratios"]


def test_moe_tune_candidates_fit_and_merge_keeps_small_steps_default():
    from benchmarks.questions import moe_tune

    tiles = moe_tune.candidates()
    assert tiles and all(set(t) == set(moe_tune.KEYS) for t in tiles)
    for t in tiles:  # bf16 operands of A (M x K) and B (K x N), one buffer per stage
        smem = (t["BLOCK_SIZE_M"] + t["BLOCK_SIZE_N"]) * t["BLOCK_SIZE_K"] * 2 * t["num_stages"]
        assert smem <= moe_tune.SMEM_BYTES
    # The tile shipped for Genos-10B on H200 is one the search can find.
    shipped = (128, 256, 64, 8, 3)
    keys = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "num_warps", "num_stages")
    assert shipped in [tuple(t[k] for k in keys) for t in tiles]
    table = moe_tune.merge({131072: {"a": 1}, 2048: {"b": 2}}, {1: {"d": 1}, 2048: {"d": 2}})
    assert list(table) == ["1", "2048", "131072"]  # numeric order, as vLLM writes them
    assert table["2048"] == {"b": 2} and table["1"] == {"d": 1}


@pytest.mark.slow
def test_layers_benchmark_cpu_smoke(tmp_path):
    """benchmarks/questions/layers.py end to end on the tiny model: every layer x pooling of our
    engine model against HF, in a subprocess as on the GPU."""
    out = tmp_path / "layers.json"
    env = {**os.environ, "LAYERS_WORK": str(tmp_path / "work")}
    args = "--shape tiny --device cpu --parts fidelity --windows 2 --length 256 --reps 1"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.questions.layers", *args.split(), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["fidelity"]
    assert {(r["layer"], r["pooling"]) for r in rows} == {
        (k, p) for k in range(3) for p in ("mean", "max", "last")
    }
    assert all(r["rel_l2_max"] <= 1e-4 and r["pearson_min"] >= 0.99999 for r in rows), rows


def test_loci_inputs_are_valid_and_windows_follow_the_rule(tmp_path):
    """benchmarks/questions/loci.py's generated reference, BED and VCF read cleanly with our
    readers, and the windows it gives the bare engine are the pipeline's own."""
    from benchmarks.questions import loci
    from pipeline.read.bed import iter_intervals
    from pipeline.read.reference import Reference
    from pipeline.read.vcf import Variant, iter_variants
    from pipeline.window.windows import alt_window_sequence, variant_window

    seqs = loci.write_reference(tmp_path / "ref.fa.gz", 2, 20_000)
    assert Reference.prepare(str(tmp_path / "ref.fa.gz")) == {"chr1": 20_000, "chr2": 20_000}
    beds = loci.write_bed(tmp_path / "p.bed", seqs, 50)
    assert len(list(iter_intervals(str(tmp_path / "p.bed")))) == len(beds) == 50
    alleles = loci.write_vcf(tmp_path / "v.vcf", seqs, 80)
    parsed = list(iter_variants(str(tmp_path / "v.vcf")))
    assert all(isinstance(v, Variant) for v in parsed) and len(parsed) == len(alleles) >= 80
    assert len({(c, p) for c, p, *_ in alleles}) < len(alleles)  # sites with several ALTs
    refs, alts = loci.variant_windows(seqs, alleles, 1000)
    for (c, pos, ref, alt), r, a in zip(alleles, refs, alts, strict=True):
        start, end = variant_window(pos, 1000, len(seqs[c]))
        assert r == seqs[c][start:end]
        fetch = lambda x, y, s=seqs[c]: s[x:y]  # noqa: E731
        assert a == alt_window_sequence(fetch, start, pos, ref, alt, 1000, len(seqs[c]))
