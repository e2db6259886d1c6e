from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_GENOME = REPO / "pipeline" / "demo" / "NC_045512.2.fasta"


@pytest.fixture(scope="session")
def genome_fasta() -> Path:
    """Real DNA: SARS-CoV-2 reference, from ../shared/data when present (as in CI)."""
    shared = SHARED_DATA / "NC_045512.2.fasta"
    return shared if shared.exists() else DEMO_GENOME


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from pipeline.models.tiny import tiny_model_path

    return str(tiny_model_path())


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the in-process pipeline tests (starting one takes seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def vllm_inprocess():
    """vLLM engines built in this process run their core here too (no spawn, faster start)."""
    old = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    yield
    if old is None:
        os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    else:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = old


def compose_config(*overrides: str):
    from pipeline.cli import compose, to_config

    return to_config(compose(list(overrides)))


@pytest.fixture
def make_config():
    return compose_config


@pytest.fixture
def fresh_dir(tmp_path):
    def make(name: str) -> Path:
        p = tmp_path / name
        shutil.rmtree(p, ignore_errors=True)
        return p

    return make
