"""benchmarks/gpu_session.sh: valid bash, every mode listed, and every Python module a mode
runs exists (the modes point at benchmarks/questions and benchmarks/harness)."""

from __future__ import annotations

import importlib.util
import re
import subprocess

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_session.sh"
MODES = [
    "prep", "engine-vs-pipeline", "raydata-llm", "hf-fidelity", "moe-kernel", "moe-tiles",
    "mfu-knobs", "ray-jobs", "scaling", "layers-1_2b", "layers-10b", "loci-1_2b", "loci-10b",
    "scale", "startup-1_2b", "startup-10b", "tp2", "serve", "genome", "scores", "tracks",
]  # fmt: skip


def test_the_script_parses_and_keeps_every_mode():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    labels = re.findall(r"^  ([a-z0-9_|-]+)\)$", text, re.M)
    cases = {m for label in labels for m in label.split("|")}
    assert cases == set(MODES)
    usage = text[text.index('echo "usage:') :].split("exit 2")[0]
    assert set(re.findall(r"[a-z][a-z0-9_-]+", usage)) >= set(MODES)


def test_every_module_a_mode_runs_exists():
    text = SCRIPT.read_text().replace("$Q.", "benchmarks.questions.")
    modules = set(re.findall(r"python3? -m ([\w.]+)", text))
    modules |= {f"benchmarks.questions.{m}" for m in re.findall(r"BENCH_MODULE=(\w+)", text)}
    assert "benchmarks.questions.engine_vs_pipeline" in modules
    for module in sorted(modules - {"pip"}):
        assert importlib.util.find_spec(module) is not None, module
    for script in re.findall(r"python3 (benchmarks/[\w/]+\.py)", text):
        assert (REPO / script).is_file(), script
