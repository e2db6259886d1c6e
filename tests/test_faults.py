"""Faults a cluster meets: dead engines, broken uploads, a killed driver, broken inputs.

Each test arms a fault (tests/faults.py: the product knows nothing of them) and checks the
guarantee that the commit protocol gives; where it matters, a negative control shows the same fault
breaking a naive write, so the check can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline.errors import OutputError, find_user_error
from pipeline.load.loader import load_embeddings, read_manifest
from pipeline.run import run
from pipeline.storage import get_fs, write_atomic
from tests import faults
from tests.conftest import REPO, compose_config, embeddings_by_id
from tests.fastx_fixtures import fasta_text, random_records, write

pytestmark = pytest.mark.slow

SETTINGS = [
    "window.size=700",
    "window.stride=600",
    "embed.max_batch_tokens=2100",
    "output.rows_per_shard=6",
    "ray.progress_bars=false",
]
MALFORMED_FASTQ = (
    "@ok1\nACGTACGTAC\n+\nIIIIIIIIII\n@short_qual\nACGT\n+\nII\n@ok1\nGGGG\n+\nIIII\n"
    "@ok2\r\nCCCCAAAAGGGG\r\n+\r\nIIIIIIIIIIII\r\n@cut\nACGTACGT\n+\nIII"
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("fault-corpus")
    (d / "reads.fq.gz").write_bytes((REPO / "pipeline/demo/reads.fastq.gz").read_bytes())
    write(d / "mixed.fa", fasta_text(random_records(21, 6, 300, 2500), width=80))
    full = write(d / "extra.fa.gz", fasta_text(random_records(22, 30, 600, 900)), gz=True)
    (d / "cut.fa.gz").write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    write(d / "malformed.fq", MALFORMED_FASTQ)
    return d


def inputs(corpus, *names):
    return "input=[" + ",".join(str(corpus / n) for n in names) + "]"


def config(corpus, out, *extra, names=("reads.fq.gz", "mixed.fa")):
    return compose_config("model=tiny", inputs(corpus, *names), f"output={out}", *SETTINGS, *extra)


def by_id(out) -> dict[str, np.ndarray]:
    return embeddings_by_id(load_embeddings(str(out)))


def assert_accounting(out):
    """Records in = records embedded + records skipped, and the output agrees."""
    m = read_manifest(str(out))
    c = m["counts"]
    t = load_embeddings(str(out), columns=["source", "seq_id"])
    embedded = set(zip(t.column("source").to_pylist(), t.column("seq_id").to_pylist(), strict=True))
    assert c["records"] == c["records_embedded"] + c["records_skipped"]
    assert c["records_embedded"] == len(embedded)
    assert c["records_skipped"] == len(m["skipped_records"])
    assert c["windows"] == c["windows_resumed"] + c["windows_embedded"]
    return m


def assert_same(out, reference):
    got, want = by_id(out), by_id(reference)
    assert got.keys() == want.keys()
    for cid, vec in got.items():
        assert np.linalg.norm(vec - want[cid]) <= 1e-4 * np.linalg.norm(want[cid]), cid


@pytest.fixture(scope="module")
def reference(ray_session, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    run(config(corpus, out), echo=lambda *_: None)
    assert_accounting(out)
    return out


@pytest.fixture
def arm(tmp_path):
    """Arm a fault for one test: arm(point, after, action, once=True) -> the `once` file."""

    def armed(point, after, action, once=True):
        fired = tmp_path / f"fired-{point}"
        faults.arm(point, after, action, fired if once else None)
        return fired

    yield armed
    faults.disarm()


def test_engine_actor_killed_mid_run(ray_session, corpus, reference, tmp_path, arm):
    fired = arm("embed.pack", 2, "exit")
    out = tmp_path / "out"
    run(config(corpus, out), echo=lambda *_: None)
    assert fired.exists()  # the engine's process died after its second pack
    assert_same(out, reference)  # every chunk exactly once, same embeddings
    assert_accounting(out)


def test_without_actor_restarts_the_same_kill_fails_the_run(ray_session, corpus, tmp_path, arm):
    arm("embed.pack", 2, "exit")
    out = tmp_path / "out"
    with pytest.raises(Exception):  # noqa: B017 - the actor's death, in Ray's words
        run(config(corpus, out, "embed.max_restarts=0"), echo=lambda *_: None)
    assert not (out / "_manifest.json").exists()


def test_write_broken_after_k_bytes(ray_session, corpus, reference, tmp_path, arm):
    fired = arm("write.bytes", 700, "raise")
    out = tmp_path / "out"
    with pytest.raises(Exception) as e:
        run(config(corpus, out), echo=lambda *_: None)
    assert "injected fault at write.bytes after 700" in str(e.value)
    assert fired.exists()
    names = sorted(p.name for p in (out / "shards").iterdir()) if (out / "shards").exists() else []
    committed = (
        sorted(p.name.removesuffix(".json") for p in (out / "_commits").glob("part-*.json"))
        if (out / "_commits").exists()
        else []
    )
    assert names == committed  # nothing partial, nothing hidden, nothing uncommitted
    with pytest.raises(OutputError, match="incomplete"):
        load_embeddings(str(out))
    faults.disarm()
    run(config(corpus, out), echo=lambda *_: None)
    assert_same(out, reference)
    assert_accounting(out)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_negative_control_naive_write_leaves_a_partial_object(
    where, tmp_path, arm, s3, s3_endpoint
):
    """The check above can fail: a plain write broken the same way leaves a partial object."""
    base = str(tmp_path) if where == "local" else f"s3://out-{s3.name}"
    fs, root = get_fs(base, {"s3": {"endpoint_url": s3_endpoint}})
    data = os.urandom(5000)
    faults.install()  # in this process: the same wrapper the Ray workers run
    arm("write.bytes", 700, "raise", once=False)
    with pytest.raises(faults.InjectedFault):
        write_atomic(fs, f"{root}/atomic.bin", data)
    with pytest.raises(faults.InjectedFault), fs.open(f"{root}/naive.bin", "wb") as f:
        f.write(data[:700])
        faults.trigger("write.bytes", 700)
    fs.invalidate_cache()
    assert [os.path.basename(p) for p in fs.find(root)] == ["naive.bin"]
    assert fs.size(f"{root}/naive.bin") == 700


def test_two_drivers_on_one_output_one_runs_the_others_refuse_naming_it(
    ray_session, corpus, reference, tmp_path
):
    """Three drivers started together on one output, two with this config and one with
    another: one runs, the others refuse naming it; never shards of two configs."""
    out = tmp_path / "out"
    address = ray_session.get_runtime_context().gcs_address
    base = ["model=tiny", inputs(corpus, "reads.fq.gz", "mixed.fa"), f"output={out}", *SETTINGS]
    configs = [base, base, [*base, "window.stride=650"]]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args, f"ray.address={address}"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in configs
    ]
    results = [(p, *p.communicate(timeout=600)) for p in procs]
    ran = [(p, args) for (p, _, _), args in zip(results, configs, strict=True) if p.returncode == 0]
    assert len(ran) == 1, [(p.returncode, err[-500:]) for p, _, err in results]
    (winner, args) = ran[0]
    for p, _, err in results:
        if p is winner:
            continue
        assert p.returncode == 2
        (line,) = [x for x in err.splitlines() if x.startswith("dnaembed: error:")]
        assert f"is in use by another dnaembed driver: pid {winner.pid} on " in line
    m = assert_accounting(out)
    fingerprints = {json.loads(c.read_text())["fingerprint"] for c in (out / "_commits").iterdir()}
    assert fingerprints == {m["fingerprint"]}  # one config's shards, and only them
    assert not (out / "_lease.json").exists()  # released
    if args is base:
        assert_same(out, reference)


def test_truncated_input_fails_naming_it_or_is_reported(ray_session, corpus, reference, tmp_path):
    names = ("reads.fq.gz", "cut.fa.gz", "mixed.fa")
    with pytest.raises(Exception) as e:
        run(config(corpus, tmp_path / "strict", names=names), echo=lambda *_: None)
    err = find_user_error(e.value)
    assert err is not None and "cut.fa.gz: truncated or corrupt gzip" in str(err)
    assert not (tmp_path / "strict" / "_manifest.json").exists()

    out = tmp_path / "skip"
    lines = []
    run(
        config(corpus, out, "input.on_error=skip", names=(*names, "malformed.fq")),
        echo=lines.append,
    )
    m = assert_accounting(out)
    (broken,) = m["input_errors"]
    assert broken["uri"].endswith("cut.fa.gz") and broken["records_read"] > 0
    assert "warning: input broke off" in lines[-1]
    skipped = {(s["seq_id"], s["reason"].split(":")[-1].strip()) for s in m["skipped_records"]}
    assert {s for s, _ in skipped} == {"short_qual", "ok1", "cut"}
    # The other files' windows are exactly those of a run without the broken files.
    got, want = by_id(out), by_id(reference)
    sources = dict(
        zip(
            load_embeddings(str(out)).column("chunk_id").to_pylist(),
            load_embeddings(str(out)).column("source").to_pylist(),
            strict=True,
        )
    )
    kept = {cid for cid, src in sources.items() if not src.endswith(("cut.fa.gz", "malformed.fq"))}
    assert kept == want.keys()
    for cid in kept:
        assert np.linalg.norm(got[cid] - want[cid]) <= 1e-4 * np.linalg.norm(want[cid])
