"""The user's command, end to end and timed: one gzip FASTA through `python -m pipeline` on N
engines, against the bare engine on the same machine, with the GPUs sampled. What the start-up,
scale and whole-genome questions run (benchmarks/questions/startup.py, scale.py,
whole_genome.py), each with its own defaults; each writes NAME.json and NAME.png (each engine's
start phases and packs on a time line from launch, GPU utilisation over it).

The FASTA is generated (benchmarks.harness.workloads.genome_fasta): shaped like an assembly
(two records of 40% of the bases each, then many small contigs, N runs at record ends) or
human chromosomes by name and size, random bases, cached in --work by its parameters; plain
gzip, as downloads usually are (so one task reads it: split reading needs a .fai). The run is
the CLI in a subprocess, as typed (`--set KEY=VALUE` adds overrides); its timings come from
the output's manifest (epoch seconds, read against the launch). The bare engine is vLLM alone
(benchmarks.harness.contenders.engine, the run's own EngineSpec) on one pack's worth of
windows of the run's window size; by default it runs first, which also warms vLLM's compile
cache, so the CLI's start-up is that of a user's second run (--bare last: a cold one).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.harness.gpu import GpuSampler
from benchmarks.harness.report import versions
from benchmarks.harness.runner import REPO, read_manifest, repo_env, run_contender
from benchmarks.harness.workloads import genome_fasta

# The CPU smoke sizes (--smoke): a small assembly on 2 engines; no pack size set, so the run
# sizes its packs from the input (about 4 per engine).
SMOKE = {"bases": 200_000, "contigs": 20, "window": 2048, "engines": 2, "chromosomes": None}
SMOKE_SET: list[str] = []


def model_path(args: argparse.Namespace, work: Path) -> str:
    """The random-weight model of the shape, built in a process of its own: building it here
    would leave a CUDA context in this process, on GPU 0, through the run."""
    cmd = [sys.executable, "-m", "benchmarks.harness.shapes", args.model, "--work", str(work)]
    cmd += ["--device", args.device]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=repo_env())
    if proc.returncode:
        raise RuntimeError(f"building {args.model} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


# --------------------------------------------------------------------------------- the run
def cli_command(args: argparse.Namespace, fasta: Path, out: Path, model: str, work: Path):
    """The command line a user types, with this benchmark's settings."""
    cmd = [sys.executable, "-m", "pipeline", f"input={fasta}", f"output={out}"]
    cmd += [f"model={args.model}", f"embed.num_actors={args.engines}"]
    if args.model != "tiny":  # tiny's config makes the same model itself
        cmd.append(f"model.path={model}")
    if args.window:
        cmd.append(f"window.size={args.window}")
    if args.device == "cpu":
        # The engines on the CPU build; half a CPU each, so that two fit beside the read,
        # window and tokenize tasks on a 2-core machine.
        cmd += ["embed.device=cpu", "embed.cpus_per_actor=0.5"]
    # A rerun replaces the last output; Hydra's run directory (dnaembed.log) beside it.
    cmd += ["output.mode=overwrite", f"hydra.run.dir={work / 'cli-hydra'}", *args.set]
    return cmd


def run_cli(cmd: list[str], log: Path, timeout: float) -> dict:
    """The CLI in a process group of its own, its output to `log`; launch and exit times."""
    timed_out = False
    with open(log, "w") as f:
        launch = time.time()
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the group we started: the CLI and Ray
            rc, timed_out = proc.wait(), True
            f.write(f"\n[benchmarks.harness.user_command] killed after {timeout} s\n")
        exit_t = time.time()
    return {"launch": launch, "exit": exit_t, "rc": rc, "timed_out": timed_out}


def bare_engine(args: argparse.Namespace, p, work: Path) -> dict:
    """vLLM alone, one engine, on one pack's worth of windows of the run's size, through
    runner.run_contender (a process of its own). The run's EngineSpec: same dtype, length,
    engine kwargs and memory share; not its tensor-parallel size or quantization (the bare
    engine is one GPU's, in the run's dtype)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.embed.engine import engine_env

    cfg = p.cfg
    size = cfg.window.size
    n = args.bare_windows or max(1, p.pack_tokens // size)
    # Random bases as in the FASTA (no N: a full window of the run's size), tokenized by the
    # run's tokenizer.
    rng = np.random.default_rng(args.seed + 2)
    seqs = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, (n, size), dtype=np.uint8)]
    texts = pa.array([row.tobytes().decode() for row in seqs], pa.large_string())
    ids = p.tokenizer.encode(texts)
    bare = work / "cli-bare"
    bare.mkdir(parents=True, exist_ok=True)
    chunk_ids = [f"bare{i:05d}" for i in range(n)]
    lengths = [len(x) for x in ids.to_pylist()]
    windows = bare / "windows.parquet"
    pq.write_table(
        pa.table({"chunk_id": chunk_ids, "n_tokens": lengths, "token_ids": ids}), windows
    )
    engine = dataclasses.replace(p.engine, device=args.device)
    spec = {
        "contender": "engine",
        "model": args.model,
        "tag": "bare",
        "model_path": engine.model,
        "dtype": str(engine.dtype),
        "device": args.device,
        "max_model_len": engine.max_model_len,
        "engine_kwargs": dict(engine.engine_kwargs),
        "gpu_memory_utilization": engine.gpu_memory_utilization,
        "env": engine_env(cfg.embed.env_vars),
        "workloads": [
            {"name": "bare", "windows": str(windows), "sample": chunk_ids[:1], "work": str(bare)}
        ],
    }
    print(f"bare engine: {n} windows x {size} ...", flush=True)
    got = run_contender(spec, bare, args.timeout)
    if isinstance(got, dict):
        return {"error": got["error"][-3000:], "windows": n, "window": size}
    r = got[0]
    return {
        "windows": r["windows"],
        "window": size,
        "tokens": r["tokens"],
        "start_s": round(r["start_s"], 2),
        "steady_s": round(r["steady_s"], 3),
        "tok_s": round(r["tokens"] / r["steady_s"], 1),
        "gpu_mem_gib": r["gpu_mem_gib"],
        "process_s": round(r["process_s"], 1),
        "pooling": "vLLM's MEAN pooler (the run's default embedding)",
    }


def plan_for(cmd: list[str]):
    """The run's plan, composed from the same overrides as the CLI's (Hydra's own keys
    aside): its EngineSpec and tokenizer, for the bare engine."""
    from pipeline.cli import overrides_and_dirs
    from pipeline.compose import compose, to_config
    from pipeline.run import plan

    overrides, dirs = overrides_and_dirs(cmd[3:])
    overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    return plan(to_config(compose(overrides, dirs)))


# ------------------------------------------------------------------------------- figures
def engine_rows(engine: dict, launch: float) -> list[dict]:
    """Per engine (in start order): its start phases from launch, its packs, idle gaps."""
    starts = {s["engine"]: s for s in engine.get("starts", [])}
    packs = engine.get("per_pack") or []
    t0 = engine.get("first_pack_t0")
    span_end = t0 + engine["span_s"] if t0 is not None else None
    names = list(starts) + sorted({str(k["engine"]) for k in packs} - set(starts))
    rows = []
    for i, name in enumerate(names):
        s = starts.get(name)
        row: dict = {"engine": name, "label": f"engine {i}"}
        if s:
            row |= {
                "t0_s": round(s["t0"] - launch, 2),
                "import_s": round(s["imported"] - s["t0"], 2),
                "build_s": round(s["built"] - s["imported"], 2),
                "warmup_s": round(s["ready"] - s["built"], 2),
                "ready_s": round(s["ready"] - launch, 2),
            }
        mine = sorted(
            (
                (t0 + k["start_s"], t0 + k["start_s"] + k["s"], k)
                for k in packs
                if k["engine"] == name
            ),
            key=lambda x: x[0],
        )
        if mine:
            gaps = [max(0.0, b[0] - a[1]) for a, b in itertools.pairwise(mine)]
            busy = sum(k["s"] for *_, k in mine)
            tokens = sum(k["tokens"] for *_, k in mine)
            row |= {
                "packs": len(mine),
                "windows": sum(k["windows"] for *_, k in mine),
                "tokens": tokens,
                "busy_s": round(busy, 2),
                "tok_s_busy": round(tokens / busy, 1) if busy else None,
                "first_pack_s": round(mine[0][0] - launch, 2),
                "last_end_s": round(mine[-1][1] - launch, 2),
                # Between its own packs: the engine waited for input.
                "idle_sum_s": round(sum(gaps), 2),
                "idle_max_s": round(max(gaps, default=0.0), 2),
                # Ready, and no pack yet; done, and the others still busy.
                "wait_first_s": round(mine[0][0] - s["ready"], 2) if s else None,
                "idle_tail_s": round(max(0.0, span_end - mine[-1][1]), 2),
            }
        rows.append(row)
    return rows


def util_mean(gpu: dict, lo: float, hi: float) -> tuple[float | None, dict]:
    """Mean utilisation over [lo, hi] (s from launch): of all GPUs, and of each."""
    per = {}
    for i, s in gpu.get("gpus", {}).items():
        vals = [u for t, u in zip(s["t"], s["util"], strict=True) if lo <= t <= hi]
        if vals:
            per[i] = round(float(np.mean(vals)), 1)
    return (round(float(np.mean(list(per.values()))), 1) if per else None), per


def figures(run: dict, manifest: dict, gpu: dict, bare: dict, engines: int) -> dict:
    launch, exit_t = run["launch"], run["exit"]
    e, c = manifest["engine"], manifest["counts"]
    wall = exit_t - launch
    starts = e.get("starts", [])
    f: dict = {
        "wall_s": round(wall, 2),
        "startup_s": round(e["first_pack_t1"] - launch, 2) if e.get("first_pack_t1") else None,
        "first_pack_in_s": round(e["first_pack_t0"] - launch, 2)
        if e.get("first_pack_t0")
        else None,
        "first_engine_ready_s": round(min(s["ready"] for s in starts) - launch, 2)
        if starts
        else None,
        "records": c["records"],
        "bases": c["bases"],
        "windows": c["windows"],
        "tokens": c["tokens"],
        "engine_tokens": e["tokens"],
        "packs": e["packs"],
        "span_s": e["span_s"],
        "steady_tok_s": e["tokens_per_s"],
        "e2e_tok_s": round(c["tokens"] / wall, 1),
        "manifest_elapsed_s": manifest.get("elapsed_s"),
    }
    if gpu.get("gpus"):
        f["gpu_util_run"], f["gpu_util_run_per_gpu"] = util_mean(gpu, 0.0, wall)
        if e.get("first_pack_t0"):
            lo = e["first_pack_t0"] - launch
            f["gpu_util_busy"], f["gpu_util_busy_per_gpu"] = util_mean(gpu, lo, lo + e["span_s"])
        f["gpu_mem_max_mib"] = max(max(s["mem_mib"], default=0) for s in gpu["gpus"].values())
    bare_rate = bare.get("tok_s")
    f["bare_tok_s"] = bare_rate
    if bare_rate:
        f["e2e_vs_bare"] = round(f["e2e_tok_s"] / (engines * bare_rate), 3)
        if f["steady_tok_s"]:
            f["steady_vs_bare"] = round(f["steady_tok_s"] / (engines * bare_rate), 3)
    return f


# ---------------------------------------------------------------------------------- output
def print_table(result: dict) -> None:
    f, rows = result["figures"], result["engines"]
    print(
        f"\n{result['model']} on {result['device']}: {f['bases']:,} bases in {f['records']:,} "
        f"records, window {result['window']}, {result['engines_asked']} engines"
    )
    print("figure | value")
    lines = [
        ("wall, launch -> exit (s)", f["wall_s"], False),
        ("start-up, launch -> first pack's embeddings (s)", f["startup_s"], False),
        ("launch -> first engine ready (s)", f["first_engine_ready_s"], False),
        ("engines' busy span (s)", f["span_s"], False),
        ("tokens", f["tokens"], False),
        ("steady tok/s (busy span)", f["steady_tok_s"], False),
        ("end-to-end tok/s (tokens / wall)", f["e2e_tok_s"], False),
        ("bare engine tok/s (one engine)", f.get("bare_tok_s"), False),
        ("end to end / (N x bare)", f.get("e2e_vs_bare"), True),
        ("steady / (N x bare)", f.get("steady_vs_bare"), True),
        ("GPU util %, whole run", f.get("gpu_util_run"), False),
        ("GPU util %, busy span", f.get("gpu_util_busy"), False),
        ("GPU memory max (MiB)", f.get("gpu_mem_max_mib"), False),
    ]
    pr = result.get("projection")
    if pr:
        lines.append(
            (
                f"projected: {pr['bases']:,} bases on {pr['engines']} engines (min)",
                pr["wall_min"],
                False,
            )
        )
    for name, v, ratio in lines:
        print(f"{name} | {_fmt(v, ratio)}")
    cols = [
        ("label", "engine"),
        ("t0_s", "launch->t0"),
        ("import_s", "import vLLM"),
        ("build_s", "build"),
        ("warmup_s", "warm-up"),
        ("ready_s", "ready at"),
        ("packs", "packs"),
        ("tokens", "tokens"),
        ("tok_s_busy", "tok/s busy"),
        ("wait_first_s", "wait 1st"),
        ("idle_sum_s", "idle sum"),
        ("idle_max_s", "idle max"),
        ("idle_tail_s", "idle tail"),
    ]
    print("\n" + " | ".join(c[1] for c in cols))
    for r in rows:
        print(" | ".join(_fmt(r.get(k)) for k, _ in cols))
    sys.stdout.flush()


def _fmt(v, ratio: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if ratio else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


PHASES = [
    ("t0", "imported", "importing vLLM", "#d9d9d9"),
    ("imported", "built", "building the engine", "#9ecae1"),
    ("built", "ready", "warm-up request", "#fdd0a2"),
]


def plot(result: dict, path: Path) -> Path | None:
    """Each engine's packs from launch, its start phases shaded, GPU utilisation on a second
    axis: idle gaps show at a glance. Everything comes from `result` (NAME.json)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            f"matplotlib is missing: no {path.name} (draw it elsewhere: "
            "python -m benchmarks.questions.scale --plot RESULT.json)",
            flush=True,
        )
        return None
    tl = result["timeline"]
    launch, e = tl["launch"], tl["engine"]
    starts = {s["engine"]: s for s in e.get("starts", [])}
    packs = e.get("per_pack") or []
    names = [r["engine"] for r in result["engines"]]
    fig, ax = plt.subplots(figsize=(13, 1.8 + 0.8 * max(1, len(names))))
    labelled: set[str] = set()

    def once(label: str) -> str | None:
        if label in labelled:
            return None
        labelled.add(label)
        return label

    for row, name in enumerate(names):
        s = starts.get(name)
        if s:
            ax.broken_barh(
                [(0, s["t0"] - launch)],
                (row - 0.4, 0.8),
                color="#f0f0f0",
                label=once("launch -> actor start"),
            )
            for a, b, label, color in PHASES:
                ax.broken_barh(
                    [(s[a] - launch, s[b] - s[a])], (row - 0.4, 0.8), color=color, label=once(label)
                )
        bars = [
            (e["first_pack_t0"] + k["start_s"] - launch, k["s"])
            for k in packs
            if k["engine"] == name
        ]
        ax.broken_barh(
            bars,
            (row - 0.3, 0.6),
            facecolor="#31a354",
            edgecolor="white",
            linewidth=0.4,
            label=once("pack (engine call)"),
        )
    if e.get("first_pack_t1"):
        x = e["first_pack_t1"] - launch
        ax.axvline(x, color="#756bb1", ls="--", lw=1, label=f"first embeddings ({x:.0f} s)")
    ax.axvline(
        tl["exit"] - launch, color="black", lw=1, label=f"exit ({tl['exit'] - launch:.0f} s)"
    )
    ax.set_yticks(range(len(names)), [f"{r['label']}\n{r['engine']}" for r in result["engines"]])
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlim(0, (tl["exit"] - launch) * 1.01)
    ax.set_xlabel("seconds since launch")
    handles, labels = ax.get_legend_handles_labels()
    gpus = result["gpu"].get("gpus", {})
    if gpus:
        ax2 = ax.twinx()
        for i, g in gpus.items():
            ax2.plot(g["t"], g["util"], lw=0.8, alpha=0.8, label=f"GPU {i} utilisation")
        ax2.set_ylim(0, 105)
        ax2.set_ylabel("GPU utilisation (%)")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    f = result["figures"]
    note = "" if packs else " (no per-pack times in the manifest)"
    ax.set_title(
        f"{result['model']}, {f['bases'] / 1e6:,.1f} Mbp, {len(names)} engines: wall "
        f"{f['wall_s']:.0f} s, start-up {f['startup_s'] or 0:.0f} s, steady "
        f"{f['steady_tok_s'] or 0:,.0f} tok/s, end to end {f['e2e_tok_s']:,.0f} tok/s{note}",
        fontsize=10,
    )
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------ main
def parser(doc: str | None = None, **defaults) -> argparse.ArgumentParser:
    """The options every question of this kind takes; `defaults` are the question's own."""
    ap = argparse.ArgumentParser(
        description=doc or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--model", default="genos_1_2b", help="a shape of harness/shapes.py")
    ap.add_argument("--bases", type=int, default=160_000_000)
    ap.add_argument("--contigs", type=int, default=1000, help="small contigs after the 2 large")
    ap.add_argument("--engines", type=int, default=2)
    ap.add_argument("--window", type=int, default=None, help="window.size (default: the CLI's)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more override for the CLI, as typed (repeatable)",
    )
    ap.add_argument(
        "--chromosomes",
        help="records with human chromosome names and sizes instead of --bases/--contigs: "
        "a comma list (chr21,chr22) or 'all' (3.09 Gbp)",
    )
    ap.add_argument("--bare", choices=["first", "last", "none"], default="first")
    ap.add_argument(
        "--bare-windows", type=int, default=0, help="default: one pack's worth of the run's"
    )
    ap.add_argument("--smoke", action="store_true", help=f"CPU smoke sizes: {SMOKE}, {SMOKE_SET}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=540, help="seconds, for each subprocess")
    ap.add_argument("--out", default=os.environ.get("OUT", "scale-out"))
    ap.add_argument(
        "--work",
        default=os.environ.get("SCALE_WORK", "/tmp/scale-work"),
        help="the FASTA (cached), the model, and cli-run/ (the CLI's output: not in --out, it "
        "can be large), cli-hydra/ (its dnaembed.log), cli-bare/ (the bare engine's)",
    )
    ap.add_argument("--plot", metavar="RESULT_JSON", help="only redraw the PNG from a result")
    ap.set_defaults(**defaults)
    return ap


def parse(ap: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """The options; with --smoke, the smoke sizes where an option was left at its default."""
    args = ap.parse_args(argv)
    if args.smoke:
        for k, v in SMOKE.items():
            if getattr(args, k) == ap.get_default(k):
                setattr(args, k, v)
        args.set = SMOKE_SET + args.set
    return args


def parse_args(argv: list[str] | None = None, **defaults) -> argparse.Namespace:
    return parse(parser(None, **defaults), argv)


def run(args: argparse.Namespace, name: str, finish: Callable[[dict], None] | None = None) -> int:
    """The measurement: NAME.json and NAME.png in --out (the CLI's output in NAME-cli.log),
    the table printed. `finish` adds a question's own figures to the result before it is
    written. With --plot, only the PNG is redrawn from a result."""
    if args.plot:
        src = Path(args.plot)
        drawn = plot(json.loads(src.read_text()), src.with_suffix(".png"))
        print(f"wrote {drawn}" if drawn else "nothing drawn")
        return 0 if drawn else 1
    out, work = Path(args.out).resolve(), Path(args.work).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    fasta, fasta_info = genome_fasta(work, args.bases, args.contigs, args.chromosomes, args.seed)
    model = model_path(args, work)
    run_out = work / "cli-run"
    cmd = cli_command(args, fasta, run_out, model, work)
    p = plan_for(cmd)
    bare: dict = {"skipped": True}
    if args.bare == "first":
        bare = bare_engine(args, p, work)
    print(f"running: {shlex.join(cmd)}", flush=True)
    log = out / f"{name}-cli.log"
    with GpuSampler(args.device) as sampler:
        timing = run_cli(cmd, log, args.timeout)
    print(f"exit {timing['rc']} after {timing['exit'] - timing['launch']:.1f} s", flush=True)
    if args.bare == "last":
        bare = bare_engine(args, p, work)
    result: dict = {
        "device": args.device,
        "versions": versions(args.device),
        "model": args.model,
        "model_path": model,
        "engines_asked": args.engines,
        "window": p.cfg.window.size,
        "max_batch_tokens": p.cfg.embed.max_batch_tokens,
        "pack_tokens": p.pack_tokens,
        "input": fasta_info,
        "command": cmd,
        "command_line": shlex.join(cmd),
        "output": str(run_out),
        "bare_order": args.bare,
        "bare": bare,
        "cli": {k: timing[k] for k in ("rc", "timed_out")},
        "gpu": sampler.to_json(timing["launch"]),
    }
    ok = timing["rc"] == 0 and "error" not in bare
    if timing["rc"] == 0:
        manifest = read_manifest(run_out)
        result["timeline"] = {
            "launch": timing["launch"],
            "exit": timing["exit"],
            "engine": manifest["engine"],
        }
        result["engines"] = engine_rows(manifest["engine"], timing["launch"])
        result["figures"] = figures(timing, manifest, result["gpu"], bare, args.engines)
        if finish:
            finish(result)
    else:
        tail = log.read_text(errors="replace")[-3000:]
        result["error"] = tail
        print(f"the CLI failed (rc {timing['rc']}):\n{tail}", flush=True)
    if "error" in bare:
        print(f"the bare engine failed:\n{bare['error'][-1500:]}", flush=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    if "figures" in result:
        print_table(result)
        drawn = plot(result, path.with_suffix(".png"))
        if drawn:
            print(f"wrote {drawn}", flush=True)
    print(f"wrote {path}", flush=True)
    return 0 if ok else 1
