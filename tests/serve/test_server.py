"""dnaembed-serve for real: the CLI on a two-node Ray cluster (two replicas, one engine each),
queried with the openai client and plain HTTP, against a batch run of the same model."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
KEY = "dnaembed-serve-test-key-" + os.urandom(8).hex()
HEAD = {"Authorization": f"Bearer {KEY}"}
# In some requests only: no log may hold it.
SENTINEL = "ACGTTGCAAGCTTAGCCGATCGATTACAGGCATTCGAAGCTGCTAGCTAGGATCCTTAA" * 2
COLUMNS = ["emb_l1_mean", "emb_l1_max", "embedding", "emb_l2_max"]  # tiny has 2 layers
SETTINGS = ["model=tiny", "embed.layers=[1,-1]", "embed.poolings=[mean,max]"]
MAX_INPUTS, MAX_BYTES = 64, 300_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(genome_fasta: Path) -> dict[str, str]:
    """Three records cut from real DNA, as written: soft-masked bases, an IUPAC code, an N run."""
    seq = "".join(line.strip() for line in genome_fasta.read_text().splitlines()[1:])
    a = list(seq[:1000])
    a[100:140] = [c.lower() for c in a[100:140]]
    a[500] = "R"
    b = seq[5000:7200] + "N" * 60 + seq[7260:7500]
    return {"a": "".join(a), "b": b, "c": seq[10000:10300]}


@pytest.fixture(scope="module")
def cluster():
    """A head without CPUs and one worker node: the replicas run on the worker node."""
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(REPO))
        head = {"num_cpus": 0, "include_dashboard": False}
        c = Cluster(initialize_head=True, head_node_args=head)
        c.add_node(num_cpus=2)
        c.wait_for_nodes()
        yield c
        c.shutdown()


@pytest.fixture(scope="module")
def served(cluster, genome_fasta, tmp_path_factory):
    """(server, batch output): `dnaembed-serve` on the cluster and a batch run of the same
    windows (its own local Ray), started together."""
    tmp = tmp_path_factory.mktemp("serve")
    recs = records(genome_fasta)
    fasta = tmp / "records.fa"
    fasta.write_text("".join(f">{k}\n{v}\n" for k, v in recs.items()))
    out = tmp / "batch"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    batch = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *SETTINGS, f"input={fasta}", f"output={out}",
         "window.size=2048", "window.reverse_complement=true", "ray.num_cpus=2"],
        cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    port = free_port()
    logs = tmp / "server"
    logs.mkdir()
    stdout, stderr = open(logs / "stdout", "w"), open(logs / "stderr", "w")  # noqa: SIM115
    serve_bin = Path(sys.executable).with_name("dnaembed-serve")
    server = subprocess.Popen(
        [str(serve_bin), *SETTINGS, f"serve.port={port}", "ray=cluster", "serve.replicas=2",
         "serve.proxy_location=head_only", f"serve.max_inputs={MAX_INPUTS}",
         f"serve.max_request_bytes={MAX_BYTES}"],
        cwd=logs,
        env={**env, "RAY_ADDRESS": cluster.address, "DNAEMBED_API_KEY": KEY},
        stdout=stdout, stderr=stderr,
    )  # fmt: skip
    try:
        _, err = batch.communicate(timeout=600)
        assert batch.returncode == 0, err[-3000:]
        t0 = time.monotonic()
        while "ready at" not in (logs / "stdout").read_text():
            assert server.poll() is None, (logs / "stderr").read_text()[-3000:]
            assert time.monotonic() - t0 < 300, "the server was not ready in 300 s"
            time.sleep(0.5)
        yield {
            "url": f"http://127.0.0.1:{port}",
            "proc": server,
            "logs": logs,
            "records": recs,
            "batch": out,
            "session": Path(cluster.head_node.get_session_dir_path()),
        }
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        stdout.close()
        stderr.close()


@pytest.fixture(scope="module")
def batch_rows(served) -> dict[tuple, dict[str, np.ndarray]]:
    """{(record, start, end, strand): {column: vector}} of the batch run."""
    t = pq.read_table(served["batch"] / "shards")
    names = ("seq_id", "start", "end", "strand")
    keys = zip(*(t.column(c).to_pylist() for c in names), strict=True)
    vectors = {c: t.column(c).combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1)
               for c in COLUMNS}  # fmt: skip
    return {k: {c: v[i] for c, v in vectors.items()} for i, k in enumerate(keys)}


def windows(served, batch_rows) -> list[tuple[str, tuple]]:
    """(sequence as written in the file, batch key) of every forward window."""
    recs = served["records"]
    return [(recs[r][s:e], (r, s, e)) for (r, s, e, strand) in batch_rows if strand == "+"]


def close(a, b, what: str = "") -> None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, what
    rel = np.linalg.norm(a - b) / np.linalg.norm(b)
    assert rel < 1e-4, f"{what}: rel L2 {rel:.2e}"


def post(served, body: dict, **kw) -> httpx.Response:
    headers = kw.pop("headers", HEAD)
    return httpx.post(served["url"] + "/v1/embeddings", json=body, headers=headers,
                      timeout=120, **kw)  # fmt: skip


def test_probes_and_models_list_the_served_head(served):
    from openai import OpenAI

    assert httpx.get(served["url"] + "/health").json() == {"status": "ok"}
    assert httpx.get(served["url"] + "/ready").status_code == 200
    client = OpenAI(base_url=served["url"] + "/v1", api_key=KEY)
    (model,) = client.models.list().data
    assert model.id == "tiny"
    info = model.model_extra["dnaembed"]
    assert info["columns"] == COLUMNS and info["default_column"] == "embedding"
    assert info["dimension"] == 256 and info["strands"] == "forward"
    # The key a batch run of the same model and head carries in its manifest.
    manifest = json.loads((served["batch"] / "_manifest.json").read_text())
    assert info["model_keys"]["forward"] == manifest["model"]["key"]


def test_the_default_answer_is_the_batch_embedding_column(served, batch_rows):
    from openai import OpenAI

    client = OpenAI(base_url=served["url"] + "/v1", api_key=KEY)
    pairs = windows(served, batch_rows)
    assert len(pairs) == 4  # a, b (two windows), c
    # The client asks for base64 unless told otherwise; both encodings are checked.
    got = client.embeddings.create(model="tiny", input=[s for s, _ in pairs])
    assert [d.index for d in got.data] == list(range(len(pairs)))
    assert got.usage.prompt_tokens == sum(len(s) for s, _ in pairs)
    for d, (_, key) in zip(got.data, pairs, strict=True):
        close(d.embedding, batch_rows[(*key, "+")]["embedding"], str(key))
    one = client.embeddings.create(model="tiny", input=pairs[0][0], encoding_format="float")
    close(one.data[0].embedding, got.data[0].embedding, "a single string")


def test_columns_and_strands_equal_the_batch_columns(served, batch_rows):
    pairs = windows(served, batch_rows)
    seqs = [s for s, _ in pairs]
    asked = ["emb_l1_max", "embedding", "emb_l1_mean", "emb_l2_max"]
    for strands in ("forward", "reverse", "merge"):
        for fmt in ("float", "base64"):
            r = post(served, {"model": "tiny", "input": seqs, "encoding_format": fmt,
                              "dnaembed": {"columns": asked, "strands": strands}})  # fmt: skip
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["dnaembed"] == {"columns": asked, "strands": strands}
            for item, (_, key) in zip(body["data"], pairs, strict=True):
                cols = item["columns"]
                if fmt == "base64":
                    cols = {c: np.frombuffer(base64.b64decode(v), "<f4") for c, v in cols.items()}
                    item["embedding"] = np.frombuffer(base64.b64decode(item["embedding"]), "<f4")
                assert sorted(cols) == sorted(asked)
                np.testing.assert_array_equal(item["embedding"], cols["emb_l1_max"])
                fwd, rev = batch_rows[(*key, "+")], batch_rows[(*key, "-")]
                for c in asked:
                    want = {"forward": fwd[c], "reverse": rev[c], "merge": (fwd[c] + rev[c]) / 2}
                    close(cols[c], want[strands], f"{key} {c} {strands} {fmt}")


def test_bad_inputs_get_a_clear_error_and_no_embedding(served):
    from openai import BadRequestError, OpenAI

    def error(body: dict, status: int, code: str, **where):
        r = post(served, body)
        assert r.status_code == status, r.text
        e = r.json()["error"]
        assert e["code"] == code, e
        for k, v in where.items():
            assert e[k] == v, (k, e)
        assert "data" not in r.json()
        return e["message"]

    msg = error({"model": "tiny", "input": ["ACGT", "ACGTTXA"]}, 400, "invalid_dna",
                index=1, position=5)  # fmt: skip
    assert "input[1]" in msg and "'X'" in msg and "position 5" in msg
    error({"model": "tiny", "input": ["ACGT", "AC GT"]}, 400, "invalid_dna", index=1, position=2)
    error({"model": "tiny", "input": []}, 400, "empty_input")
    error({"model": "tiny", "input": ["ACGT", ""]}, 400, "empty_input", index=1)
    error({"model": "tiny", "input": [[1, 2, 3]]}, 400, "invalid_input", index=0)
    msg = error({"model": "tiny", "input": ["ACGT", "A" * 16385]}, 400, "input_too_long",
                index=1, position=16384)  # fmt: skip
    assert "never truncated" in msg
    error({"model": "tiny", "input": "ACGT", "truncate_prompt_tokens": 2}, 400, "unknown_field")
    error({"model": "other", "input": "ACGT"}, 404, "model_not_found")
    error({"input": "ACGT", "dnaembed": {"columns": ["emb_l0_mean"]}}, 400, "unknown_column")
    error({"input": ["ACGT"] * (MAX_INPUTS + 1)}, 413, "too_many_inputs")
    error({"input": ["ACGT" * 1000] * 80}, 413, "request_too_large")  # 320 kB
    r = httpx.post(served["url"] + "/v1/embeddings", content=b"{not json", headers=HEAD)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    client = OpenAI(base_url=served["url"] + "/v1", api_key=KEY)
    with pytest.raises(BadRequestError) as e:
        client.embeddings.create(model="tiny", input=["ACGT", "ACGU"])
    assert e.value.status_code == 400 and "input[1]" in str(e.value)


def test_an_api_key_is_required_when_set(served):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = post(served, {"input": "ACGT"}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = httpx.get(served["url"] + "/v1/models", headers=headers)
        assert r.status_code == 401
    assert post(served, {"input": "ACGT"}).status_code == 200
    assert httpx.get(served["url"] + "/health").status_code == 200  # probes need no key


def test_concurrent_clients_each_get_their_own_answers(served, batch_rows):
    """8 clients x 20 requests of 1-3 windows each (and a sentinel in some): every vector is
    the batch run's for its own input, and both replicas answered."""
    pairs = windows(served, batch_rows)
    sentinel = post(served, {"input": SENTINEL}).json()["data"][0]["embedding"]

    def client(seed: int) -> set[str]:
        rng = random.Random(seed)
        replicas = set()
        with httpx.Client(headers=HEAD, timeout=120) as http:
            for _ in range(20):
                chosen = [rng.choice(pairs) for _ in range(rng.randint(1, 3))]
                inputs = [s for s, _ in chosen] + ([SENTINEL] if rng.random() < 0.3 else [])
                r = http.post(served["url"] + "/v1/embeddings", json={"input": inputs})
                assert r.status_code == 200, r.text
                replicas.add(r.headers["x-dnaembed-replica"])
                data = r.json()["data"]
                assert [d["index"] for d in data] == list(range(len(inputs)))
                for d, (_, key) in zip(data, chosen, strict=False):
                    close(d["embedding"], batch_rows[(*key, "+")]["embedding"], str(key))
                if len(inputs) > len(chosen):
                    close(data[-1]["embedding"], sentinel, "sentinel")
        return replicas

    with ThreadPoolExecutor(8) as pool:
        replicas = set().union(*pool.map(client, range(8)))
    assert len(replicas) == 2, replicas


def test_logs_hold_requests_but_no_sequence_or_key(served):
    logs = served["logs"]
    files = [p for p in logs.rglob("*") if p.is_file()]
    files += [p for p in served["session"].rglob("*") if p.is_file() and "log" in str(p)]
    text = "\n".join(p.read_text(errors="replace") for p in files)
    assert "embeddings " in text and "status=200 inputs=" in text  # request lines exist
    assert "status=400" in text and "code=invalid_dna index=1 position=5" in text
    assert SENTINEL[:40] not in text
    assert KEY not in text
    saved = next(logs.rglob("config.yaml")).read_text()
    assert "api_key: null" in saved  # from the environment: not in the config at all


def test_sigterm_lets_requests_in_flight_finish_then_exits(served):
    proc = served["proc"]
    result = {}

    def long_request():
        result["r"] = post(served, {"input": ["ACGT" * 4000] * 12})

    t = threading.Thread(target=long_request)
    t.start()
    time.sleep(1.0)  # in the engine by now (12 x 16k tokens take seconds on CPU)
    proc.send_signal(signal.SIGTERM)
    t.join(timeout=120)
    r = result["r"]
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data) == 12 and all(np.isfinite(d["embedding"]).all() for d in data)
    assert proc.wait(timeout=120) == 0
    stdout = (served["logs"] / "stdout").read_text()
    assert "stopping: requests in flight finish" in stdout and "stopped" in stdout
    with pytest.raises(httpx.ConnectError):
        httpx.get(served["url"] + "/health", timeout=5)


def test_a_taken_port_fails_before_ray_starts(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.serve.cli", "model=tiny", f"serve.port={port}"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"serve.port={port}" in proc.stderr and "cannot listen" in proc.stderr
