"""The contenders: each embeds its workloads in a process of its own (a clean GPU each time),
started and timed by benchmarks.harness.runner.run_contender.

    python -m benchmarks.harness.contenders SPEC.json   # writes SPEC.result.json, SPEC.*.npz

A spec names the contender, the model, the workload's windows (same token ids for all) and the
sample of chunk ids whose embeddings are kept for the fidelity check. `engine` is the bare
engine (vLLM alone: the ceiling); `dnaembed` the pipeline end to end; `hf_today`, `hf_tuned`
HF transformers as run today and tuned; `raydata` Ray Data LLM; `hf_fp32` the float32
reference on the sample windows.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def engine_spec(model: str, device: str, max_model_len: int, dtype: str | None = None, **fields):
    """The bare engine's EngineSpec (the product's own, vLLM's MEAN pooler unless a `head` is
    given): the model directory is its own tokenizer, bf16 on cuda and float32 on cpu unless
    `dtype` says otherwise; `fields` are EngineSpec's others (engine_kwargs, ...)."""
    from pipeline.embed.engine import EngineSpec

    return EngineSpec(
        model=model,
        tokenizer=model,
        revision=None,
        dtype=dtype or ("bfloat16" if device == "cuda" else "float32"),
        max_model_len=max_model_len,
        pooling="MEAN",
        device=device,
        **fields,
    )


def _engine_spec(spec: dict):
    return engine_spec(
        spec["model_path"],
        spec["device"],
        spec["max_model_len"],
        dtype=spec["dtype"],
        engine_kwargs=dict(spec.get("engine_kwargs", {})),
        gpu_memory_utilization=spec.get("gpu_memory_utilization"),
        quantization=spec.get("quantization"),
    )


def _start_ray() -> float:
    """A local Ray for this contender; the seconds it took (part of its wall time)."""
    import ray

    t = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    return time.perf_counter() - t


def engine(spec: dict, workloads: list[dict]) -> list[dict]:
    """The ceiling: LLM.embed on all pre-tokenized windows, one call, one process, no Ray."""
    from vllm.inputs import TokensPrompt

    from benchmarks.harness.profile import profiled
    from pipeline.embed.engine import build_llm

    t = time.perf_counter()
    llm = build_llm(_engine_spec(spec))
    llm.embed([TokensPrompt(prompt_token_ids=[0] * 16)], use_tqdm=False)  # as EmbedStage does
    start_s = time.perf_counter() - t
    results = []
    for w in workloads:
        prompts = [TokensPrompt(prompt_token_ids=x) for x in w["tokens"]]
        # Optionally in consecutive packs of a token budget, one call each, as the pipeline's
        # engine actor gets them (a diagnostic: does cutting into packs cost throughput?).
        bounds = [(0, len(prompts))]
        if spec.get("pack_tokens"):
            from pipeline.tokenize.pack import pack_bounds

            lengths = np.array([len(x) for x in w["tokens"]])
            bounds = pack_bounds(lengths, spec["pack_tokens"])
        outs, run_s = [], 0.0
        for i, (lo, hi) in enumerate(bounds):
            with profiled(f"engine-{w['name']}-{i}"):  # off unless DNAEMBED_PROFILE_DIR is set
                t = time.perf_counter()
                outs += llm.embed(prompts[lo:hi], use_tqdm=False)
                run_s += time.perf_counter() - t
        emb = {
            c: np.asarray(o.outputs.embedding, np.float32)
            for c, o in zip(w["ids"], outs, strict=True)
        }
        results.append(
            {"start_s": start_s, "steady_s": run_s, "wall_s": start_s + run_s, "emb": emb}
        )
    return results


def dnaembed(spec: dict, workloads: list[dict]) -> list[dict]:
    """The pipeline end to end: FASTA on local disk -> Parquet on local disk."""
    import ray

    from pipeline.compose import compose, to_config
    from pipeline.load.loader import load_embeddings, read_manifest
    from pipeline.run import run

    ray_s = _start_ray()
    results = []
    for w in workloads:
        label = spec.get("label", "dnaembed")
        out = w["work"] + f"/out.{label}" + (f".{spec['lane']}" if spec.get("lane") else "")
        overrides = [
            *w["dnaembed_overrides"],
            *spec.get("extra_overrides", []),
            f"output={out}",
            "output.mode=overwrite",
        ]
        cfg = to_config(compose(overrides))
        t = time.perf_counter()
        run(cfg, echo=lambda line: print(line.splitlines()[-1], flush=True))
        wall = time.perf_counter() - t + ray_s
        manifest = read_manifest(out)
        timing = manifest["engine"]
        if manifest["counts"]["windows"] != len(w["ids"]):
            raise RuntimeError("the pipeline made other windows than the benchmark")
        table = load_embeddings(out)
        want = set(w["sample"])
        rows = [i for i, c in enumerate(table.column("chunk_id").to_pylist()) if c in want]
        sub = table.take(rows)
        vecs = sub.column("embedding").combine_chunks().flatten().to_numpy()
        emb = dict(
            zip(sub.column("chunk_id").to_pylist(), vecs.reshape(len(rows), -1), strict=True)
        )
        results.append(
            {
                "start_s": wall - timing["span_s"],
                "steady_s": timing["span_s"],
                "wall_s": wall,
                "emb": emb,
                "engine": timing,
            }
        )
    ray.shutdown()
    return results


def _hf(spec: dict, dtype: str | None = None):
    from pipeline.embed.reference import HFReferenceEmbedder

    t = time.perf_counter()
    hf = HFReferenceEmbedder(
        spec["model_path"],
        dtype=dtype or spec["dtype"],
        device=spec["device"],
        attn_implementation="sdpa",
    )
    return hf, time.perf_counter() - t


def hf_today(spec: dict, workloads: list[dict]) -> list[dict]:
    """As users run it today (Genos' examples): one window per forward pass, input order."""
    hf, start_s = _hf(spec)
    hf.embed(workloads[0]["tokens"][:1])  # warm-up
    results = []
    for w in workloads:
        _sync(spec["device"])
        t = time.perf_counter()
        vecs = hf.embed(w["tokens"], batch_size=1)
        _sync(spec["device"])
        run_s = time.perf_counter() - t
        results.append(
            {
                "start_s": start_s,
                "steady_s": run_s,
                "wall_s": start_s + run_s,
                "emb": dict(zip(w["ids"], vecs, strict=True)),
            }
        )
    return results


def hf_fp32(spec: dict, workloads: list[dict]) -> list[dict]:
    """Not a contender: the sample windows through HF in float32, the reference that tells a
    bf16 rounding difference from a real one (no timing is claimed for it)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # true fp32, or it is no better a reference
    torch.backends.cudnn.allow_tf32 = False
    hf, start_s = _hf(spec, dtype="float32")
    results = []
    for w in workloads:
        # Not the 131072-token windows: sdpa has no fused float32 kernel for grouped-query
        # attention, and its fallback would materialise the whole score matrix (1 TiB).
        pick = [
            i
            for i, c in enumerate(w["ids"])
            if c in set(w["sample"]) and len(w["tokens"][i]) <= spec.get("fp32_max_len", 16384)
        ]
        t = time.perf_counter()
        vecs = hf.embed([w["tokens"][i] for i in pick], batch_size=1) if pick else []
        _sync(spec["device"])
        results.append(
            {
                "start_s": start_s,
                "steady_s": None,
                "wall_s": start_s + time.perf_counter() - t,
                "emb": {w["ids"][i]: v for i, v in zip(pick, vecs, strict=True)},
                "windows": len(pick),
                "tokens": int(sum(len(w["tokens"][i]) for i in pick)),
                "note": "fp32 reference on the sample only",
            }
        )
    return results


def _batches(tokens: list[list[int]], budget: int) -> list[list[int]]:
    """Indices sorted by length, longest first, cut so that padded size stays in budget."""
    order = sorted(range(len(tokens)), key=lambda i: len(tokens[i]), reverse=True)
    batches, cur, width = [], [], 0
    for i in order:
        if cur and max(width, len(tokens[i])) * (len(cur) + 1) > budget:
            batches.append(cur)
            cur = []
        width = len(tokens[i]) if not cur else max(width, len(tokens[i]))
        cur.append(i)
    return [*batches, cur] if cur else batches


def hf_tuned(spec: dict, workloads: list[dict]) -> list[dict]:
    """Padded batches sorted by length, the largest token budget that fits (halved on OOM)."""
    hf, start_s = _hf(spec)
    budget = spec.get("hf_budget", 262144)
    results = []
    for w in workloads:
        tokens, ids = w["tokens"], w["ids"]
        while True:
            try:
                batches = _batches(tokens, budget)
                hf.embed([tokens[i] for i in batches[0]], batch_size=len(batches[0]))  # warm-up
                _sync(spec["device"])
                t = time.perf_counter()
                vecs = {}
                for b in batches:
                    out = hf.embed([tokens[i] for i in b], batch_size=len(b))
                    vecs.update({ids[i]: v for i, v in zip(b, out, strict=True)})
                _sync(spec["device"])
                run_s = time.perf_counter() - t
                break
            except Exception as e:
                if "out of memory" not in str(e).lower() or budget <= 8192:
                    raise
                import torch

                torch.cuda.empty_cache()
                budget //= 2
        results.append(
            {
                "start_s": start_s,
                "steady_s": run_s,
                "wall_s": start_s + run_s,
                "emb": vecs,
                "hf_budget": budget,
            }
        )
    return results


def raydata(spec: dict, workloads: list[dict]) -> list[dict]:
    """The generic peer: a ray.data.llm processor, embed task, same pooling, pre-tokenized."""
    import pyarrow as pa
    import ray
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from benchmarks.harness import raydata_timing
    from pipeline.embed.engine import engine_kwargs

    kwargs = engine_kwargs(_engine_spec(spec))
    for key in ("model", "tokenizer", "runner", "convert", "revision"):
        kwargs.pop(key, None)
    kwargs["pooler_config"] = {"pooling_type": "MEAN", "use_activation": False}
    extra = {}
    if spec["device"] == "cpu":
        extra["placement_group_config"] = {"bundle_per_worker": {"CPU": 1}}
        extra["runtime_env"] = {"env_vars": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}}
    ray_s = _start_ray()
    results = []
    for w in workloads:
        ids, tokens = w["ids"], w["tokens"]
        t = time.perf_counter()
        config = vLLMEngineProcessorConfig(
            model_source=spec["model_path"],
            task_type="embed",
            engine_kwargs=kwargs,
            # At least 8 batches, so completions spread over the run (see `steady` below).
            batch_size=spec.get("raydata_batch_size") or max(1, min(16, len(ids) // 8)),
            concurrency=1,
            log_engine_metrics=False,
            chat_template_stage=False,
            tokenize_stage=False,
            detokenize_stage=False,
            **extra,
        )
        processor = build_processor(
            config,
            preprocess=lambda r: {"tokenized_prompt": [int(x) for x in r["ids"]]},
            postprocess=lambda r: {
                "chunk_id": r["chunk_id"],
                "emb": r["embeddings"],
                "n": r["num_input_tokens"],
                "batch": r["batch_uuid"],
                # Stamped inside the engine stage (benchmarks.harness.raydata_timing).
                "t_submit": r["t_submit"],
                "t_out": r["t_out"],
            },
        )
        raydata_timing.install(processor)
        table = pa.table({"chunk_id": ids, "ids": pa.array(tokens, pa.list_(pa.int32()))})
        t = time.perf_counter()
        rows = processor(ray.data.from_arrow(table)).take_all()
        wall = time.perf_counter() - t + ray_s
        emb = {r["chunk_id"]: np.asarray(r["emb"], np.float32) for r in rows}
        # Steady time as for dnaembed: from the first batch reaching the engine stage to the
        # last embedding out of it.
        t0 = min(r["t_submit"] for r in rows)
        steady = max(r["t_out"] for r in rows) - t0
        result = {"start_s": wall - steady, "steady_s": steady, "wall_s": wall, "emb": emb}
        # Each row's times from the first batch in: how batches overlapped in the engine.
        result["row_times"] = [
            {"batch": r["batch"][:8], "n": r["n"]}
            | {k: round(r[k] - t0, 4) for k in ("t_submit", "t_out")}
            for r in rows
        ]
        results.append(result)
    ray.shutdown()
    return results


CONTENDERS = {
    "engine": engine,
    "dnaembed": dnaembed,
    "hf_today": hf_today,
    "hf_tuned": hf_tuned,
    "raydata": raydata,
    "hf_fp32": hf_fp32,
}


def main(path: str) -> int:
    from benchmarks.harness.workloads import load_windows

    spec = json.loads(Path(path).read_text())
    # A variant's environment (Ray, started here, hands it on to its workers).
    os.environ.update(spec.get("env", {}))
    workloads = []
    for w in spec["workloads"]:
        ids, tokens = load_windows(Path(w["windows"]))
        workloads.append({**w, "ids": ids, "tokens": tokens})
    results = CONTENDERS[spec["contender"]](spec, workloads)
    out = []
    for w, result in zip(workloads, results, strict=True):
        emb = result.pop("emb")
        sample = [c for c in w["sample"] if c in emb]
        np.savez(
            Path(path).with_suffix(f".{w['name']}.npz"),
            ids=np.array(sample),
            emb=np.stack([emb[c] for c in sample]) if sample else np.zeros((0, 0)),
        )
        missing = (
            len(set(w["ids"]) - set(emb)) if spec["contender"] not in ("dnaembed", "hf_fp32") else 0
        )
        result.setdefault("windows", len(w["ids"]))
        result.setdefault("tokens", int(sum(len(x) for x in w["tokens"])))
        result.update(workload=w["name"], missing=missing, lane=spec.get("lane") or "")
        out.append(result)
    Path(path).with_suffix(".result.json").write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
