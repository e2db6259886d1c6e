"""Object storage for real: input and output on an S3 HTTP endpoint (moto's server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import find_user_error
from pipeline.load.loader import load_embeddings, read_manifest
from pipeline.run import run
from tests import faults
from tests.conftest import REPO, SECRET, compose_config

pytestmark = pytest.mark.slow


def listing(s3, prefix):
    s3.invalidate_cache()
    return sorted(s3.find(prefix))


def test_s3_in_and_out_with_a_broken_upload_first(ray_session, s3, s3_endpoint, tmp_path):
    inb, outb = f"in-{s3.name}", f"out-{s3.name}"
    s3.put(str(REPO / "pipeline/demo/reads.fastq.gz"), f"{inb}/corpus/reads.fq.gz")
    s3.put(str(REPO / "pipeline/demo/NC_045512.2.fasta"), f"{inb}/corpus/genome.fa")
    s3.pipe(f"{inb}/corpus/notes.txt", b"not an input")
    args = [
        "model=tiny",
        f"input=s3://{inb}/corpus/*.f*",
        f"output=s3://{outb}/run/",
        f"storage.s3.endpoint_url={s3_endpoint}",
        "window.size=1024",
        "output.rows_per_shard=8",
        f"log.file={tmp_path / 'run.log'}",
    ]
    lines: list[str] = []

    # A shard upload that breaks after 1000 bytes fails the run and leaves no object behind.
    faults.arm("write.bytes", 1000, "raise", once=tmp_path / "fired")
    try:
        with pytest.raises(Exception) as failed:
            run(compose_config(*args), echo=lines.append)
    finally:
        faults.disarm()
    assert "injected fault at write.bytes" in str(failed.value) or find_user_error(failed.value)
    assert (tmp_path / "fired").exists()
    shards = listing(s3, f"{outb}/run/shards")
    commits = listing(s3, f"{outb}/run/commits")
    assert len(shards) == len(commits)  # every shard visible is a committed, whole one
    assert not s3.exists(f"{outb}/run/manifest.json")
    with pytest.raises(Exception, match="no manifest: the run is incomplete"):
        load_embeddings(f"s3://{outb}/run/", storage_options={"s3": {"endpoint_url": s3_endpoint}})

    # The same command again finishes the run.
    summary = run(compose_config(*args), echo=lines.append)
    table = load_embeddings(
        f"s3://{outb}/run/", storage_options={"s3": {"endpoint_url": s3_endpoint}}
    )
    manifest = read_manifest(f"s3://{outb}/run/", {"s3": {"endpoint_url": s3_endpoint}})
    sources = set(table.column("source").to_pylist())
    assert sources == {f"s3://{inb}/corpus/reads.fq.gz", f"s3://{inb}/corpus/genome.fa"}
    assert table.num_rows == summary.windows == manifest["counts"]["windows"]
    assert table.num_rows >= 30 + 24
    assert len(set(table.column("chunk_id").to_pylist())) == table.num_rows
    c = manifest["counts"]
    assert c["records"] == 25 == c["records_embedded"] + c["records_skipped"]
    assert c["windows_resumed"] + c["windows_embedded"] == c["windows"]

    # The secret in the environment is nowhere: not in any object, log line or Ray log.
    blobs = [s3.cat(p) for p in listing(s3, outb)]
    assert blobs and not [b for b in blobs if SECRET.encode() in b]
    assert not [line for line in lines if SECRET in line]
    log = (tmp_path / "run.log").read_text()
    assert f"endpoint_url: {s3_endpoint}" in log and SECRET not in log
    assert f"endpoint_url: {s3_endpoint}" in s3.cat(f"{outb}/run/config.yaml").decode()
    session = Path(ray_session._private.worker._global_node.get_session_dir_path())
    logs = [p for p in session.rglob("*") if p.is_file()]
    assert len(logs) > 10
    assert [p for p in logs if SECRET.encode() in p.read_bytes()] == []
