"""The user's command at scale, end to end: one large gzip FASTA through `python -m pipeline`
on N engines, against the bare engine on the same machine. Prints a table, writes scale.json
and scale.png (each engine's packs on a time line from launch, GPU utilisation over it).

    python -m benchmarks.scale --device cuda --model genos_1_2b --bases 160000000 --engines 2 \\
        --out $OUT
    python -m benchmarks.scale --device cpu --model tiny --smoke --out /tmp/scale   # smoke test
    python -m benchmarks.scale --plot $OUT/scale.json    # redraw scale.png from the JSON

The FASTA is shaped like an assembly (two records of 40% of the bases each, then many small
contigs, N runs at record ends), random bases, cached in --work by its parameters; plain gzip,
as downloads usually are (so one task reads it: split reading needs a .fai). The run is
the CLI in a subprocess, as typed (`--set KEY=VALUE` adds overrides); its timings come from
the output's manifest (epoch seconds, read against the launch). The bare engine is vLLM alone
(benchmarks.contenders.engine, the run's own EngineSpec) on one pack's worth of windows of the
run's window size; by default it runs first, which also warms vLLM's compile cache, so the
CLI's start-up is that of a user's second run (--bare last: a cold one).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GENERATOR_VERSION = 1  # bump when the FASTA written for the same parameters changes
CHUNK = 80 * 100_000  # bases generated and compressed at a time (whole lines)
SMOKE = {"bases": 200_000, "contigs": 20, "window": 2048, "engines": 2}
# No pack size set: the run sizes its packs from the input (about 4 per engine).
SMOKE_SET: list[str] = []
SAMPLE_S = 0.5
# GRCh38's primary chromosomes and their lengths: --chromosomes picks records of these names
# and sizes (random bases), and the projection is to all of them (3.09 Gbp).
HUMAN = {
    "chr1": 248_956_422, "chr2": 242_193_529, "chr3": 198_295_559, "chr4": 190_214_555,
    "chr5": 181_538_259, "chr6": 170_805_979, "chr7": 159_345_973, "chr8": 145_138_636,
    "chr9": 138_394_717, "chr10": 133_797_422, "chr11": 135_086_622, "chr12": 133_275_309,
    "chr13": 114_364_328, "chr14": 107_043_718, "chr15": 101_991_189, "chr16": 90_338_345,
    "chr17": 83_257_441, "chr18": 80_373_285, "chr19": 58_617_616, "chr20": 64_444_167,
    "chr21": 46_709_983, "chr22": 50_818_468, "chrX": 156_040_895, "chrY": 57_227_415,
}  # fmt: skip


# ---------------------------------------------------------------------------------- input
def record_lengths(bases: int, contigs: int, large: int = 2, large_frac: float = 0.4, seed=0):
    """`large` records of `large_frac` of the bases each, the rest over `contigs` small ones
    with log-normal lengths (an assembly's scaffolds, then its unplaced contigs)."""
    big = int(bases * large_frac)
    lengths = [big] * large
    rest = bases - big * large
    if contigs and rest > 0:
        w = np.random.default_rng(seed).lognormal(0.0, 1.0, contigs)
        cuts = np.round(np.cumsum(w) / w.sum() * rest).astype(np.int64)
        lengths += [int(x) for x in np.diff(cuts, prepend=0) if x > 0]
    elif rest > 0:
        lengths[-1] += rest
    return lengths


def write_fasta(
    path: Path, lengths: list[int], seed: int = 0, names: list[str] | None = None
) -> None:
    """Random ACGT, N runs at both ends of every record, lines of 80, gzip level 1 (speed:
    the file is an input, not the thing measured)."""
    rng = np.random.default_rng(seed + 1)
    alphabet = np.frombuffer(b"ACGT", dtype=np.uint8)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz:
        for i, length in enumerate(lengths):
            name = names[i] if names else (f"chr{i + 1}" if i < 2 else f"contig{i - 1:05d}")
            gz.write(f">{name}\n".encode())
            n_run = min(10_000, length // 50)  # telomere-like gaps
            for lo in range(0, length, CHUNK):
                hi = min(length, lo + CHUNK)
                seq = alphabet[rng.integers(0, 4, hi - lo, dtype=np.uint8)]
                seq[: max(0, n_run - lo)] = ord("N")
                seq[max(0, length - n_run - lo) :] = ord("N")
                gz.write(_lines(seq))
    os.replace(tmp, path)


def _lines(seq: np.ndarray) -> bytes:
    full = len(seq) // 80
    body = np.empty((full, 81), dtype=np.uint8)
    body[:, :80] = seq[: full * 80].reshape(full, 80)
    body[:, 80] = ord("\n")
    tail = seq[full * 80 :].tobytes()
    return body.tobytes() + (tail + b"\n" if tail else b"")


def genome(args: argparse.Namespace, work: Path) -> tuple[Path, dict]:
    """The FASTA for these parameters, generated once."""
    names = None
    if args.chromosomes:
        names = list(HUMAN) if args.chromosomes == "all" else args.chromosomes.split(",")
        unknown = [n for n in names if n not in HUMAN]
        if unknown:
            raise SystemExit(f"--chromosomes: {unknown} are not among {list(HUMAN)}")
        lengths = [HUMAN[n] for n in names]
        stem = f"human-{'-'.join(names) if len(names) < 6 else len(names)}"
    else:
        lengths = record_lengths(args.bases, args.contigs, seed=args.seed)
        stem = f"genome-{args.bases}b-{args.contigs}c"
    path = work / f"{stem}-s{args.seed}-v{GENERATOR_VERSION}.fa.gz"
    info = {"path": str(path), "bases": sum(lengths), "records": len(lengths)}
    if names:
        info["chromosomes"] = names
    if path.exists():
        print(f"FASTA: {path} (cached)", flush=True)
        return path, {**info, "generated_s": None}
    t = time.perf_counter()
    write_fasta(path, lengths, args.seed, names)
    s = time.perf_counter() - t
    mb = path.stat().st_size / 1e6
    print(
        f"FASTA: {path}, {info['bases']:,} bases, {mb:.0f} MB, generated in {s:.1f} s", flush=True
    )
    return path, {**info, "generated_s": round(s, 2)}


def model_path(args: argparse.Namespace, work: Path) -> str:
    """The random-weight model of the shape, built in a process of its own: building it here
    would leave a CUDA context in this process, on GPU 0, through the run."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.shapes",
            args.model,
            "--work",
            str(work),
            "--device",
            args.device,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_env(),
    )
    if proc.returncode:
        raise RuntimeError(f"building {args.model} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


# ----------------------------------------------------------------------------- GPU sampler
class GpuSampler:
    """Utilisation (%) and memory used (MiB) of every visible GPU every SAMPLE_S seconds:
    NVML if importable, else `nvidia-smi -lms`. Series per GPU, epoch times."""

    def __init__(self, device: str) -> None:
        self.series: dict[int, dict[str, list]] = {}
        self.source: str | None = None
        self.note = ""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._smi: subprocess.Popen | None = None
        if device != "cuda":
            self.note = "no GPU sampled: --device cpu"
            return
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        self.only = {int(x) for x in visible.split(",") if x.strip().isdigit()} or None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            count = pynvml.nvmlDeviceGetCount()
            self.handles = {
                i: pynvml.nvmlDeviceGetHandleByIndex(i)
                for i in range(count)
                if self.only is None or i in self.only
            }
            self.source = "pynvml"
        except Exception as e:  # no pynvml, or no driver it can talk to
            self.source = "nvidia-smi"
            self.note = f"pynvml unavailable ({type(e).__name__}): nvidia-smi"

    def __enter__(self) -> GpuSampler:
        if self.source == "pynvml":
            self._threads.append(threading.Thread(target=self._poll_nvml, daemon=True))
        elif self.source == "nvidia-smi":
            try:
                self._smi = subprocess.Popen(
                    [
                        "nvidia-smi",
                        "--query-gpu=index,utilization.gpu,memory.used",
                        "--format=csv,noheader,nounits",
                        f"-lms={int(SAMPLE_S * 1000)}",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            except OSError as e:
                self.source, self.note = None, f"no GPU sampled: {e}"
                return self
            self._threads.append(threading.Thread(target=self._read_smi, daemon=True))
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._smi:
            self._smi.terminate()
            self._smi.wait()
        for t in self._threads:
            t.join(timeout=5)

    def _add(self, gpu: int, t: float, util: float, mem: float) -> None:
        s = self.series.setdefault(gpu, {"t": [], "util": [], "mem_mib": []})
        s["t"].append(t)
        s["util"].append(util)
        s["mem_mib"].append(mem)

    def _poll_nvml(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            for i, h in self.handles.items():
                util = self.nvml.nvmlDeviceGetUtilizationRates(h).gpu
                mem = self.nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
                self._add(i, t, float(util), round(mem))
            self._stop.wait(SAMPLE_S)

    def _read_smi(self) -> None:
        for line in self._smi.stdout:
            parts = [x.strip() for x in line.split(",")]
            if len(parts) != 3 or not parts[0].isdigit():
                continue
            i = int(parts[0])
            if self.only is None or i in self.only:
                try:
                    self._add(i, time.time(), float(parts[1]), float(parts[2]))
                except ValueError:  # "[N/A]"
                    continue

    def to_json(self, launch: float) -> dict:
        """Times relative to the launch, for the JSON and the plot."""
        return {
            "source": self.source,
            "interval_s": SAMPLE_S if self.source else None,
            "note": self.note,
            "gpus": {
                str(i): {
                    "t": [round(t - launch, 2) for t in s["t"]],
                    "util": s["util"],
                    "mem_mib": s["mem_mib"],
                }
                for i, s in sorted(self.series.items())
            },
        }


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
    cmd += ["output.mode=overwrite", f"hydra.run.dir={work / 'scale-hydra'}", *args.set]
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
            f.write(f"\n[benchmarks.scale] killed after {timeout} s\n")
        exit_t = time.time()
    return {"launch": launch, "exit": exit_t, "rc": rc, "timed_out": timed_out}


def bare_engine(args: argparse.Namespace, p, work: Path) -> dict:
    """vLLM alone, one engine, on one pack's worth of windows of the run's size, through
    bench.run_contender (a process of its own). The run's EngineSpec: same dtype, length,
    engine kwargs and memory share."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.bench import run_contender
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
    bare = work / "scale-bare"
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
        "tag": "scale",
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
    from pipeline.config import compose, to_config
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
def projection(f: dict, engines: int, target: int) -> dict:
    """The whole human genome on `target` engines: the measured start-up, then every base as
    one token at the measured steady rate per engine. Assumes engines scale linearly (one per
    GPU, sharing nothing) and no tail: the last chromosome's packs finish with the others'."""
    bases = sum(HUMAN.values())
    per_engine = f["steady_tok_s"] / engines
    embed_s = bases / (per_engine * target)
    return {
        "bases": bases,
        "engines": target,
        "measured_engines": engines,
        "startup_s": f["startup_s"],
        "steady_tok_s_per_engine": round(per_engine),
        "embed_s": round(embed_s),
        "wall_s": round(f["startup_s"] + embed_s),
        "wall_min": round((f["startup_s"] + embed_s) / 60, 1),
    }


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
    axis: idle gaps show at a glance. Everything comes from `result` (scale.json)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            f"matplotlib is missing: no {path.name} (draw it elsewhere: "
            "python -m benchmarks.scale --plot scale.json)",
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
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--model", default="genos_1_2b", help="a shape of benchmarks/shapes.py")
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
    ap.add_argument(
        "--project-engines",
        type=int,
        default=0,
        help="also project the whole human genome on this many engines from the run's "
        "start-up and steady rate per engine",
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
        help="the FASTA (cached), the model, and scale-run/ (the CLI's output: not in --out, "
        "it can be large), scale-hydra/ (its dnaembed.log), scale-bare/ (the bare engine's)",
    )
    ap.add_argument("--plot", metavar="RESULT_JSON", help="only redraw the PNG from a scale.json")
    args = ap.parse_args(argv)
    if args.smoke:
        for k, v in SMOKE.items():
            if getattr(args, k) == ap.get_default(k):
                setattr(args, k, v)
        args.set = SMOKE_SET + args.set
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plot:
        src = Path(args.plot)
        drawn = plot(json.loads(src.read_text()), src.with_suffix(".png"))
        print(f"wrote {drawn}" if drawn else "nothing drawn")
        return 0 if drawn else 1
    out, work = Path(args.out).resolve(), Path(args.work).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    fasta, fasta_info = genome(args, work)
    model = model_path(args, work)
    run_out = work / "scale-run"
    cmd = cli_command(args, fasta, run_out, model, work)
    p = plan_for(cmd)
    bare: dict = {"skipped": True}
    if args.bare == "first":
        bare = bare_engine(args, p, work)
    print(f"running: {shlex.join(cmd)}", flush=True)
    with GpuSampler(args.device) as sampler:
        run = run_cli(cmd, out / "scale-cli.log", args.timeout)
    print(f"exit {run['rc']} after {run['exit'] - run['launch']:.1f} s", flush=True)
    if args.bare == "last":
        bare = bare_engine(args, p, work)
    from benchmarks.bench import versions

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
        "cli": {k: run[k] for k in ("rc", "timed_out")},
        "gpu": sampler.to_json(run["launch"]),
    }
    ok = run["rc"] == 0 and "error" not in bare
    if run["rc"] == 0:
        manifest = json.loads((run_out / "_manifest.json").read_text())
        result["timeline"] = {
            "launch": run["launch"],
            "exit": run["exit"],
            "engine": manifest["engine"],
        }
        result["engines"] = engine_rows(manifest["engine"], run["launch"])
        result["figures"] = figures(run, manifest, result["gpu"], bare, args.engines)
        if args.project_engines:
            result["projection"] = projection(result["figures"], args.engines, args.project_engines)
    else:
        tail = (out / "scale-cli.log").read_text(errors="replace")[-3000:]
        result["error"] = tail
        print(f"the CLI failed (rc {run['rc']}):\n{tail}", flush=True)
    if "error" in bare:
        print(f"the bare engine failed:\n{bare['error'][-1500:]}", flush=True)
    (out / "scale.json").write_text(json.dumps(result, indent=2))
    if "figures" in result:
        print_table(result)
        drawn = plot(result, out / "scale.png")
        if drawn:
            print(f"wrote {drawn}", flush=True)
    print(f"wrote {out / 'scale.json'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
