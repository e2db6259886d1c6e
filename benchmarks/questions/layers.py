"""Layers and poolings on the engine: throughput, fidelity against HF, tensor parallelism, and
the user's command end to end. Prints a table per part and writes one JSON.

    python -m benchmarks.questions.layers --shape genos_1_2b --parts engine,fidelity,pipeline \
        --out X.json
    python -m benchmarks.questions.layers --shape genos_10b --parts engine,tp2,fidelity --out Y.json

Each engine runs in a subprocess of its own (a fresh GPU for each); the engine is built by
the product's own code (EngineSpec, build_llm), so our model class is loaded the way a run
loads it: by the vllm.general_plugins entry point, from a checkout that is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.harness.runner import read_manifest, run_logged, spawn_json
from benchmarks.harness.shapes import model_dir

MODULE = "benchmarks.questions.layers"
WORK = Path(os.environ.get("LAYERS_WORK", "/tmp/layers-work"))
FIDELITY_LENGTHS = (1, 100, 2048, 8192)


def configs(num_layers: int) -> dict[str, tuple[list[int], list[str], bool]]:
    """name -> (layers, poolings, our model even where vLLM's pooler could do it). For the
    12-layer Genos shapes: l6 = layer 6 alone, l3x2 = layers 6, 9, 12 x mean, max."""
    half, three_q = num_layers // 2, 3 * num_layers // 4
    return {
        "default": ([-1], ["mean"], False),
        "l12_ours": ([-1], ["mean"], True),
        "l6": ([half], ["mean"], True),
        "l3x2": (list(dict.fromkeys([half, three_q, num_layers])), ["mean", "max"], True),
        "all": (list(range(num_layers + 1)), ["mean", "max", "last"], True),
    }


def num_layers(model: str) -> int:
    return json.loads((Path(model) / "config.json").read_text())["num_hidden_layers"]


def workload(n: int, length: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(4, 8, length).tolist() for _ in range(n)]  # A C G T ids


def spec_for(model: str, config: str, tp: int, max_len: int, device: str):
    from benchmarks.harness.contenders import engine_spec
    from pipeline.embed.outputs import DeviceHead, resolve_layers

    n = num_layers(model)
    layers, poolings, ours = configs(n)[config]
    head = DeviceHead.of(resolve_layers(layers, n), poolings, n).to_dict() if ours else None
    kwargs = {"disable_custom_all_reduce": True} if tp > 1 else {}
    if device == "cpu":
        kwargs["enforce_eager"] = True  # a smoke run: no compile
    return engine_spec(
        model,
        device,
        max_len,
        tensor_parallel_size=tp,
        head=head,
        gpu_memory_utilization=0.85 if device == "cuda" else None,
        engine_kwargs=kwargs,
    )


def one_engine(args: argparse.Namespace) -> dict:
    """In a subprocess: start one engine, time it on the workload, save a sample."""
    from vllm.inputs import TokensPrompt

    from pipeline.embed.engine import build_llm

    spec = spec_for(args.model, args.config, args.tp, 16384, args.device)
    t = time.perf_counter()
    llm = build_llm(spec)
    start_s = time.perf_counter() - t
    prompts = [TokensPrompt(prompt_token_ids=x) for x in workload(args.windows, args.length)]
    llm.encode(prompts[:4], pooling_task="embed", use_tqdm=False)
    runs = []
    for _ in range(args.reps):
        t = time.perf_counter()
        outs = llm.encode(prompts, pooling_task="embed", use_tqdm=False)
        runs.append(time.perf_counter() - t)
    tokens = args.windows * args.length
    sample = np.stack([o.outputs.data.float().numpy() for o in outs[:4]])
    np.save(WORK / f"sample-{args.shape}-{args.config}-tp{args.tp}.npy", sample)
    fid = {}
    if args.fidelity:
        fid_prompts = [TokensPrompt(prompt_token_ids=x) for x in fidelity_windows()]
        vecs = llm.encode(fid_prompts, pooling_task="embed", use_tqdm=False)
        np.save(
            WORK / f"fid-{args.shape}-{args.config}.npy",
            np.stack([o.outputs.data.float().numpy() for o in vecs]),
        )
        fid["saved"] = True
    return {
        "config": args.config,
        "tp": args.tp,
        "engine_start_s": round(start_s, 1),
        "best_s": round(min(runs), 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / min(runs)),
        "dim": int(sample.shape[1]),
        **fid,
    }


def fidelity_windows() -> list[list[int]]:
    rng = np.random.default_rng(7)
    return [rng.integers(4, 9, n).tolist() for n in FIDELITY_LENGTHS]  # N included


def spawn(args: argparse.Namespace, config: str, tp: int = 1, fidelity: bool = False) -> dict:
    cmd = [
        sys.executable, "-m", MODULE, "--one", "--model", args.model,
        "--shape", args.shape, "--config", config, "--tp", str(tp),
        "--windows", str(args.windows), "--length", str(args.length), "--reps", str(args.reps),
        "--device", args.device,
    ]  # fmt: skip
    if fidelity:
        cmd.append("--fidelity")
    env = dict(os.environ)
    if args.device == "cpu":
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    elif tp == 1:
        env.setdefault("CUDA_VISIBLE_DEVICES", "0")
    else:
        env["VLLM_ALLREDUCE_USE_SYMM_MEM"] = "0"
    log = WORK / f"log-{args.shape}-{config}-tp{tp}.txt"
    return {"config": config, "tp": tp, **spawn_json(cmd, log, args.timeout, env)}


def close(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a, b = a.astype(np.float64), b.astype(np.float64)
    rel = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
    r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return rel, r


def hf_fidelity(args: argparse.Namespace) -> list[dict]:
    """Every layer x pooling of our engine (bf16) against HF output_hidden_states (bf16)."""
    import torch

    from pipeline.embed.reference import HFReferenceEmbedder

    layers, poolings, _ = configs(num_layers(args.model))["all"]
    got = spawn(args, "all", fidelity=True)
    if "error" in got:
        return [got]
    ours = np.load(WORK / f"fid-{args.shape}-all.npy")
    ours = ours.reshape(len(FIDELITY_LENGTHS), len(layers), len(poolings), -1)
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    hf = HFReferenceEmbedder(args.model, dtype=dtype, device=args.device)
    ref = hf.pooled(fidelity_windows(), layers, poolings)
    del hf
    if args.device == "cuda":
        torch.cuda.empty_cache()
    rows = []
    for k in layers:
        for j, p in enumerate(poolings):
            pairs = [close(ours[i, k, j], ref[i, k, j]) for i in range(len(FIDELITY_LENGTHS))]
            # One-token windows: Pearson is still defined (hidden dims vary), rel L2 too.
            rows.append(
                {
                    "layer": k,
                    "pooling": p,
                    "rel_l2_max": round(max(r for r, _ in pairs), 5),
                    "pearson_min": round(min(c for _, c in pairs), 6),
                }
            )
    return rows


def pipeline_runs(args: argparse.Namespace) -> list[dict]:
    """The user's command (dnaembed's run()) on a FASTA: default against three layers x two
    poolings, one engine each, Ray started by the run as the CLI does."""
    from benchmarks.harness.workloads import make_records, write_records

    fasta = WORK / "genome.fa"
    if not fasta.exists():
        write_records(fasta, make_records("genome", args.mbp * 1_000_000, 8192, seed=3))
    rows = []
    for name, extra in (
        ("default", []),
        ("l3x2", ["embed.layers=[6,9,-1]", "embed.poolings=[mean,max]"]),
        ("merge", ["window.reverse_complement=merge"]),
    ):
        out = WORK / f"out-{name}"
        cmd = [
            sys.executable, "-m", "pipeline", "model=genos_1_2b", f"model.path={args.model}",
            f"input={fasta}", f"output={out}", "output.mode=overwrite", "window.size=8192",
            "model.max_model_len=16384", f"hydra.run.dir={WORK}/hydra-{name}", *extra,
        ]  # fmt: skip
        proc, wall = run_logged(cmd, WORK / f"log-pipeline-{name}.txt", args.timeout)
        if proc.returncode:
            rows.append({"run": name, "error": (proc.stdout + proc.stderr)[-3000:]})
            continue
        m = read_manifest(out)
        rows.append(
            {
                "run": name,
                "wall_s": round(wall, 1),
                "tokens": m["counts"]["tokens"],
                "windows": m["counts"]["windows"],
                "columns": [e["column"] for e in m["embeddings"]],
                "engine_tokens_per_s": m["engine"]["tokens_per_s"],
                "end_to_end_tokens_per_s": round(m["counts"]["tokens"] / wall),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="genos_1_2b")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run (tiny shape, fp32)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--parts", default="engine")
    ap.add_argument("--configs", default="default,l12_ours,l6,l3x2")
    ap.add_argument("--windows", type=int, default=64)
    ap.add_argument("--length", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mbp", type=int, default=4)
    ap.add_argument("--timeout", type=int, default=400)
    ap.add_argument("--out", default=None)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", default="default", help=argparse.SUPPRESS)
    ap.add_argument("--tp", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--fidelity", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(one_engine(args)), flush=True)
        return 0
    if args.model is None:
        args.model = model_dir(args.shape, WORK, args.device)
    report: dict = {"shape": args.shape, "model": args.model}
    parts = args.parts.split(",")
    if "engine" in parts:
        rows = [spawn(args, c) for c in args.configs.split(",")]
        base = next((r for r in rows if r["config"] == "default" and "error" not in r), None)
        for r in rows:
            if base and "error" not in r:
                r["vs_default"] = round(r["tokens_per_s"] / base["tokens_per_s"], 3)
        report["engine"] = rows
        print(f"model | config | tp | engine start s | tokens/s | vs default  ({args.shape})")
        for r in rows:
            print(
                f"{args.shape} | {r['config']} | {r['tp']} | {r.get('engine_start_s')} | "
                f"{r.get('tokens_per_s')} | {r.get('vs_default')} {r.get('error', '')[-300:]}"
            )
    if "tp2" in parts:
        r2 = spawn(args, "l3x2", tp=2)
        one = WORK / f"sample-{args.shape}-l3x2-tp1.npy"
        two = WORK / f"sample-{args.shape}-l3x2-tp2.npy"
        if one.exists() and two.exists():
            a, b = np.load(two), np.load(one)
            pairs = [close(a[i], b[i]) for i in range(len(a))]
            r2["vs_tp1_rel_l2_max"] = round(max(x for x, _ in pairs), 5)
            r2["vs_tp1_pearson_min"] = round(min(y for _, y in pairs), 6)
        report["tp2"] = r2
        print(
            "tp2 |",
            json.dumps({k: v for k, v in r2.items() if k != "error"}),
            r2.get("error", "")[-500:],
        )
    if "fidelity" in parts:
        rows = hf_fidelity(args)
        report["fidelity"] = rows
        print("layer | pooling | rel L2 max | Pearson min  (bf16, our engine vs HF)")
        for r in rows:
            print(
                " | ".join(
                    str(r.get(k, r.get("error", "")))
                    for k in ("layer", "pooling", "rel_l2_max", "pearson_min")
                )
            )
    if "pipeline" in parts:
        rows = pipeline_runs(args)
        report["pipeline"] = rows
        for r in rows:
            print("pipeline |", json.dumps(r)[:600])
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
