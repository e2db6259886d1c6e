"""Runners: every timed thing in a process of its own.

- `run_contender`: one contender (the bare engine, the pipeline, HF, Ray Data LLM; see
  benchmarks.harness.contenders) on its workloads, with the GPU sampler beside it;
- `run_logged`: a command (the user's CLI, an engine subprocess) with its output kept in a log;
- `spawn_json`: a command whose last line of stdout is its result as JSON;
- `read_manifest`: the run's own figures, from its output's manifest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness.gpu import GpuSampler
from benchmarks.harness.report import load_sample

REPO = Path(__file__).resolve().parents[2]
# GPU memory while a contender runs: every GPU of the machine (other processes included),
# every 0.2 s.
CONTENDER_SAMPLE_S = 0.2


def repo_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment with this checkout first on PYTHONPATH (a subprocess imports
    `benchmarks` and `pipeline` from it, installed or not)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_logged(
    cmd: list[str], log: Path, timeout: float, env: dict | None = None, cwd: Path | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    """`cmd` to completion, its stdout and stderr written to `log`; (process, wall seconds)."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    wall = time.perf_counter() - t
    Path(log).write_text(proc.stdout + proc.stderr)
    return proc, wall


def spawn_json(
    cmd: list[str], log: Path, timeout: float, env: dict | None = None, check_rc: bool = True
) -> dict:
    """`cmd` run by run_logged; its last stdout line that is a JSON object, else an error with
    the output's tail (also when it exits non-zero, unless `check_rc` is off: a result printed
    before a failed shutdown still counts). `wall_s` is added."""
    proc, wall = run_logged(cmd, log, timeout, env)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if (check_rc and proc.returncode) or not lines:
        return {"error": (proc.stdout + proc.stderr)[-3000:], "wall_s": wall}
    return {**json.loads(lines[-1]), "wall_s": round(wall, 1)}


def read_manifest(output: Path) -> dict:
    return json.loads((Path(output) / "_manifest.json").read_text())


def run_contender(spec: dict, work: Path, timeout: int) -> list[dict] | dict:
    """One contender (`python -m benchmarks.harness.contenders SPEC`) on the spec's workloads:
    a result per workload with its sample embeddings, or {"error": ...}."""
    lane = f".{spec['lane']}" if spec.get("lane") else ""
    label = spec.get("label", spec["contender"])
    path = work / f"{spec['model']}.{label}.{spec['tag']}{lane}.json"
    path.write_text(json.dumps(spec))
    env = repo_env()
    # A Ray temp dir of its own (short: it holds unix sockets), to read its workers' logs if
    # the contender fails: an actor that dies at start shows nothing in the driver's output.
    ray_tmp = Path(f"/tmp/rt-{os.getpid()}-{label}{lane}")
    env["RAY_TMPDIR"] = str(ray_tmp)
    load_start = os.getloadavg()[0]
    device = spec.get("device", "cuda")
    try:
        with GpuSampler(device, interval_s=CONTENDER_SAMPLE_S, all_gpus=True) as gpus:
            t = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "benchmarks.harness.contenders", str(path)],
                    cwd=REPO,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired as e:
                out = _text(e.stdout) + _text(e.stderr)
                (work / f"{path.stem}.log").write_text(out + ray_errors(ray_tmp))
                return {"error": f"timed out after {timeout} s: {out[-800:]}"}
            elapsed = time.perf_counter() - t
        failed = proc.returncode != 0
        log = proc.stdout + proc.stderr + (ray_errors(ray_tmp) if failed else "")
        (work / f"{path.stem}.log").write_text(log)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if failed:
        tail = (proc.stdout + proc.stderr)[-1500:]
        print(f"  {spec['contender']} FAILED ({elapsed:.0f} s):\n{tail}", flush=True)
        return {"error": tail}
    results = json.loads(path.with_suffix(".result.json").read_text())
    for r in results:
        r["sample_file"] = str(path.with_suffix(f".{r['workload']}.npz"))
        r["sample"] = load_sample(r["sample_file"])
        r["gpu_mem_gib"] = gpus.peak_mem_gib
        r["process_s"] = elapsed
        # Other work on the machine meanwhile (lanes run side by side): 1-minute load average.
        r["load"] = [load_start, os.getloadavg()[0], os.cpu_count()]
    return results


def _text(x: bytes | str | None) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")


def ray_errors(ray_tmp: Path, limit: int = 200_000) -> str:
    """Error lines, with context, from the Ray workers' logs of a failed contender."""
    out = []
    for f in sorted(ray_tmp.glob("ray/session_*/logs/*")):
        if not f.is_file() or f.suffix not in (".err", ".out", ".log"):
            continue
        lines = f.read_text(errors="replace").splitlines()
        hits = [i for i, line in enumerate(lines) if re.search(r"Error|Traceback|Exception", line)]
        if hits:
            out.append(f"\n===== {f.name}")
            keep = sorted({j for i in hits for j in range(max(0, i - 3), min(len(lines), i + 8))})
            out += [lines[j] for j in keep]
    return "\n".join(out)[-limit:]
