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
#
# On a 2-GPU machine (nvidia-h200-x2), third session:
#   bash benchmarks/gpu_session.sh x2prep  # extras, py-spy, both models and their workloads
#   bash benchmarks/gpu_session.sh x2jobs  # the Ray-job layouts (10B): TP=1 x 2, TP=2 x 1
#   bash benchmarks/gpu_session.sh x2diag  # GPU0: the genome loss, profiled; GPU1: Ray Data
#                                          # LLM timed in its stage, engine vs HF float32
# On one H200 (nvidia-h200): h200prep (1.2B model and workloads), then h200serial (engine and
# pipeline one at a time, nothing beside them) or h200rd (Ray Data LLM beside the engine).
# Fourth session, one H200: s4prep (models, MoE tiles tuned), s4rd (Ray Data LLM, engine,
# pipeline; 1.2B), s4moe (10B with vLLM's and the tuned MoE tiles).
# Each x2/h200/s4 mode leaves a few files in $OUT: its JSON and one logs-<mode>.tar.gz.
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
export PYTHONPATH=/tmp/site:/tmp/extras:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PATH=/tmp/site/bin:/tmp/extras/bin:$PATH
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

build_models() {  # models and workloads once, before lanes share them: build_models MODELS WORKLOADS
  python3 -m benchmarks.bench --models "$1" --workloads "$2" --contenders "" --no-warm-caches \
    --out "$W/prep" --work "$W" > "$W/prep.log" 2>&1
  grep -E '^\[genos|Error|Traceback' "$W/prep.log"
}

pack_logs() {  # every log and profile of this mode in one file (the device returns 8 files)
  tar -czf "$OUT/logs-$1.tar.gz" --ignore-failed-read "$W"/*.log "$W"/jobs/*.log "$W"/prof \
    "$OUT"/*.log 2>/dev/null
  rm -f "$OUT"/*.log
}

case "${1:-}" in
  x2prep)
    python3 -c "import ray.dashboard.optional_deps, opentelemetry.metrics; print('dashboard deps ok')"
    py-spy --version
    build_models genos_1_2b,genos_10b uniform,genome,long
    ;;
  x2jobs)
    # Eager engines: the same steady speed here (BENCHMARKS.md, 10B knobs) without minutes of
    # cold compilation on a fresh machine, which left TP=2 unfinished last time.
    CUDA_VISIBLE_DEVICES=0,1 timeout 420 python3 -m benchmarks.cluster_jobs --work "$W" \
      --layouts tp1_x2,tp2_x1 --extra +embed.engine_kwargs.enforce_eager=true \
      --job-timeout 180 --out "$OUT" > "$OUT/jobs.log" 2>&1
    grep -vE '^\s*$' "$OUT/jobs.log" | grep -E '^(\{|layout|tp[12]_|.*FAILED)|Error' | tail -30
    mkdir -p "$W/jobs" && cp "$OUT"/tp*.log "$W/jobs/" 2>/dev/null; rm -f "$OUT"/tp*.log
    pack_logs jobs
    ;;
  x2diag)
    B="python3 -m benchmarks.bench --work $W"
    P="$W/prof"
    # GPU0: why the pipeline trailed the engine on `genome` (1.2B): clean runs of both, the
    # same under py-spy (each pack's CPU profile, actor and engine processes), and the
    # pipeline with the engine's OpenMP threads as outside Ray (Ray sets 1 per CPU asked).
    V0='{"engine:prof": {"contender": "engine", "env": {"DNAEMBED_PROFILE_DIR": "'$P'/engine"},
      "spec": {"pack_tokens": 1048576}},
     "dnaembed:prof": {"contender": "dnaembed",
      "overrides": ["+embed.env_vars.DNAEMBED_PROFILE_DIR='$P'/dnaembed"]},
     "dnaembed:omp16": {"contender": "dnaembed", "overrides": ["+embed.env_vars.OMP_NUM_THREADS=16"]}}'
    CUDA_VISIBLE_DEVICES=0 timeout 520 $B --timeout 200 --models genos_1_2b --workloads genome \
      --contenders engine,dnaembed,dnaembed:prof,engine:prof,dnaembed:omp16 --variants "$V0" \
      --lane x0 --out "$W/x0" > "$OUT/x0.log" 2>&1 &
    # GPU1: the 10B engine first (its own compilation, not racing GPU0's for the same model),
    # then Ray Data LLM timed inside its engine stage with the 1.2B engine and HF float32,
    # then the 10B float32 reference.
    (CUDA_VISIBLE_DEVICES=1 timeout 170 $B --timeout 160 --models genos_10b --workloads uniform,genome \
       --contenders engine --lane x1 --out "$W/x1" > "$OUT/x1.log" 2>&1
     CUDA_VISIBLE_DEVICES=1 timeout 270 $B --timeout 200 --models genos_1_2b \
       --contenders raydata,engine,hf_fp32 --lane x2 --out "$W/x2" > "$OUT/x2.log" 2>&1
     CUDA_VISIBLE_DEVICES=1 timeout 100 $B --timeout 95 --models genos_10b --workloads uniform,genome \
       --contenders hf_fp32 --no-warm-caches --lane x3 --out "$W/x3" > "$OUT/x3.log" 2>&1) &
    wait
    python3 -m benchmarks.report "$W"/x{0,1,2,3}/bench.json --out "$OUT/report.json" \
      > "$OUT/report.log" 2>&1
    for f in "$P"/*/*.raw; do
      [ -f "$f" ] && { echo "===== $f"; python3 -m benchmarks.pyspy_summary "$f" --rate 50; }
    done > "$OUT/profiles.txt" 2>&1
    summary "$OUT"/x{0,1,2,3}.log "$OUT/report.log"
    pack_logs diag
    ;;
  h200prep)
    build_models genos_1_2b uniform,genome
    ;;
  h200serial)
    # One GPU, one contender at a time and nothing beside it: the x2 session showed that an
    # engine on the other GPU slowed whichever contender overlapped it (the bare engine too).
    V='{"dnaembed:b262k": {"contender": "dnaembed", "overrides": ["embed.max_batch_tokens=262144"]}}'
    timeout 540 python3 -m benchmarks.bench --work "$W" --timeout 130 --models genos_1_2b \
      --workloads uniform,genome --variants "$V" \
      --contenders engine,dnaembed,dnaembed:b262k,raydata \
      --lane s0 --out "$W/s0" > "$OUT/s0.log" 2>&1
    cp "$W/s0/bench.json" "$OUT/serial.json"
    summary "$OUT/s0.log"
    pack_logs serial
    ;;
  h200rd)
    # Ray Data LLM alone on one GPU, timed inside its engine stage, beside the bare engine.
    timeout 370 python3 -m benchmarks.bench --work "$W" --timeout 200 --models genos_1_2b \
      --workloads uniform,genome,long --contenders raydata,engine \
      --lane r0 --out "$W/r0" > "$OUT/r0.log" 2>&1
    cp "$W/r0/bench.json" "$OUT/raydata.json"
    summary "$OUT/r0.log"
    pack_logs raydata
    ;;
  s4prep)
    # Fourth session, one H200: both models and workloads, then vLLM's fused-MoE tiles tuned
    # for the 10B shape (vLLM ships none for 8 experts x 8192 on Hopper) and, for comparison,
    # the 1.2B shape (it ships one).
    build_models genos_1_2b,genos_10b uniform,genome,long
    mkdir -p "$W/moe" "$W/moe12"
    timeout 300 python3 -m benchmarks.moe_tune --shape genos_10b --out-dir "$W/moe" \
      --json "$OUT/moe_tune_10b.json" > "$OUT/moe_tune_10b.log" 2>&1
    timeout 120 python3 -m benchmarks.moe_tune --shape genos_1_2b --out-dir "$W/moe12" \
      --json "$OUT/moe_tune_1_2b.json" > "$OUT/moe_tune_1_2b.log" 2>&1
    cp "$W"/moe/*.json "$OUT/" 2>/dev/null
    grep -E '^(genos|vLLM|M=|wrote)|Error|Traceback' "$OUT"/moe_tune_*.log
    pack_logs s4prep
    ;;
  s4rd)
    # 1.2B: Ray Data LLM (timed inside its engine stage), the engine and the pipeline, one
    # contender at a time on one GPU. 220 s proved too short for Ray Data LLM's three engine
    # starts (it timed out); s4rdA then s4rdB is the split that ran.
    timeout 570 python3 -m benchmarks.bench --work "$W" --timeout 220 --models genos_1_2b \
      --workloads uniform,genome,long --contenders raydata,engine,dnaembed \
      --lane r4 --out "$W/r4" > "$OUT/r4.log" 2>&1
    cp "$W/r4/bench.json" "$OUT/raydata_1_2b.json"
    summary "$OUT/r4.log"
    pack_logs s4rd
    ;;
  s4rdA)
    # Ray Data LLM on a fresh H200 (the 1.2B model first): its engine starts in ~70 s per
    # workload, so three workloads need far more than s4rd's 220 s.
    build_models genos_1_2b uniform,genome,long
    timeout 420 python3 -m benchmarks.bench --work "$W" --timeout 400 --models genos_1_2b \
      --workloads uniform,genome,long --contenders raydata --lane r5 --out "$W/r5" \
      > "$OUT/r5.log" 2>&1
    cp "$W/r5/bench.json" "$OUT/raydata_r5.json"
    summary "$OUT/r5.log"
    pack_logs s4rdA
    ;;
  s4rdB)
    # Then the engine and the pipeline on the same GPU (caches already warm from s4rdA).
    timeout 400 python3 -m benchmarks.bench --work "$W" --timeout 250 --models genos_1_2b \
      --workloads uniform,genome,long --contenders engine,dnaembed --no-warm-caches \
      --lane r6 --out "$W/r6" > "$OUT/r6.log" 2>&1
    python3 -m benchmarks.report "$W"/r5/bench.json "$W"/r6/bench.json --out "$OUT/report.json" \
      > "$OUT/report.log" 2>&1
    summary "$OUT/r6.log" "$OUT/report.log"
    pack_logs s4rdB
    ;;
  s4ship)
    # 10B with the tiles now shipped in pipeline/embed/moe_configs (picked up by default):
    # engine and pipeline as users get them, vLLM's stock tiles beside them, HF as reference.
    build_models genos_10b uniform,genome
    S='{"VLLM_TUNED_CONFIG_FOLDER": "/tmp/no-moe-configs"}'
    V='{"engine:stock": {"contender": "engine", "env": '$S'}}'
    timeout 440 python3 -m benchmarks.bench --work "$W" --timeout 200 --models genos_10b \
      --workloads uniform,genome --variants "$V" --warm-envs "[{}, $S]" \
      --contenders engine,dnaembed,engine:stock,hf_today --lane p4 --out "$W/p4" \
      > "$OUT/p4.log" 2>&1
    cp "$W/p4/bench.json" "$OUT/shipped_10b.json"
    summary "$OUT/p4.log"
    pack_logs s4ship
    ;;
  s4moe)
    # 10B: the engine with vLLM's MoE tiles and with the tuned ones (s4prep), the pipeline
    # with the tuned ones, HF tuned; caches warmed for both tile sets first.
    M='{"VLLM_TUNED_CONFIG_FOLDER": "'$W'/moe"}'
    V='{"engine:moe": {"contender": "engine", "env": '$M'},
        "dnaembed:moe": {"contender": "dnaembed",
         "overrides": ["+embed.env_vars.VLLM_TUNED_CONFIG_FOLDER='$W'/moe"]}}'
    timeout 580 python3 -m benchmarks.bench --work "$W" --timeout 250 --models genos_10b \
      --workloads uniform,genome,long --variants "$V" --warm-envs "[{}, $M]" \
      --contenders engine,engine:moe,dnaembed:moe,hf_tuned \
      --lane m4 --out "$W/m4" > "$OUT/m4.log" 2>&1
    cp "$W/m4/bench.json" "$OUT/moe_10b.json"
    summary "$OUT/m4.log"
    pack_logs s4moe
    ;;
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
