"""Engine vs pipeline: the user's command (dnaembed, FASTA to Parquet) against the bare vLLM
engine on the same token ids, and against HF transformers (as run today, and tuned) and Ray
Data LLM; fidelity of every contender's embeddings against HF on a sample of windows.

    python -m benchmarks.questions.engine_vs_pipeline --device cuda --models genos_1_2b --out $OUT
    python -m benchmarks.questions.engine_vs_pipeline --device cpu --models tiny --out /tmp/b

One run, one machine: builds random-weight models of the Genos shapes, writes the workloads
(`uniform`, `genome`, `long`) as FASTA, gives every contender the same token ids (each in a
process of its own, one after another), prints a table and writes bench.json (lanes run one
after another merge with `python -m benchmarks.harness.report`). Named variants of a contender
(`--variants`: engine settings, environment, overrides) are how the MoE tiles, the MFU knobs and
FP8 are measured; `--scale N` adds dnaembed with 1 and N engines on a large workload.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.harness import shapes, workloads
from benchmarks.harness.report import fidelity, print_table, ratios, versions
from benchmarks.harness.runner import run_contender

# Tokens per workload and model (on GPU, the sizes BENCHMARKS.md reports; small ones for the
# CPU smoke test).
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
        "(the bare engine's opt-in py-spy profile, benchmarks/harness/profile.py); name them in "
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
        help="a name for this run when several share --work (one per GPU, or one after "
        "another): keeps their files apart while they share the models and workloads (merge: "
        "benchmarks.harness.report)",
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
    from pipeline.compose import compose, to_config
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


if __name__ == "__main__":
    sys.exit(main())
