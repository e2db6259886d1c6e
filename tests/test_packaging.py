"""dnaembed installs like a tool: a wheel (not `-e`) with its configs, run from anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline.load.loader import load_embeddings, read_manifest
from tests.conftest import REPO


def test_every_directory_of_the_package_is_listed():
    """pyproject.toml lists packages by hand (conf/ is mapped into the package); a new
    directory that is not listed would be missing from the wheel."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {v: k for k, v in setuptools["package-dir"].items()}
    found = set()
    for root in ("pipeline", "conf"):
        for d in [REPO / root, *(p for p in (REPO / root).rglob("*") if p.is_dir())]:
            rel = d.relative_to(REPO)
            if "__pycache__" in rel.parts:
                continue
            top = mapped.get(rel.parts[0], rel.parts[0])
            found.add(".".join([top, *rel.parts[1:]]))
    assert found == set(setuptools["packages"])


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, installed (no -e) into a fresh target."""
    tmp = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("dnaembed-*.whl")
    target = tmp / "site"
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools' scratch
    return target


def dnaembed(target: Path, cwd: Path, *args: str, timeout: int = 60, script: str = "dnaembed"):
    """The installed console script, from a directory outside the checkout; the wheel's
    package comes first on the path (the venv's dependencies serve the rest)."""
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run(
        [str(target / "bin" / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_wheel_holds_the_configs(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    proc = subprocess.run(
        [sys.executable, "-c", "import pipeline.compose as c; print(c.conf_dir())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == installed / "pipeline" / "conf"
    assert (installed / "pipeline/embed/moe_configs").is_dir()


def test_help_and_config_from_anywhere(installed, tmp_path):
    proc = dnaembed(installed, tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "model: genos_10b, genos_1_2b, tiny" in proc.stdout
    assert "output.path=??? (required)" in proc.stdout and "input.regions=null" in proc.stdout
    assert "Traceback" not in proc.stderr
    proc = dnaembed(installed, tmp_path, "--cfg", "job", "model=tiny", "input=x.fa", "output=o")
    assert proc.returncode == 0, proc.stderr
    assert "path: x.fa" in proc.stdout and "name: tiny" in proc.stdout
    proc = dnaembed(installed, tmp_path, "model=tiny", "input=x.fa", "output=o", "window.size=0")
    assert proc.returncode == 2
    assert proc.stderr == "dnaembed: error: window.size must be >= 1, got 0\n"


def test_the_service_command_from_anywhere(installed, tmp_path):
    proc = dnaembed(installed, tmp_path, "--help", script="dnaembed-serve")
    assert proc.returncode == 0, proc.stderr
    assert "model: genos_10b, genos_1_2b, tiny" in proc.stdout
    assert "serve.port=8000" in proc.stdout and "output.path" not in proc.stdout
    proc = dnaembed(installed, tmp_path, "--cfg", "job", "model=tiny", script="dnaembed-serve")
    assert proc.returncode == 0, proc.stderr
    assert "strands: forward" in proc.stdout and "name: tiny" in proc.stdout
    assert not (tmp_path / "outputs").exists()  # nothing ran
    proc = dnaembed(installed, tmp_path, "model=tiny", "serve.port=0", script="dnaembed-serve")
    assert proc.returncode == 2
    assert proc.stderr == "dnaembed-serve: error: serve.port must be in [1, 65535], got 0\n"


@pytest.mark.slow
def test_a_run_of_the_installed_tool_with_a_user_model(installed, tmp_path, tiny_model):
    """`-cd my_conf model=mine`: the user's model config beside the shipped ones; a quiet
    terminal; Hydra's record and the log file in the run directory."""
    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "mine.yaml").write_text(
        f"name: mine\npath: {tiny_model}\ndtype: float32\nmax_model_len: 4096\n"
        "engine_kwargs:\n  enforce_eager: true\n"
    )
    shutil.copy(REPO / "pipeline/demo/reads.fastq.gz", tmp_path / "reads.fq.gz")
    proc = dnaembed(
        installed,
        tmp_path,
        "-cd",
        "my_conf",
        "model=mine",
        "input=reads.fq.gz",
        "output=out",
        "window.size=1024",
        "hydra.run.dir=runs/first",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = read_manifest(str(tmp_path / "out"))
    assert manifest["model"]["name"] == "mine" and manifest["counts"]["records"] == 24
    assert load_embeddings(str(tmp_path / "out")).num_rows == manifest["counts"]["windows"]
    lines = proc.stdout.splitlines()
    assert lines[0] == f"dnaembed: {tmp_path / 'reads.fq.gz'} -> out"
    assert lines[-1].startswith("dnaembed: 24 records (0 skipped), ")
    assert len(lines) <= 8, proc.stdout
    # Library lines stay off the terminal: at most Ray core's one line about actor restarts.
    noise = [x for x in proc.stderr.splitlines() if "core_worker.cc" not in x]
    assert noise == [], proc.stderr
    run_dir = tmp_path / "runs" / "first"
    assert (run_dir / ".hydra" / "config.yaml").exists()
    assert "model=mine" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    log = (run_dir / "dnaembed.log").read_text()
    assert "resolved config" in log and "dnaembed.workers" in log  # the engine's own lines
    assert (tmp_path / "out" / "_config.yaml").read_text().startswith("input:")
