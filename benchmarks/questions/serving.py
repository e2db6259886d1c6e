"""Serving: `dnaembed-serve` against `vllm serve` on the same model and GPU.

    python -m benchmarks.questions.serving --device cuda --model genos_1_2b --work /tmp/w \
        --out $OUT
    python -m benchmarks.questions.serving --device cpu --model tiny --smoke --out /tmp/serve

Each server is started as a user would (its own CLI, in a subprocess; one at a time, nothing
beside it on the GPU) and measured from the outside, over HTTP, with OpenAI's request body:
- start-up: launch to the first answered request;
- latency: one 8 kb sequence per request, one client, requests back to back (p50, p99);
- load: C clients, each sending one 8 kb sequence per request back to back for a fixed time
  (requests/s, tokens/s, p50/p99 latency), for each C of --concurrency;
- batched: one client sending 64 sequences per request (what a notebook user does).
Every request carries a sequence of its own (random bases, seeded), so no server can answer
from a cache; answers are checked for count and dimension. Last, the bare engine (vLLM's
LLM.embed in this process, the servers' engine settings) on the same windows: the ceiling.
Prints a table, writes serve.json.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import shapes
from benchmarks.harness.report import versions
from benchmarks.harness.runner import repo_env

SMOKE = {"bases": 512, "concurrency": [1, 4], "seconds": 3.0, "latency_n": 10, "batch": 8}


class Sequences:
    """Random 8 kb (--bases) sequences, a new one each time: the i-th is seeded by i."""

    def __init__(self, bases: int):
        self.bases, self.i = bases, 0
        self.lock = threading.Lock()

    def __call__(self, n: int = 1) -> list[str]:
        with self.lock:
            first, self.i = self.i, self.i + n
        return [self.at(i) for i in range(first, first + n)]

    def at(self, i: int) -> str:
        codes = np.random.default_rng(i).integers(0, 4, self.bases, dtype=np.uint8)
        return np.frombuffer(b"ACGT", np.uint8)[codes].tobytes().decode()


class Client:
    """One keep-alive HTTP connection posting OpenAI embedding requests."""

    def __init__(self, port: int, model: str, dim: int | None = None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self.model, self.dim = model, dim
        self.tokens: int | None = None  # the server's usage.prompt_tokens of the last answer

    def embed(self, inputs: list[str]) -> float:
        body = json.dumps(
            {"model": self.model, "input": inputs, "encoding_format": "base64"}
        ).encode()
        for attempt in (0, 1):
            t = time.perf_counter()
            try:
                self.conn.request(
                    "POST", "/v1/embeddings", body, {"Content-Type": "application/json"}
                )
                r = self.conn.getresponse()
                data = r.read()
                break
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # The server closed an idle keep-alive connection: once more on a new one.
                self.conn.close()
                if attempt:
                    raise
        took = time.perf_counter() - t
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data[:300]!r}")
        answer = json.loads(data)
        items = answer["data"]
        self.tokens = (answer.get("usage") or {}).get("prompt_tokens")
        if len(items) != len(inputs):
            raise RuntimeError(f"{len(items)} embeddings for {len(inputs)} inputs")
        dim = len(base64.b64decode(items[0]["embedding"])) // 4
        if self.dim is None:
            self.dim = dim
        elif dim != self.dim:
            raise RuntimeError(f"dimension {dim}, expected {self.dim}")
        return took


def wait_ready(proc: subprocess.Popen, port: int, model: str, seq: str, timeout: float) -> float:
    t0 = time.perf_counter()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering")
        try:
            Client(port, model).embed([seq])
            return time.perf_counter() - t0
        except (OSError, RuntimeError, http.client.HTTPException, ValueError):
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"no answer within {timeout:.0f} s") from None
            time.sleep(0.5)


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)) * 1000, 1) if xs else None


def measure(port: int, model: str, take: Sequences, a: argparse.Namespace) -> dict:
    """Latency, load at each concurrency, batched; every request with sequences of its own."""
    lock = threading.Lock()
    warm = Client(port, model)
    for _ in range(3):
        warm.embed(take())
    lat = [warm.embed(take()) for _ in range(a.latency_n)]
    out: dict = {
        "latency_1": {"n": len(lat), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)},
        "load": [],
    }
    for c in a.concurrency:
        times: list[float] = []
        errors: list[str] = []
        stop = time.perf_counter() + a.seconds

        def run(times=times, errors=errors, stop=stop) -> None:
            cl = Client(port, model)
            try:
                while time.perf_counter() < stop:
                    took = cl.embed(take())
                    with lock:
                        times.append(took)
            except Exception as e:
                errors.append(repr(e))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=run) for _ in range(c)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        if errors:
            raise RuntimeError(f"concurrency {c}: {errors[0]}")
        out["load"].append(
            {
                "clients": c,
                "requests": len(times),
                "wall_s": round(wall, 2),
                "req_per_s": round(len(times) / wall, 2),
                "tok_per_s": round(len(times) * a.bases / wall),
                "p50_ms": pct(times, 50),
                "p99_ms": pct(times, 99),
            }
        )
        print(f"  {c:>4} clients: {out['load'][-1]}", flush=True)
    batch = [warm.embed(take(a.batch)) for _ in range(3)]
    out["batched"] = {
        "inputs_per_request": a.batch,
        "requests": len(batch),
        "tok_per_s": round(len(batch) * a.batch * a.bases / sum(batch)),
        "p50_ms": pct(batch, 50),
    }
    out["dimension"] = warm.dim
    out["prompt_tokens_per_request"] = warm.tokens // a.batch if warm.tokens else None
    return out


def run_server(name: str, cmd: list[str], port: int, model: str, a, env) -> dict:
    res = _run_server(name, cmd, port, model, a, env)
    log = (Path(a.work) / f"serve-{name}.log").read_text(errors="replace")
    if "error" in res and "--pooler-config" in cmd and "unrecognized arguments" in log:
        # vLLM releases before the flag's rename call it --override-pooler-config.
        cmd = [("--override-pooler-config" if x == "--pooler-config" else x) for x in cmd]
        res = _run_server(name, cmd, port, model, a, env)
    return res


def _run_server(name: str, cmd: list[str], port: int, model: str, a, env) -> dict:
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    log = open(Path(a.work) / f"serve-{name}.log", "w")  # noqa: SIM115
    t0 = time.perf_counter()
    # A session of its own: whatever is left of it at the end (vLLM's engine core after a
    # failed start) is killed with it.
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=a.work, start_new_session=True
    )
    res: dict = {"name": name, "command": cmd}
    try:
        seqs = Sequences(a.bases)
        res["start_s"] = round(wait_ready(proc, port, model, seqs()[0], a.start_timeout), 1)
        print(f"  answered {res['start_s']} s after launch", flush=True)
        res.update(measure(port, model, seqs, a))
        t = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        res["stop_s"] = round(time.perf_counter() - t, 1)
        res["exit_code"] = proc.returncode
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        print(f"  FAILED: {res['error']}", flush=True)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        res["wall_s"] = round(time.perf_counter() - t0, 1)
    return res


def bare_engine(model_dir: str, a: argparse.Namespace, seqs: list[str]) -> dict:
    """LLM.embed in this process with the servers' engine settings: the ceiling."""
    from vllm.inputs import TokensPrompt

    from benchmarks.harness.contenders import engine_spec
    from pipeline.embed.engine import build_llm
    from pipeline.tokenize.tokenizer import DnaTokenizer, TokenizerSpec

    spec = engine_spec(model_dir, a.device, a.max_model_len, dtype=a.dtype)
    t = time.perf_counter()
    llm = build_llm(spec)
    start = time.perf_counter() - t
    lut = DnaTokenizer(TokenizerSpec(model_dir)).lut
    prompts = [
        TokensPrompt(prompt_token_ids=lut[np.frombuffer(s.encode(), np.uint8)].tolist())
        for s in seqs
    ]
    llm.embed(prompts[:4], use_tqdm=False)
    t = time.perf_counter()
    outs = llm.embed(prompts, use_tqdm=False)
    run = time.perf_counter() - t
    assert len(outs) == len(prompts)
    return {
        "name": "bare engine",
        "start_s": round(start, 1),
        "windows": len(prompts),
        "tok_per_s": round(len(prompts) * a.bases / run),
    }


def table(results: list[dict]) -> None:
    print(
        "\nserver | start s | 1 seq p50/p99 ms | clients: req/s, tok/s, p50/p99 ms | batched tok/s"
    )
    for r in results:
        if "error" in r:
            print(f"{r['name']} | FAILED: {r['error']}")
            continue
        if r["name"] == "bare engine":
            print(f"{r['name']} | {r['start_s']} | - | {r['tok_per_s']:,} tok/s | -")
            continue
        lat = r["latency_1"]
        loads = "; ".join(
            f"{x['clients']}: {x['req_per_s']}, {x['tok_per_s']:,}, {x['p50_ms']}/{x['p99_ms']}"
            for x in r["load"]
        )
        print(
            f"{r['name']} | {r['start_s']} | {lat['p50_ms']}/{lat['p99_ms']} | {loads} | "
            f"{r['batched']['tok_per_s']:,}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--model", default="genos_1_2b")
    ap.add_argument("--work", default="/tmp/bench-work")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bases", type=int, default=8192)
    ap.add_argument("--concurrency", default="1,8,32,128")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--latency-n", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--start-timeout", type=float, default=240.0)
    ap.add_argument("--max-model-len", type=int, default=131072)
    ap.add_argument("--servers", default="vllm,dnaembed,bare")
    ap.add_argument(
        "--set", action="append", default=[], help="extra dnaembed-serve override (repeatable)"
    )
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for the CPU test")
    a = ap.parse_args(argv)
    a.concurrency = [int(x) for x in a.concurrency.split(",")]
    if a.smoke:
        a.bases, a.concurrency, a.seconds = SMOKE["bases"], SMOKE["concurrency"], SMOKE["seconds"]
        a.latency_n, a.batch = SMOKE["latency_n"], SMOKE["batch"]
    a.dtype = "bfloat16" if a.device == "cuda" else "float32"
    Path(a.work).mkdir(parents=True, exist_ok=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    model_dir = shapes.model_dir(a.model, Path(a.work), a.device)
    if a.model == "tiny":
        a.max_model_len = min(a.max_model_len, 16384)
    env = repo_env()
    results = []
    servers = a.servers.split(",")
    if "vllm" in servers:
        pooler = json.dumps({"pooling_type": "MEAN", "use_activation": False})
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
            "--served-model-name", a.model, "--runner", "pooling", "--convert", "embed",
            "--pooler-config", pooler, "--dtype", a.dtype, "--max-model-len", str(a.max_model_len),
            "--enforce-eager", "--port", str(a.port), "--host", "127.0.0.1",
        ]  # fmt: skip
        if a.device == "cpu":
            cmd += ["--gpu-memory-utilization", "0.2"]
        results.append(run_server("vllm serve", cmd, a.port, a.model, a, env))
    if "dnaembed" in servers:
        cmd = [
            sys.executable, "-m", "pipeline.serve.cli", f"model={a.model}",
            f"model.path={model_dir}", f"model.dtype={a.dtype}",
            f"model.max_model_len={a.max_model_len}", f"serve.port={a.port + 1}",
            f"serve.name={a.model}", f"embed.device={a.device}", *a.set,
        ]  # fmt: skip
        label = "dnaembed-serve" + (f" ({' '.join(a.set)})" if a.set else "")
        results.append(run_server(label, cmd, a.port + 1, a.model, a, env))
    if "bare" in servers:
        try:
            results.append(bare_engine(model_dir, a, Sequences(a.bases)(max(64, a.batch))))
        except Exception as e:
            results.append({"name": "bare engine", "error": f"{type(e).__name__}: {e}"})
    table(results)
    report = {
        "device": a.device,
        "model": a.model,
        "bases_per_sequence": a.bases,
        "seconds_per_load": a.seconds,
        "versions": versions(a.device),
        "results": results,
    }
    (Path(a.out) / "serve.json").write_text(json.dumps(report, indent=1))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
