"""Reports: the software a result was measured with, fidelity of sample embeddings, the
contenders' table and ratios, and one table from contender lanes that ran side by side.

    python -m benchmarks.harness.report OUT/b12/bench.json OUT/b10/bench.json --out report.json

Lanes (one `benchmarks.questions.engine_vs_pipeline --lane` per GPU, or one after another on
one machine) share their models and workloads (the same chunk ids), so every contender's
sample is compared with the HF references whichever lane computed them: HF as run today
(bf16) and HF in float32. Ratios are taken across lanes too: the lanes ran on identical GPUs
of one machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def versions(device: str) -> dict:
    """vLLM, Ray, torch, transformers and Python; on cuda the GPU, their number, the driver."""
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


def load_sample(path: str) -> dict[str, np.ndarray]:
    sample = np.load(path)
    return dict(zip(sample["ids"].tolist(), sample["emb"], strict=True))


def fidelity(result: dict, reference: dict, suffix: str = "") -> dict:
    """Per-window Pearson (the smallest) and relative L2 (the largest) against a reference."""
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


def ratios(rows: list[dict], report: dict) -> None:
    """The goals, as ratios measured in this run: dnaembed (and its variants) over each other
    contender, steady and end to end, and N engines over one."""
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


TABLE_COLUMNS = [
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


def print_table(rows: list[dict]) -> None:
    """The contenders' table, one row per model, workload and contender."""
    print(" | ".join(TABLE_COLUMNS))
    for r in rows:
        if "error" in r:
            print(f"{r['model']} | {r['workload']} | {r['contender']} | ERROR {r['error'][-80:]!r}")
            continue
        cells = []
        for c in TABLE_COLUMNS:
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


def merge(reports: list[dict]) -> tuple[list[dict], list[str]]:
    rows, seen, notes = [], set(), []
    for report in reports:
        for r in report["runs"]:
            key = (r["model"], r["workload"], r["contender"])
            if key in seen:
                notes.append(f"{'/'.join(key)}: ran in more than one lane; the first is kept")
                continue
            seen.add(key)
            rows.append(dict(r))
    refs = {}
    for r in rows:
        if r["contender"] in ("hf_today", "hf_fp32") and r.get("sample_file"):
            refs[(r["model"], r["workload"], r["contender"])] = load_sample(r["sample_file"])
    for r in rows:
        if "error" in r or not r.get("sample_file"):
            continue
        got = {"sample": load_sample(r["sample_file"])}
        for ref, suffix in (("hf_today", ""), ("hf_fp32", "_fp32")):
            reference = refs.get((r["model"], r["workload"], ref))
            if reference is not None:
                r.update(fidelity(got, reference, suffix))
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("reports", nargs="+", help="bench.json of each lane")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    reports = []
    for path in args.reports:
        if Path(path).exists():
            reports.append(json.loads(Path(path).read_text()))
        else:
            print(f"missing: {path} (that lane wrote nothing)", flush=True)
    rows, notes = merge(reports)
    merged = {"device": reports[0]["device"] if reports else None, "lanes": args.reports}
    if reports:
        merged["versions"] = reports[0].get("versions")
    ratios(rows, merged)
    merged["runs"], merged["notes"] = rows, notes
    Path(args.out).write_text(json.dumps(merged, indent=2))
    print_table(rows)
    print(json.dumps(merged["ratios"], indent=2))
    for n in notes:
        print(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
