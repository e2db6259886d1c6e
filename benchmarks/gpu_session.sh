#!/usr/bin/env bash
# The GPU runs behind BENCHMARKS.md, on a 4-GPU machine (nvidia-h200-x4) lent by the device
# tool, with the GPU kit (../shared/gpu/README.md) staged in /tmp/site and Ray's dashboard
# extras carried as wheels in .whl/ (see BENCHMARKS.md, "How to reproduce").
#
#   bash benchmarks/gpu_session.sh prep   # dashboard extras, random-weight models (once)
#   bash benchmarks/gpu_session.sh main   # in parallel: GPU0 the 1.2B suite, GPU1 the 10B
#                                         # suite, GPUs 2-3 the Ray-job layouts (10B), then
#                                         # Ray Data LLM (1.2B) and the fp32 reference (10B)
#   bash benchmarks/gpu_session.sh scale  # GPUs 0-3: 1 vs 4 engines (1.2B); then 10B engine knobs
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/bench-out}
W=/tmp/bench-work
mkdir -p "$OUT" "$W"
# Ray's dashboard extras go to a directory of their own: `pip --target --upgrade` into
# /tmp/site would replace the kit's namespace packages (opentelemetry, google) whole.
if [ -d .whl ] && [ ! -f /tmp/extras/.done ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target /tmp/extras .whl/*.whl && touch /tmp/extras/.done
fi
export PYTHONPATH=/tmp/site:/tmp/extras:$PWD PYTHONUNBUFFERED=1 PATH=/tmp/site/bin:$PATH HF_HUB_OFFLINE=1
# Keep NVLink multicast off (the device tool's rule for shared multi-GPU hosts).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
python3 -c "import vllm, ray, torch, transformers; print('vllm', vllm.__version__, '| ray', ray.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"

summary() {  # the tables, from each log
  for f in "$@"; do
    echo "===== $f"
    grep -E '^(model \||genos|layout|tp[12]_|versions|\{|  ")|FAILED|Traceback|Error' "$f" | tail -60
    tail -c 2000000 "$f" > "$f.tmp" && mv "$f.tmp" "$f"
  done
}

case "${1:-}" in
  prep)
    python3 -c "import ray.dashboard.optional_deps, opentelemetry.metrics; print('dashboard deps ok')"
    # Models and workloads once, before lanes share them.
    python3 -m benchmarks.bench --models genos_1_2b,genos_10b --contenders "" --no-warm-caches \
      --out "$OUT/prep" --work "$W" > "$OUT/prep.log" 2>&1
    grep -E '^\[genos' "$OUT/prep.log"
    ;;
  main)
    # Four lanes at once, one per GPU, sharing models and workloads; each runs its contenders
    # one after another. Every lane warms the kernel caches first (a vLLM lane's first engine
    # would otherwise pay torch.compile and Triton autotuning inside its timing).
    B="timeout 545 python3 -m benchmarks.bench --work $W --timeout 300"
    CUDA_VISIBLE_DEVICES=0 $B --models genos_1_2b --lane g0 --out "$OUT/g0" \
      --contenders dnaembed,engine,hf_today,hf_tuned,hf_fp32 > "$OUT/g0.log" 2>&1 &
    CUDA_VISIBLE_DEVICES=1 $B --models genos_10b --lane g1 --out "$OUT/g1" \
      --contenders dnaembed,engine,hf_today,hf_tuned > "$OUT/g1.log" 2>&1 &
    (CUDA_VISIBLE_DEVICES=2,3 timeout 260 python3 -m benchmarks.cluster_jobs --work "$W" \
       --layouts tp1_x2,tp2_x1 --out "$OUT/jobs" > "$OUT/jobs.log" 2>&1
     CUDA_VISIBLE_DEVICES=2 timeout 280 python3 -m benchmarks.bench --work "$W" --timeout 270 \
       --models genos_1_2b --lane g2 --out "$OUT/g2" --contenders raydata > "$OUT/g2.log" 2>&1 &
     CUDA_VISIBLE_DEVICES=3 timeout 280 python3 -m benchmarks.bench --work "$W" --timeout 270 \
       --models genos_10b --lane g3 --out "$OUT/g3" --contenders hf_fp32 --no-warm-caches \
       > "$OUT/g3.log" 2>&1 &
     wait) &
    wait
    python3 -m benchmarks.report "$OUT"/g{0,1,2,3}/bench.json --out "$OUT/report.json" \
      > "$OUT/report.log" 2>&1
    summary "$OUT"/g{0,1,2,3}.log "$OUT/jobs.log" "$OUT/report.log"
    ;;
  diag)
    # After `main`: why dnaembed trailed the engine on `genome` with warm caches (0.58 x, 1.2B),
    # Ray Data LLM timed from inside its engine stage, the fp32 reference, and both Ray-job
    # layouts with work for every engine.
    B="python3 -m benchmarks.bench --work $W --timeout 240"
    (CUDA_VISIBLE_DEVICES=0 timeout 240 $B --models genos_1_2b --workloads genome \
       --contenders engine,dnaembed --lane d0 --out "$OUT/d0" > "$OUT/d0.log" 2>&1
     CUDA_VISIBLE_DEVICES=0 timeout 100 $B --models genos_1_2b --workloads genome \
       --contenders engine --engine-pack-tokens 1048576 --no-warm-caches --lane d1 \
       --out "$OUT/d1" > "$OUT/d1.log" 2>&1
     CUDA_VISIBLE_DEVICES=0 timeout 120 $B --models genos_1_2b --workloads genome \
       --contenders dnaembed --max-batch-tokens 4194304 --no-warm-caches --lane d5 \
       --out "$OUT/d5" > "$OUT/d5.log" 2>&1) &
    CUDA_VISIBLE_DEVICES=1 timeout 460 $B --models genos_1_2b --contenders raydata,hf_today,hf_fp32 \
      --lane d2 --out "$OUT/d2" > "$OUT/d2.log" 2>&1 &
    (CUDA_VISIBLE_DEVICES=2,3 timeout 260 python3 -m benchmarks.cluster_jobs --work "$W" \
       --layouts tp2_x1,tp1_x2 --out "$OUT/jobs" > "$OUT/jobs.log" 2>&1
     CUDA_VISIBLE_DEVICES=2 timeout 210 $B --models genos_10b --workloads uniform,genome \
       --contenders engine,hf_fp32,hf_today --lane d4 --out "$OUT/d4" > "$OUT/d4.log" 2>&1 &
     CUDA_VISIBLE_DEVICES=3 timeout 210 $B --models genos_10b --workloads genome \
       --contenders engine,dnaembed --lane d3 --out "$OUT/d3" > "$OUT/d3.log" 2>&1 &
     wait) &
    wait
    python3 -m benchmarks.report "$OUT"/d{0,1,2,3,4,5}/bench.json --out "$OUT/report.json" \
      > "$OUT/report.log" 2>&1
    summary "$OUT"/d{0,1,2,3,4,5}.log "$OUT/jobs.log" "$OUT/report.log"
    ;;
  scale)
    CUDA_VISIBLE_DEVICES=0,1,2,3 timeout 300 python3 -m benchmarks.bench --models genos_1_2b \
      --workloads "" --scale 4 --scale-tokens 8388608 --out "$OUT/scale" --work "$W" \
      --timeout 280 > "$OUT/scale.log" 2>&1
    CUDA_VISIBLE_DEVICES=0 timeout 240 python3 -m benchmarks.bench --models genos_10b \
      --workloads uniform --contenders engine --engine-kwargs '{"max_num_batched_tokens": 262144}' \
      --out "$OUT/k262k" --work "$W" --lane k1 --timeout 230 > "$OUT/k262k.log" 2>&1 &
    CUDA_VISIBLE_DEVICES=1 timeout 240 python3 -m benchmarks.bench --models genos_10b \
      --workloads uniform --contenders engine --engine-kwargs '{"enforce_eager": true}' \
      --out "$OUT/keager" --work "$W" --lane k2 --timeout 230 > "$OUT/keager.log" 2>&1 &
    wait
    summary "$OUT/scale.log" "$OUT/k262k.log" "$OUT/keager.log"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_session.sh prep|main|diag|scale" >&2
    exit 2
    ;;
esac
