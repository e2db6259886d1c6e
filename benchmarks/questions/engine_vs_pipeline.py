"""dnaembed against the raw engine, HF transformers and Ray Data LLM, side by side.

    python -m benchmarks.bench --device cuda --models genos_1_2b,genos_10b --out $OUT
    python -m benchmarks.bench --device cpu --models tiny --out /tmp/bench   # smoke test

One run, one machine: builds random-weight models of the real architectures, writes the
workloads as FASTA, gives every contender the same token ids (each in a process of its own),
checks fidelity against HF on a sample, prints a table and writes bench.json. See BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import shapes, workloads

REPO = Path(__file__).resolve().parent.parent
# Tokens per workload and model (the issue's sizes on GPU; small ones for the CPU smoke test).
SIZES = {
    "cuda": {
        "genos_1_2b": {"uniform": 524288, "genome": 1_500_000, "long": 4 * 131072},
        "genos_10b": {"uniform": 262144, "genome": 400_000, "long": 2 * 131072},
    },
    "cpu": {"tiny": {"uniform": 16384, "genome": 40_000, "long": 2 * 8192}},
}
WINDOW = {"uniform": 8192, "genome": 8192, "long": 131072}
CPU_WINDOW = {"uniform": 2048, "genome": 2048, "long": 8192}
PEAK_TFLOPS = 989.4  # dense bf16, H100/H200 SXM spec
MATMUL_TFLOPS = 790.0  # an 8192^3 bf16 matmul measured on these H200s (device KINDS.md)


class GpuMemory:
    """Peak GPU memory in use (all processes) while a contender runs, via NVML."""

    def __init__(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handles = [
                pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
            ]
        except Exception:
            self.nvml = None
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> GpuMemory:
        if self.nvml:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            used = max(self.nvml.nvmlDeviceGetMemoryInfo(h).used for h in self.handles)
            self.peak = max(self.peak, used)
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self._stop.set()

    @property
    def gib(self) -> float | None:
        return round(self.peak / 2**30, 1) if self.nvml else None


def run_contender(spec: dict, work: Path, timeout: int) -> list[dict] | dict:
    lane = f".{spec['lane']}" if spec.get("lane") else ""
    label = spec.get("label", spec["contender"])
    path = work / f"{spec['model']}.{label}.{spec['tag']}{lane}.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    # A Ray temp dir of its own (short: it holds unix sockets), to read its workers' logs if
    # the contender fails: an actor that dies at start shows nothing in the driver's output.
    ray_tmp = Path(f"/tmp/rt-{os.getpid()}-{label}{lane}")
    env["RAY_TMPDIR"] = str(ray_tmp)
    load_start = os.getloadavg()[0]
    try:
        with GpuMemory() as mem:
            t = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "benchmarks.contenders", str(path)],
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
        r["gpu_mem_gib"] = mem.gib
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


def load_sample(path: str) -> dict[str, np.ndarray]:
    sample = np.load(path)
    return dict(zip(sample["ids"].tolist(), sample["emb"], strict=True))


def fidelity(result: dict, reference: dict, suffix: str = "") -> dict:
    pearson, rel = [], []
    for cid, ref in reference.items():
        got = result["sample"].get(cid)
        if got is None:
            continue
        pearson.append(float(np.corrcoef(got, ref)[0, 1]))
        rel.append(float(np.linalg.norm(got - ref) / np.linalg.norm(ref)))
    if not pearson:
        return {}
    return {
        f"pearson_min{suffix}": min(pearson),
        f"rel_l2_max{suffix}": max(rel),
        f"n{suffix}": len(pearson),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--models", default="genos_1_2b,genos_10b")
    ap.add_argument("--workloads", default="uniform,genome,long")
    ap.add_argument(
        "--contenders",
        default="engine,dnaembed,hf_today,hf_tuned,raydata,hf_fp32",
        help="hf_fp32 is the float32 reference on the sample windows, not a contender",
    )
    ap.add_argument(
        "--variants",
        default="{}",
        help='JSON: more contenders, each a named variant of one, e.g. {"dnaembed:omp": '
        '{"contender": "dnaembed", "overrides": ["+embed.env_vars.OMP_NUM_THREADS=8"]}, '
        '"engine:prof": {"contender": "engine", "env": {"DNAEMBED_PROFILE_DIR": "/tmp/prof"}}} '
        "(the bare engine's opt-in py-spy profile, benchmarks/profile.py); name them in "
        "--contenders",
    )
    ap.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    ap.add_argument("--work", default=None, help="models and workloads (default: OUT/../work)")
    ap.add_argument("--max-batch-tokens", type=int, default=None)
    ap.add_argument("--engine-kwargs", default="{}", help="JSON, for every vLLM contender")
    ap.add_argument(
        "--engine-pack-tokens",
        type=int,
        default=None,
        help="the engine contender embeds in consecutive packs of this many tokens, one call "
        "each, as the pipeline does (default: all windows in one call)",
    )
    ap.add_argument(
        "--scale",
        type=int,
        default=0,
        help="also run dnaembed with this many actors on a large uniform workload",
    )
    ap.add_argument("--scale-tokens", type=int, default=4_194_304)
    ap.add_argument("--sample", type=int, default=8)
    ap.add_argument(
        "--warm-caches",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the engine once over the workloads first, untimed, so that torch.compile "
        "and Triton's kernel caches are warm for every contender (default: on for cuda)",
    )
    ap.add_argument(
        "--warm-envs",
        default="[{}]",
        help="JSON list: one cache warm-up per environment (a variant whose environment "
        "selects other kernels, e.g. VLLM_TUNED_CONFIG_FOLDER, needs its own)",
    )
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument(
        "--lane",
        default="",
        help="a name for this run when several share --work side by side (one per GPU): keeps "
        "their files apart while they share the models and workloads (merge: benchmarks.report)",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else out.parent / "bench-work"
    work.mkdir(parents=True, exist_ok=True)
    engine_kwargs = json.loads(args.engine_kwargs)
    variants = json.loads(args.variants)
    if args.device == "cpu":
        engine_kwargs.setdefault("enforce_eager", True)
    report = Report(out, {"device": args.device, "runs": []})
    report.data["versions"] = versions(args.device)
    print(f"versions: {report.data['versions']}", flush=True)
    for model in _names(args.models):
        t = time.perf_counter()
        run = prepare_model(args, model, work, engine_kwargs)
        run.before = list(report.rows)
        if warm_caches_wanted(args) and run.kinds:
            warm_caches(args, run, work)
        run_contenders(args, run, variants, work, report)
        if args.scale:
            run_scaling(args, run, work, report)
        for kind in run.kinds:
            print_table([x for x in report.rows if x["model"] == model and x["workload"] == kind])
        print(f"{model}: {time.perf_counter() - t:.0f} s", flush=True)
    report.finish()
    return 0


@dataclass
class ModelRun:
    """One model's workloads, ready for every contender, and the contenders' results so far."""

    model: str
    shape: shapes.Shape
    base: dict  # what every contender's spec for this model starts from
    kinds: list[str]  # workloads, and "scale" last with --scale
    prepared: dict[str, dict]
    results: dict[tuple[str, str], dict] = field(default_factory=dict)
    before: list[dict] = field(default_factory=list)  # the table's rows of earlier models

    @property
    def main_kinds(self) -> list[str]:
        return [k for k in self.kinds if k != "scale"]

    def workloads(self, kinds: list[str]) -> list[dict]:
        return [_strip(self.prepared[k]) for k in kinds]


@dataclass
class Report:
    """bench.json: rewritten after every contender, so that a timeout keeps what finished."""

    out: Path
    data: dict
    rows: list[dict] = field(default_factory=list)

    def record(self, run: ModelRun) -> None:
        rows = collect(run.model, run.shape, run.kinds, run.prepared, run.results)
        self.rows[:] = run.before + rows
        save(self.out, self.data, self.rows)

    def finish(self) -> None:
        ratios(self.rows, self.data)
        (self.out / "bench.json").write_text(json.dumps(self.data, indent=2))
        print_table(self.rows)
        print(json.dumps(self.data["ratios"], indent=2))


def _names(csv: str) -> list[str]:
    return [x for x in csv.split(",") if x]


def prepare_model(
    args: argparse.Namespace, model: str, work: Path, engine_kwargs: dict
) -> ModelRun:
    """The model built (random weights), and each workload written and tokenized for it."""
    shape = shapes.SHAPES[model]
    base = {
        "model": model,
        "model_path": str(shapes.build(shape, work, args.device)),
        "dtype": "bfloat16" if args.device == "cuda" else "float32",
        "device": args.device,
        "max_model_len": 8192 if args.device == "cpu" else 131072,
        "engine_kwargs": engine_kwargs,
        "lane": args.lane,
        "pack_tokens": args.engine_pack_tokens,
    }
    kinds = _names(args.workloads) + (["scale"] if args.scale else [])
    prepared = {kind: prepare_workload(args, base, kind, work) for kind in kinds}
    return ModelRun(model, shape, base, kinds, prepared)


def window_size(device: str, kind: str) -> int:
    base_kind = "uniform" if kind == "scale" else kind
    return (WINDOW if device == "cuda" else CPU_WINDOW)[base_kind]


def pipeline_overrides(args: argparse.Namespace, base: dict, kind: str) -> list[str]:
    """The pipeline's config for one workload of one model: the dnaembed contender runs with
    it, and the workload is tokenized with it."""
    model = base["model"]
    overrides = [
        f"model={'tiny' if model == 'tiny' else 'genos_1_2b'}",
        f"model.name={model}",
        f"model.path={base['model_path']}",
        f"model.dtype={base['dtype']}",
        f"model.max_model_len={base['max_model_len']}",
        f"window.size={window_size(args.device, kind)}",
        f"embed.device={args.device}",
        "ray.progress_bars=false",
        "output.rows_per_shard=100000",
    ]
    if args.device == "cpu":
        overrides.append("embed.cpus_per_actor=0.5")  # room for 2 engines on 2 cores
    if args.max_batch_tokens:
        overrides.append(f"embed.max_batch_tokens={args.max_batch_tokens}")
    for k, v in base["engine_kwargs"].items():
        overrides.append(f"+embed.engine_kwargs.{k}={json.dumps(v)}")
    return overrides


def prepare_workload(args: argparse.Namespace, base: dict, kind: str, work: Path) -> dict:
    """The workload's FASTA, and its windows tokenized exactly as the pipeline does."""
    from pipeline.config import compose, to_config
    from pipeline.run import plan

    model = base["model"]
    base_kind = "uniform" if kind == "scale" else kind
    window = window_size(args.device, kind)
    tokens = args.scale_tokens if kind == "scale" else SIZES[args.device][model][kind]
    overrides = pipeline_overrides(args, base, kind)
    fasta = work / model / kind / f"{base_kind}.fa"
    cfg = to_config(compose([*overrides, f"input={fasta}", "output=/unused"]))
    p = plan_without_inputs(cfg, plan)
    wl = workloads.build(base_kind, tokens, window, work / model / kind, p.model_key, p.tokenizer)
    ids = workloads.load_windows(wl.windows)[0]
    rng = np.random.default_rng(1)
    sample = sorted(rng.choice(ids, size=min(args.sample, len(ids)), replace=False).tolist())
    prepared = {
        "name": kind,
        "windows": str(wl.windows),
        "sample": sample,
        "work": str(work / model / kind),
        "dnaembed_overrides": [*overrides, f"input={wl.fasta}"],
        "lengths": token_lengths(wl.windows),
    }
    print(f"[{model}] {kind}: {len(ids)} windows, {sum(prepared['lengths'])} tokens", flush=True)
    return prepared


def warm_caches_wanted(args: argparse.Namespace) -> bool:
    return args.warm_caches if args.warm_caches is not None else args.device == "cuda"


def warm_caches(args: argparse.Namespace, run: ModelRun, work: Path) -> None:
    """The engine over the workloads, untimed, once per environment in --warm-envs.

    Compiled kernels are cached on disk per shape: whichever contender ran first would pay for
    all of them (seen: the same engine, 268k tok/s cold, 453k warm)."""
    for i, env in enumerate(json.loads(args.warm_envs)):
        spec = {
            **run.base,
            "contender": "engine",
            "tag": f"warm{i}" if i else "warm",
            "env": env,
            "workloads": run.workloads(run.main_kinds or ["scale"]),
        }
        print(f"[{run.model}] warming caches {env or ''}...", flush=True)
        run_contender(spec, work, args.timeout)


def contender_spec(run: ModelRun, name: str, variant: dict) -> dict:
    """A contender's spec: a plain contender, or a named variant of one (--variants)."""
    return {
        **run.base,
        "contender": variant.get("contender", name),
        "label": name.replace(":", "-"),  # for file names
        "extra_overrides": variant.get("overrides", []),
        "env": variant.get("env", {}),
        "tag": "main",
        "workloads": run.workloads(run.main_kinds),
        **variant.get("spec", {}),
    }


def run_contenders(
    args: argparse.Namespace, run: ModelRun, variants: dict, work: Path, report: Report
) -> None:
    """Every contender in turn, each in a process of its own, over all the main workloads."""
    kinds = run.main_kinds
    if not kinds:
        return
    for name in _names(args.contenders):
        spec = contender_spec(run, name, variants.get(name, {}))
        print(f"[{run.model}] {name} on {', '.join(kinds)} ...", flush=True)
        got = run_contender(spec, work, args.timeout)
        for k, r in zip(kinds, got if isinstance(got, list) else [got] * len(kinds), strict=True):
            run.results[(k, name)] = r
        # What has finished so far is written at once: a timeout keeps it.
        report.record(run)


def run_scaling(args: argparse.Namespace, run: ModelRun, work: Path, report: Report) -> None:
    """dnaembed with one actor, then with --scale actors, on the large uniform workload."""
    for n in sorted({1, args.scale}):
        w = {**_strip(run.prepared["scale"]), "work": f"{run.prepared['scale']['work']}/a{n}"}
        w["dnaembed_overrides"] = [*w["dnaembed_overrides"], f"embed.num_actors={n}"]
        spec = {**run.base, "contender": "dnaembed", "tag": f"scale{n}", "workloads": [w]}
        print(f"[{run.model}] dnaembed x {n} actors on scale ...", flush=True)
        got = run_contender(spec, work, args.timeout)
        run.results[("scale", f"dnaembed@{n}")] = got[0] if isinstance(got, list) else got
        report.record(run)


def collect(model: str, shape, kinds: list[str], prepared: dict, results: dict) -> list[dict]:
    """Table rows from the contenders' results, with fidelity against HF as run today (bf16)
    and, where this run has it, against HF in float32."""
    rows = []
    for kind in kinds:
        reference = results.get((kind, "hf_today"), {}).get("sample", {})
        exact = results.get((kind, "hf_fp32"), {}).get("sample", {})
        lengths = prepared[kind]["lengths"]
        for (k, name), r in results.items():
            if k != kind:
                continue
            if "error" in r:
                rows.append(
                    {
                        "model": model,
                        "workload": kind,
                        "contender": name,
                        "error": r["error"][-300:],
                    }
                )
                continue
            steady = r["steady_s"]
            flops = sum(shape.flops(n) for n in lengths)
            row = {
                "model": model,
                "workload": kind,
                "contender": name,
                "windows": r["windows"],
                "tokens": r["tokens"],
                "tok_s": r["tokens"] / steady if steady else None,
                "win_s": r["windows"] / steady if steady else None,
                "steady_s": steady,
                "start_s": r["start_s"],
                "wall_s": r["wall_s"],
                "tok_s_wall": r["tokens"] / r["wall_s"],
                "mfu": flops / steady / (PEAK_TFLOPS * 1e12) if steady else None,
                "mfu_of_matmul_peak": flops / steady / (MATMUL_TFLOPS * 1e12) if steady else None,
                "gpu_mem_gib": r["gpu_mem_gib"],
                **fidelity(r, reference),
                **fidelity(r, exact, "_fp32"),
            }
            for extra in (
                "engine",
                "hf_budget",
                "note",
                "sample_file",
                "lane",
                "load",
                "row_times",
            ):
                if r.get(extra) is not None:
                    row[extra] = r[extra]
            rows.append(row)
    return rows


def save(out: Path, report: dict, rows: list[dict]) -> None:
    report["runs"] = rows
    (out / "bench.json").write_text(json.dumps(report, indent=2))


def _strip(w: dict) -> dict:
    return {k: v for k, v in w.items() if k != "lengths"}


def plan_without_inputs(cfg, plan):
    """plan() checks the inputs; the workload is written after we know the model key, over a
    placeholder of one record."""
    Path(cfg.input.path).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg.input.path).write_text(">placeholder\nACGT\n")
    return plan(cfg)


def token_lengths(path: Path) -> list[int]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["n_tokens"]).column(0).to_pylist()


def ratios(rows: list[dict], report: dict) -> None:
    """The issue's goals, as ratios measured in this run."""
    by = {(r["model"], r["workload"], r["contender"]): r for r in rows if "tok_s_wall" in r}
    out = {}
    for (model, kind, name), r in by.items():
        if name.split(":")[0] != "dnaembed":
            continue
        for other in ("engine", "hf_today", "hf_tuned", "raydata"):
            o = by.get((model, kind, other))
            if o and o["tok_s"]:
                out[f"{model}/{kind}: {name} / {other}"] = round(r["tok_s"] / o["tok_s"], 3)
            if o:  # end to end, starts included
                out[f"{model}/{kind}: {name} / {other} (wall)"] = round(
                    r["tok_s_wall"] / o["tok_s_wall"], 3
                )
    for model in {r["model"] for r in rows}:
        one = [r for k, r in by.items() if k[0] == model and k[2] == "dnaembed@1"]
        many = [
            r
            for k, r in by.items()
            if k[0] == model and k[2].startswith("dnaembed@") and k[2] != "dnaembed@1"
        ]
        if one and many:
            out[f"{model}/scale: {many[0]['contender']} / dnaembed@1"] = round(
                many[0]["tok_s"] / one[0]["tok_s"], 3
            )
    report["ratios"] = out


def print_table(rows: list[dict]) -> None:
    cols = [
        "model",
        "workload",
        "contender",
        "windows",
        "tokens",
        "tok_s",
        "win_s",
        "steady_s",
        "start_s",
        "wall_s",
        "mfu",
        "gpu_mem_gib",
        "pearson_min",
        "rel_l2_max",
        "pearson_min_fp32",
        "rel_l2_max_fp32",
    ]
    print(" | ".join(cols))
    for r in rows:
        if "error" in r:
            print(f"{r['model']} | {r['workload']} | {r['contender']} | ERROR {r['error'][-80:]!r}")
            continue
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float):
                v = (
                    f"{v:.6f}"
                    if c.startswith("pearson")
                    else f"{v:.3g}"
                    if c.startswith(("mfu", "rel_l2"))
                    else f"{v:,.1f}"
                )
            cells.append("" if v is None else str(v))
        print(" | ".join(cells))
    sys.stdout.flush()


def versions(device: str) -> dict:
    import ray
    import torch
    import transformers
    import vllm

    v = {
        "vllm": vllm.__version__,
        "ray": ray.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
    }
    if device == "cuda":
        v["gpu"] = torch.cuda.get_device_name(0)
        v["gpus"] = torch.cuda.device_count()
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
            )
            v["driver"] = out.stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            pass
    return v


if __name__ == "__main__":
    sys.exit(main())
