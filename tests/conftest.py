from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Credentials for the local S3 server, set before Ray starts so its workers inherit them as
# they would on a cluster. The secret is unique to this session: tests grep for it.
SECRET = f"dnaembed-test-secret-{uuid.uuid4().hex}"
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "dnaembed-test-key",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    }
)
# Where a fault test arms a fault (tests/faults.py); set before Ray starts, so every worker
# knows where to look.
os.environ["DNAEMBED_TEST_FAULTS"] = os.path.join(
    tempfile.mkdtemp(prefix="dnaembed-faults-"), "armed.json"
)
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
def scoring_model() -> str:
    """The tiny model with weights at a trained model's scale (initializer_range 0.1): its
    log-probabilities spread over a few nats, as a DNA model's do. The default tiny model's
    large random weights make logits in the hundreds, where float32 kernels of vLLM and HF
    differ by ~1e-3 in a log-prob: too coarse to check scores against each other."""
    from pipeline.models.tiny import TinySpec, tiny_model_path

    return str(tiny_model_path(TinySpec(initializer_range=0.1)))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the in-process pipeline tests (starting one takes seconds). Its
    workers can be made to fail on demand (tests/faults.py)."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "worker_process_setup_hook": "tests.faults.install",
            "env_vars": {"PYTHONPATH": str(REPO)},
        },
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 HTTP API on loopback: moto's server (what s3fs's own tests use)."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint):
    """An s3fs filesystem on the local server, with fresh buckets per test."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    name = uuid.uuid4().hex[:12]
    for bucket in (f"in-{name}", f"out-{name}"):
        fs.mkdir(bucket)
    fs.name = name
    return fs


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


def embeddings_by_id(table) -> dict:
    """{chunk_id: embedding} of an output's table; fails if an id appears twice."""
    emb = table.column("embedding").combine_chunks().flatten().to_numpy()
    emb = emb.reshape(table.num_rows, -1)
    ids = table.column("chunk_id").to_pylist()
    assert len(set(ids)) == len(ids), "a chunk id appears twice"
    return dict(zip(ids, emb, strict=True))


def compose_config(*overrides: str):
    from pipeline.compose import compose, to_config

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


@pytest.fixture(scope="session")
def reference(genome_fasta, tmp_path_factory):
    """(indexed FASTA path, {contig: sequence as written}) of three contigs of real DNA."""
    from pipeline.read.reference import Reference
    from tests.reference_fixtures import cut_contigs, write_fasta

    contigs = cut_contigs(genome_fasta)
    path = write_fasta(tmp_path_factory.mktemp("reference") / "ref.fa", contigs)
    Reference.prepare(str(path))
    return path, contigs


def assert_declared_schema(cfg, out) -> None:
    """The written shards' schema is the one the run declares without rows (what a run of
    no rows writes: pipeline.run.write_empty_shard)."""
    import pyarrow.parquet as pq

    from pipeline.run import plan, stages
    from pipeline.stages import StatsSink

    p = plan(cfg)
    embed = stages(p, StatsSink())[-2]
    for shard in sorted((Path(out) / "shards").iterdir()):
        assert pq.read_schema(shard).remove_metadata() == embed.output_schema(p.hidden_size)
