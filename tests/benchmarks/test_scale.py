"""The user's command timed (benchmarks/harness/user_command.py) and the questions that run it
(startup, scale, whole_genome): the generated genome, the GPU sampler's nvidia-smi path, the
figures from a manifest, the projection, and a CPU smoke run of the whole benchmark (the CLI on
2 engines, the bare engine, the JSON and the plot)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time

import pytest

from benchmarks.harness import user_command, workloads
from benchmarks.harness.gpu import GpuSampler
from benchmarks.questions import scale, startup, whole_genome
from tests.conftest import REPO

PNG = b"\x89PNG\r\n\x1a\n"


def read_fasta(path) -> dict[str, str]:
    records: dict[str, list[str]] = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith(">"):
                records[line[1:]] = cur = []
            else:
                assert 0 < len(line) <= 80
                cur.append(line)
    return {k: "".join(v) for k, v in records.items()}


def test_genome_is_shaped_like_an_assembly(tmp_path):
    lengths = workloads.record_lengths(1_000_000, 50)
    assert sum(lengths) == 1_000_000
    assert lengths[:2] == [400_000, 400_000] and len(lengths) == 52
    assert len(set(lengths[2:])) > 10  # contigs of many lengths
    path = tmp_path / "g.fa.gz"
    workloads.write_fasta(path, lengths)
    seqs = read_fasta(path)
    assert list(seqs)[:3] == ["chr1", "chr2", "contig00001"]
    assert [len(s) for s in seqs.values()] == lengths
    for s in seqs.values():
        n = min(10_000, len(s) // 50)
        inner = s[n : len(s) - n]
        assert n > 0 and s[:n] == s[-n:] == "N" * n
        assert set(inner) == set("ACGT")
    # Cached by its parameters: a second call does not write it again.
    first, info = workloads.genome_fasta(tmp_path, bases=20000, contigs=3)
    assert info["generated_s"] is not None and info["records"] == 5
    again, info = workloads.genome_fasta(tmp_path, bases=20000, contigs=3)
    assert again == first and info["generated_s"] is None


FAKE_SMI = """#!/bin/sh
# nvidia-smi --query-gpu=index,utilization.gpu,memory.used ... -lms=500, for two GPUs
while true; do
  echo "0, 40, 1000"
  echo "1, 90, 2000"
  sleep 0.1
done
"""


def test_gpu_sampler_falls_back_to_nvidia_smi(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml fails
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    launch = time.time()
    with GpuSampler("cuda") as sampler:
        time.sleep(0.6)
    got = sampler.to_json(launch)
    assert got["source"] == "nvidia-smi" and "pynvml" in got["note"]
    assert list(got["gpus"]) == ["1"]  # the visible GPU only
    g = got["gpus"]["1"]
    assert len(g["t"]) >= 3 and set(g["util"]) == {90.0} and set(g["mem_mib"]) == {2000.0}
    assert 0 <= g["t"][0] <= g["t"][-1] < 5
    assert GpuSampler("cpu").to_json(launch) == {
        "source": None,
        "interval_s": None,
        "note": "no GPU sampled: --device cpu",
        "gpus": {},
    }


def test_figures_from_a_manifest():
    launch = 1000.0
    engine = {
        "packs": 4,
        "tokens": 400,
        "span_s": 10.0,
        "tokens_per_s": 40.0,
        "first_pack_t0": 1020.0,
        "first_pack_t1": 1022.0,
        "starts": [
            {"engine": "a", "t0": 1005.0, "imported": 1010.0, "built": 1018.0, "ready": 1019.0},
            {"engine": "b", "t0": 1006.0, "imported": 1011.0, "built": 1021.0, "ready": 1021.5},
        ],
        "per_pack": [
            {"engine": "a", "start_s": 0.0, "s": 2.0, "windows": 1, "tokens": 100},
            {"engine": "b", "start_s": 2.0, "s": 3.0, "windows": 1, "tokens": 100},
            {"engine": "a", "start_s": 5.0, "s": 2.0, "windows": 1, "tokens": 100},
            {"engine": "a", "start_s": 7.5, "s": 2.5, "windows": 1, "tokens": 100},
        ],
    }
    rows = user_command.engine_rows(engine, launch)
    a, b = rows
    assert (a["engine"], a["label"], b["label"]) == ("a", "engine 0", "engine 1")
    assert (a["t0_s"], a["import_s"], a["build_s"], a["warmup_s"], a["ready_s"]) == (
        5.0,
        5.0,
        8.0,
        1.0,
        19.0,
    )
    # a: packs at 20-22, 25-27, 27.5-30: idle 3.0 + 0.5; waited 1 s after ready.
    assert (a["packs"], a["idle_sum_s"], a["idle_max_s"], a["wait_first_s"]) == (3, 3.5, 3.0, 1.0)
    assert (a["idle_tail_s"], a["tok_s_busy"]) == (0.0, 46.2)
    # b: one pack at 22-25, then nothing while a works on until 30.
    assert (b["packs"], b["idle_sum_s"], b["wait_first_s"], b["idle_tail_s"]) == (1, 0, 0.5, 5.0)
    manifest = {
        "engine": engine,
        "counts": {"records": 2, "bases": 400, "windows": 4, "tokens": 400},
        "elapsed_s": 38.0,
    }
    gpu = {
        "gpus": {
            "0": {"t": [0, 10, 25, 35], "util": [0, 0, 100, 0], "mem_mib": [0, 5, 7, 1]},
            "1": {"t": [0, 10, 25, 35], "util": [0, 0, 50, 0], "mem_mib": [0, 5, 9, 1]},
        }
    }
    run = {"launch": launch, "exit": 1040.0}
    f = user_command.figures(run, manifest, gpu, {"tok_s": 25.0}, engines=2)
    assert (f["wall_s"], f["startup_s"], f["first_pack_in_s"], f["first_engine_ready_s"]) == (
        40.0,
        22.0,
        20.0,
        19.0,
    )
    assert (f["steady_tok_s"], f["e2e_tok_s"], f["bare_tok_s"]) == (40.0, 10.0, 25.0)
    assert (f["e2e_vs_bare"], f["steady_vs_bare"]) == (0.2, 0.8)
    assert f["gpu_util_run"] == 18.8 and f["gpu_util_run_per_gpu"] == {"0": 25.0, "1": 12.5}
    assert f["gpu_util_busy"] == 75.0 and f["gpu_mem_max_mib"] == 9
    # No bare engine, no GPU: those figures are left out or None, the rest stands.
    f = user_command.figures(run, manifest, {"gpus": {}}, {"skipped": True}, engines=2)
    assert f["bare_tok_s"] is None and "e2e_vs_bare" not in f and "gpu_util_run" not in f


def test_human_chromosomes_are_named_and_sized_as_grch38(tmp_path, monkeypatch):
    assert sum(workloads.HUMAN.values()) == 3_088_269_832 and len(workloads.HUMAN) == 24
    # Two chromosomes at a thousandth of their size, through the same generator.
    monkeypatch.setattr(workloads, "HUMAN", {k: v // 1000 for k, v in workloads.HUMAN.items()})
    path, info = workloads.genome_fasta(tmp_path, 0, 0, chromosomes="chr21,chrY")
    assert info["chromosomes"] == ["chr21", "chrY"] and info["bases"] == 46_709 + 57_227
    with gzip.open(path, "rt") as f:
        text = f.read()
    names = [line[1:] for line in text.splitlines() if line.startswith(">")]
    assert names == ["chr21", "chrY"]
    chr21 = text.split(">chrY")[0].split("\n", 1)[1].replace("\n", "")
    assert len(chr21) == 46_709 and chr21.startswith("N" * 934) and chr21.endswith("N" * 934)
    with pytest.raises(SystemExit, match="chr23"):
        workloads.genome_fasta(tmp_path, 0, 0, chromosomes="chr21,chr23")


def test_the_projection_is_start_up_then_every_base_at_the_steady_rate():
    f = {"startup_s": 30.0, "steady_tok_s": 900_000.0}
    pr = whole_genome.projection(f, engines=2, target=8)
    assert pr["steady_tok_s_per_engine"] == 450_000 and pr["engines"] == 8
    assert pr["embed_s"] == round(3_088_269_832 / 3_600_000)
    assert pr["wall_s"] == round(30 + 3_088_269_832 / 3_600_000)


def test_each_question_runs_the_user_command_with_its_own_defaults():
    def parsed(module, *argv):
        # The options each question's main() parses (its parser, its defaults).
        ap = user_command.parser(None, **module.DEFAULTS)
        return user_command.parse(ap, list(argv))

    a = parsed(startup)
    assert (a.bases, a.contigs, a.engines, a.chromosomes) == (4_000_000, 20, 1, None)
    a = parsed(scale)
    assert (a.bases, a.contigs, a.engines, a.chromosomes) == (160_000_000, 1000, 2, None)
    a = parsed(whole_genome)
    assert (a.chromosomes, a.engines) == ("chr21,chr22", 2)
    # --smoke: the small assembly on 2 engines for every question, chromosomes included.
    for module in (startup, scale, whole_genome):
        a = parsed(module, "--smoke", "--device", "cpu")
        assert (a.bases, a.contigs, a.window, a.engines, a.chromosomes) == (
            200_000,
            20,
            2048,
            2,
            None,
        )


@pytest.mark.slow  # 80-145 s on 2 cores: two engine starts, and the bare engine's
def test_cpu_smoke_run(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "benchmarks.questions.whole_genome", "--device", "cpu"]
    cmd += ["--model", "tiny", "--smoke", "--out", str(out), "--work", str(tmp_path / "work")]
    cmd += ["--project-engines", "8"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "figure | value" in proc.stdout
    assert "projected: 3,088,269,832 bases on 8 engines (min)" in proc.stdout
    r = json.loads((out / "genome.json").read_text())
    assert r["command"][1:3] == ["-m", "pipeline"] and r["cli"]["rc"] == 0
    # No pack size given: the run sized its packs from the input, at least two per engine.
    assert "embed.num_actors=2" in r["command"]
    assert not any("max_batch_tokens" in c for c in r["command"])
    assert r["pack_tokens"] < r["max_batch_tokens"] and r["figures"]["packs"] >= 4
    assert r["gpu"]["source"] is None and "cpu" in r["gpu"]["note"]
    f = r["figures"]
    manifest = json.loads((tmp_path / "work" / "cli-run" / "_manifest.json").read_text())
    assert f["tokens"] == f["engine_tokens"] == manifest["counts"]["tokens"] == 200_000
    assert f["bases"] == r["input"]["bases"] == 200_000 and f["records"] == 22
    assert 0 < f["first_engine_ready_s"] < f["startup_s"] < f["wall_s"]
    assert 0 < f["span_s"] < f["wall_s"]
    assert f["steady_tok_s"] > f["e2e_tok_s"] > 0
    pr = r["projection"]
    assert pr["measured_engines"] == 2 and pr["startup_s"] == f["startup_s"]
    assert pr["wall_s"] == round(f["startup_s"] + 3_088_269_832 / (f["steady_tok_s"] / 2 * 8))
    # One of the run's packs' worth of full windows.
    assert r["bare"]["windows"] == r["pack_tokens"] // 2048
    assert r["bare"]["tokens"] == r["bare"]["windows"] * 2048
    assert f["bare_tok_s"] > 0
    assert f["e2e_vs_bare"] == pytest.approx(f["e2e_tok_s"] / (2 * f["bare_tok_s"]), abs=1e-3)
    assert f["steady_vs_bare"] == pytest.approx(f["steady_tok_s"] / (2 * f["bare_tok_s"]), abs=1e-3)
    engine = r["timeline"]["engine"]
    assert engine == manifest["engine"]
    started = {s["engine"] for s in engine["starts"]}
    assert len(started) == 2 and {k["engine"] for k in engine["per_pack"]} == started
    rows = r["engines"]
    assert sum(x["packs"] for x in rows) == f["packs"] == len(engine["per_pack"])
    for x in rows:
        assert 0 < x["t0_s"] < x["ready_s"] <= x["first_pack_s"] < x["last_end_s"] < f["wall_s"]
        assert x["import_s"] > 0 and x["build_s"] > 0 and x["warmup_s"] >= 0
        assert 0 <= x["idle_max_s"] <= x["idle_sum_s"] and x["idle_tail_s"] >= 0
    # The plot, and the same plot redrawn from the JSON alone.
    png = out / "genome.png"
    assert png.read_bytes()[:8] == PNG
    png.unlink()
    redraw = [sys.executable, "-m", "benchmarks.questions.scale", "--plot"]
    redraw.append(str(out / "genome.json"))
    proc = subprocess.run(redraw, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png.read_bytes()[:8] == PNG
