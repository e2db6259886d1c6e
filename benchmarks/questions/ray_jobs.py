"""Ray jobs: the pipeline submitted as Ray jobs to a real multi-GPU cluster, one engine over
two GPUs (tensor parallel) against one engine per GPU.

    CUDA_VISIBLE_DEVICES=0,1 python -m benchmarks.questions.ray_jobs --out $OUT/jobs --work /tmp/w

Starts a head node (`ray start --head`, dashboard on loopback) over the visible GPUs, submits
the same run through `python -m pipeline.jobs submit --wait` once per layout (Genos-10B shape,
uniform 8192-token windows), reads each manifest, prints a table and writes jobs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import shapes, workloads
from benchmarks.harness.runner import REPO, read_manifest
from pipeline.jobs import start_local_head, stop_local_head

# Packs are the unit of work shared among engines: 128 windows in 1M-token packs (the
# default budget) would give one engine all the work. 262144 tokens: four packs, two per GPU.
PACK = "embed.max_batch_tokens=262144"
LAYOUTS = {
    # vLLM 0.26's custom all-reduce crashed (illegal memory access in symmetric memory) on
    # these hosts, where NVLink multicast is off; NCCL all-reduce is the plain path.
    "tp2_x1": [
        "embed.tensor_parallel_size=2",
        "embed.num_actors=1",
        PACK,
        "+embed.engine_kwargs.disable_custom_all_reduce=true",
        "+embed.env_vars.VLLM_ALLREDUCE_USE_SYMM_MEM=0",
    ],
    "tp1_x2": ["embed.tensor_parallel_size=1", "embed.num_actors=2", PACK],
    # The CPU smoke run of this script: the tiny model, engines in CPU actors.
    "cpu_x1": ["embed.device=cpu", "embed.num_actors=1", "embed.cpus_per_actor=0.5"],
}


def jobs(
    address: str, command: str, *args: str, timeout: float | None = None
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.jobs", command, "--address", address, *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="genos_10b")
    ap.add_argument("--tokens", type=int, default=128 * 8192)
    ap.add_argument(
        "--extra",
        action="append",
        default=[],
        help="one more override for every layout, e.g. +embed.engine_kwargs.enforce_eager=true",
    )
    ap.add_argument(
        "--job-timeout", type=int, default=0, help="stop a job after this many seconds (0: none)"
    )
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--out", default=os.environ.get("OUT", "jobs-out"))
    ap.add_argument("--work", required=True)
    ap.add_argument("--python", default="python3")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = ap.parse_args(argv)
    window = 8192 if args.device == "cuda" else 2048
    out, work = Path(args.out).resolve(), Path(args.work).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model_path = shapes.model_dir(args.model, work, args.device)
    fasta = work / "jobs" / "uniform.fa"
    fasta.parent.mkdir(parents=True, exist_ok=True)
    workloads.write_records(fasta, workloads.make_records("uniform", args.tokens, window, 3))
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    # Under `timeout`, stop the head on SIGTERM too: its engines would go on holding the GPUs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(124))
    head, address = start_local_head(temp)
    rows = []
    try:
        for name in args.layouts.split(","):
            dest = work / "jobs" / name
            model = "model=tiny" if args.model == "tiny" else "model=genos_1_2b"
            overrides = [
                model,
                f"model.name={args.model}",
                f"model.path={model_path}",
                f"input={fasta}",
                f"output={dest}",
                "output.mode=overwrite",
                f"window.size={window}",
                "ray.progress_bars=false",
                *LAYOUTS[name],
                *args.extra,
            ]
            job_id = f"dnaembed-{name}"
            t = time.perf_counter()
            cmd = ["submit", "--wait", "--python", args.python, "--submission-id", job_id]
            try:
                proc = jobs(address, *cmd, "--", *overrides, timeout=args.job_timeout or None)
                text, failed = proc.stdout + proc.stderr, proc.returncode != 0
            except subprocess.TimeoutExpired:
                # A stuck job: stop it (its engines would hold the GPUs) and keep its log.
                jobs(address, "stop", job_id)
                text = jobs(address, "logs", job_id).stdout + "\n[timed out]"
                failed = True
            wall = time.perf_counter() - t
            (out / f"{name}.log").write_text(text[-400_000:])
            if failed:
                rows.append({"layout": name, "error": text[-1500:], "job_wall_s": wall})
                print(f"{name}: FAILED\n{rows[-1]['error']}", flush=True)
                continue
            manifest = read_manifest(dest)
            rows.append(
                {
                    "layout": name,
                    "overrides": [*LAYOUTS[name], *args.extra],
                    "per_pack": manifest["engine"].get("per_pack"),
                    "windows": manifest["counts"]["windows"],
                    "tokens": manifest["counts"]["tokens"],
                    "tok_s": manifest["engine"]["tokens_per_s"],
                    "steady_s": manifest["engine"]["span_s"],
                    "job_wall_s": wall,
                    "run_elapsed_s": manifest["elapsed_s"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        stop_local_head(head)
        shutil.rmtree(temp, ignore_errors=True)
    (out / "jobs.json").write_text(json.dumps({"model": args.model, "runs": rows}, indent=2))
    print("layout | windows | tokens | tok/s (steady) | steady s | job wall s")
    for r in rows:
        if "error" not in r:
            print(
                f"{r['layout']} | {r['windows']} | {r['tokens']} | {r['tok_s']:,.0f} | "
                f"{r['steady_s']:.1f} | {r['job_wall_s']:.0f}"
            )
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
