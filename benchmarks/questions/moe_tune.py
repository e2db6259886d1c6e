"""Tile configs for vLLM's fused-MoE Triton kernel, for a Genos shape on this GPU.

vLLM ships tuned configs per (experts, expert width, GPU) and falls back to a generic one
otherwise. Genos-1.2B (8 experts x 4096) has one for H100 and H200; Genos-10B (8 x 8192) has
none, so its experts (about 70% of its FLOPs at 8192 tokens) run on the fallback. This times
the kernel (`fused_experts`, as the engine calls it: bf16, top-2, SiLU) for a set of tile
configs at prefill-sized token counts, keeps the fastest, and writes the file vLLM looks for in
`VLLM_TUNED_CONFIG_FOLDER`. Small token counts (never seen by an embedding prefill) keep vLLM's
own defaults, so nothing gets slower there.

    python -m benchmarks.questions.moe_tune --shape genos_10b \
        --out-dir pipeline/embed/moe_configs --json $OUT/moe_tune.json

GPU only (Triton); `candidates` and `merge` are plain functions, tested on CPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

# Token counts per engine step to tune for: vLLM's step budget for 8192-token windows
# (131,072), and smaller steps (the tail of an input, short records).
TUNE_TOKENS = (131072, 32768, 8192, 2048)
# Below these, vLLM's default config is kept (decode-sized; an embedding run has none).
DEFAULT_TOKENS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024)
SMEM_BYTES = 227 * 1024  # Hopper's per-block shared memory limit
KEYS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")


def candidates() -> list[dict]:
    """Tiles for large prefill steps, those that fit in shared memory (bf16, 2 bytes)."""
    out = []
    for bm, bn, bk, warps, stages in itertools.product(
        (64, 128), (128, 256), (64, 128), (4, 8), (3, 4)
    ):
        if (bm * bk + bk * bn) * 2 * stages > SMEM_BYTES:
            continue
        values = (bm, bn, bk, 32, warps, stages)
        out.append(dict(zip(KEYS, values, strict=True)))
    return out


def merge(tuned: dict[int, dict], defaults: dict[int, dict]) -> dict[str, dict]:
    """One file: vLLM's defaults for small steps, the tuned tiles for large ones."""
    table = {**defaults, **tuned}
    return {str(m): table[m] for m in sorted(table)}


def _problem(m: int, hidden: int, width: int, experts: int, top_k: int):
    import torch

    g = torch.Generator(device="cuda").manual_seed(m)
    x = torch.randn(m, hidden, device="cuda", dtype=torch.bfloat16, generator=g) * 0.1
    w1 = torch.randn(experts, 2 * width, hidden, device="cuda", dtype=torch.bfloat16, generator=g)
    w2 = torch.randn(experts, hidden, width, device="cuda", dtype=torch.bfloat16, generator=g)
    logits = torch.randn(m, experts, device="cuda", generator=g)
    weights, ids = torch.topk(torch.softmax(logits, dim=-1), top_k, dim=-1)
    return x, w1 * 0.02, w2 * 0.02, weights.float(), ids.to(torch.int32)


def _time(problem, config: dict | None, reps: int) -> float:
    """Seconds per call, after one untimed call (Triton compiles the config there)."""
    import torch
    from vllm.model_executor.layers.fused_moe import override_config
    from vllm.model_executor.layers.fused_moe.fused_moe import fused_experts

    x, w1, w2, weights, ids = problem
    with override_config(config):
        fused_experts(x, w1, w2, weights, ids)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fused_experts(x, w1, w2, weights, ids)
        end.record()
        torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="genos_10b")
    ap.add_argument("--out-dir", required=True, help="where the vLLM config file is written")
    ap.add_argument("--json", required=True, help="every timing, as JSON")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--top", type=int, default=6, help="configs carried to smaller steps")
    args = ap.parse_args(argv)

    import torch
    from vllm.model_executor.layers.fused_moe.fused_moe import (
        get_config_file_name,
        get_default_config,
        get_moe_configs,
        try_get_optimal_moe_config,
    )

    from benchmarks.harness.shapes import SHAPES

    shape = SHAPES[args.shape]
    e, n, k, top_k = shape.experts, shape.moe_hidden, shape.hidden, shape.top_k
    name = get_config_file_name(e, n, None)  # bf16: no dtype in the name
    shipped = get_moe_configs(e, n, None)
    print(f"{args.shape}: E={e} N={n} K={k} top-{top_k} on {torch.cuda.get_device_name()}")
    print(f"vLLM's own config for it: {'shipped' if shipped else 'none (generic default)'}")

    report: dict = {"shape": args.shape, "file": name, "vllm_shipped": bool(shipped), "steps": []}
    defaults = shipped or {m: get_default_config(m, e, n, k, top_k, None) for m in DEFAULT_TOKENS}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tuned: dict[int, dict] = {}
    pool = candidates()
    for m in TUNE_TOKENS:
        problem = _problem(m, k, n, e, top_k)
        flops = 2.0 * m * top_k * k * n * 3  # gate+up (2n x k) and down (k x n), per token
        baseline = _time(problem, None, args.reps)  # what vLLM runs today
        rows = []
        t0 = time.perf_counter()
        for cfg in pool:
            try:
                rows.append((_time(problem, cfg, args.reps), cfg))
            except Exception as err:  # a tile Triton cannot build on this GPU
                print(f"  M={m} skip {cfg}: {type(err).__name__}", flush=True)
        rows.sort(key=lambda r: r[0])
        best_s, best = rows[0]
        # Then the grouping of M-blocks for the best tile (L2 reuse of expert weights).
        for group in (1, 16, 64):
            cfg = {**best, "GROUP_SIZE_M": group}
            try:
                s = _time(problem, cfg, args.reps)
            except Exception:
                continue
            if s < best_s:
                best_s, best = s, cfg
        # Keep vLLM's choice where no tile beats it by more than timing noise.
        if best_s > 0.99 * baseline:
            best_s, best = baseline, None
        step = {
            "tokens": m,
            "vllm_s": baseline,
            "vllm_tflops": flops / baseline / 1e12,
            "best_s": best_s,
            "best_tflops": flops / best_s / 1e12,
            "speedup": baseline / best_s,
            "best": best,
            "tried": [{"s": s, **c} for s, c in rows],
            "sweep_s": time.perf_counter() - t0,
        }
        report["steps"].append(step)
        print(
            f"M={m:>6}: vLLM {baseline * 1e3:8.2f} ms ({step['vllm_tflops']:.0f} TFLOP/s)  "
            f"best {best_s * 1e3:8.2f} ms ({step['best_tflops']:.0f} TFLOP/s)  "
            f"x{step['speedup']:.3f}  {best}  [{len(rows)} configs, {step['sweep_s']:.0f} s]",
            flush=True,
        )
        # Where vLLM's own choice won, it is written out, so the nearest-key lookup still
        # finds it for steps of this size.
        tuned[m] = best or try_get_optimal_moe_config((e, 2 * n, k), (e, k, n), top_k, None, m)
        # Written after every step: a run cut short keeps what it found.
        report["config"] = merge(tuned, defaults)
        (out / name).write_text(json.dumps(report["config"], indent=2) + "\n")
        Path(args.json).write_text(json.dumps(report, indent=2))
        pool = [c for _, c in rows[: args.top]]
        del problem
        torch.cuda.empty_cache()
    print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
