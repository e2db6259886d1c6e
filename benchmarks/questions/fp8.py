"""FP8: the bare engine with `model.quantization=fp8` (weights quantized to FP8 as the engine
loads them) against the same engine in bf16, eager (the default) and compiled, on 8192-token
windows, with every engine's embeddings against HF in bf16 and in float32 on the sample
windows. A run of engine_vs_pipeline with these contenders; prints its table, writes bench.json.

    python -m benchmarks.questions.fp8 --device cuda --out $OUT      # the Genos-10B shape

Any option of engine_vs_pipeline can follow (`--work`, `--lane`, `--timeout`, `--models` ...).
"""

from __future__ import annotations

import json
import sys

from benchmarks.questions import engine_vs_pipeline

VARIANTS = {
    "engine:fp8": {"contender": "engine", "spec": {"quantization": "fp8"}},
    "engine:compiled": {"contender": "engine", "spec": {"engine_kwargs": {"enforce_eager": False}}},
}
CONTENDERS = "engine,engine:fp8,engine:compiled,hf_today,hf_fp32"


def main(argv: list[str] | None = None) -> int:
    base = ["--models", "genos_10b", "--workloads", "uniform", "--no-warm-caches"]
    base += ["--variants", json.dumps(VARIANTS), "--contenders", CONTENDERS]
    return engine_vs_pipeline.main([*base, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
