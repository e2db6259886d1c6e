#!/usr/bin/env bash
# One way to reproduce each figure of BENCHMARKS.md, on the device tool's machines, one mode a
# call: `bash benchmarks/gpu_session.sh MODE`. BENCHMARKS.md, "How to reproduce", says how to
# stage the GPU kit (in /tmp/site) and Ray's dashboard extras (wheels in .whl/, for ray-jobs)
# on a fresh machine. Each mode runs one question module of benchmarks/questions/.
#
#   mode                machine          about   BENCHMARKS.md section (question module)
#   prep                any              3 min   (models and workloads the others share)
#   engine-vs-pipeline  nvidia-h200      8 min   Engine vs pipeline, 1.2B (engine_vs_pipeline)
#   raydata-llm         nvidia-h200      7 min   Engine vs pipeline: Ray Data LLM
#   hf-fidelity         nvidia-h200      8 min   Engine vs pipeline: HF rows and fidelity
#   moe-kernel          nvidia-h200      3 min   MoE tuning: the kernel alone (moe_tune)
#   moe-tiles           nvidia-h200      9 min   MoE tuning: 10B end to end, vLLM's vs the
#                                                shipped tiles; Engine vs pipeline, 10B
#   mfu-knobs           nvidia-h200      5 min   MoE tuning: 10B MFU knobs, vLLM's tiles
#   ray-jobs            nvidia-h200-x2   7 min   Scale: Ray jobs on two GPUs (ray_jobs)
#   scaling             nvidia-h200-x4   6 min   Scale: 1 vs 4 engines (engine_vs_pipeline)
#   layers-1_2b         nvidia-h200-x2   9 min   Layers and poolings, 1.2B (layers)
#   layers-10b          nvidia-h200-x2   8 min   Layers and poolings, 10B and TP=2 (layers)
#   loci-1_2b           nvidia-h200      5 min   Regions and variants, 1.2B (loci)
#   loci-10b            nvidia-h200      7 min   Regions and variants, 10B (loci)
#   scores              nvidia-h200      8 min   Variant scores (LLR), 1.2B: dnaembed against
#                                                vLLM's prompt_logprobs (scores)
#   startup-1_2b        nvidia-h200      6 min   Start-up, 1.2B: fresh, second, old defaults
#                                                (startup)
#   startup-10b         nvidia-h200      9 min   Start-up, 10B (startup); FP8 (fp8)
#   tp2                 nvidia-h200-x2   4 min   Start-up and Scale: 10B TP=2 (scale)
#   scale               nvidia-h200-x2   7 min   Scale: the user's command, 1.2B, 320 Mbp,
#                                                2 engines, against 2 x the bare engine (scale)
#   serve               nvidia-h200      7 min   Serving (serving)
#   tracks              nvidia-h200      8 min   Tracks: chr1's size in one gzip file, both
#                                                strands, projected to GRCh38 (tracks)
#   genome              nvidia-h200-x2   6 min   Whole genome and host side: human
#                                                chromosomes through the CLI, one engine per
#                                                GPU, projected to the genome on 8
#                                                (whole_genome)
#
# A device call lasts at most 600 s and every mode fits in one, with `prep` run first on the
# same machine (a mode builds any model it lacks, but that eats into its 600 s: the 10B model
# takes a minute or two). Settings found necessary are kept in the modes: kernel caches warmed
# before anything is timed (engine_vs_pipeline's --warm-caches, on by default on cuda), one
# contender at a time on one GPU with nothing beside it, 400 s for Ray Data LLM's three engine
# starts, eager engines and NCCL all-reduce for the TP=2 job layout.
#
# Every mode writes to $OUT its JSON (<mode>*.json), report.json where it ran a contenders
# question (every contender lane this machine has run so far, merged by
# benchmarks.harness.report: fidelity against the HF references and ratios across modes), and
# logs-<mode>.tar.gz (its logs and each contender's); the device tool returns at most 8 files.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-}
OUT=${OUT:-/tmp/bench-out}
W=/tmp/bench-work
mkdir -p "$OUT" "$W/lanes"
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

Q=benchmarks.questions
# vLLM's own fused-MoE tiles: a folder without tile files, so that vLLM falls back to the tiles
# it ships instead of ours (pipeline/embed/moe_configs, used unless this variable is set).
STOCK='{"VLLM_TUNED_CONFIG_FOLDER": "/tmp/no-moe-configs"}'
# Contender lanes, in the order report.json keeps them (a contender in two lanes: the first
# wins, so the lanes that time come before hf-fidelity's, whose 10B engine is there for its
# sample).
LANES="evp evp2 rd moe mfu sc hf1 hf10"

summary() {  # the tables, from each log
  for f in "$@"; do
    echo "===== $f"
    grep -E '^(model \||genos|layout|tp[12]_|versions|\{|  ")|FAILED|Traceback|Error' "$f" | tail -60
    tail -c 2000000 "$f" > "$f.tmp" && mv "$f.tmp" "$f"
  done
}

build_models() {  # models and workloads once, before lanes share them: build_models MODELS WORKLOADS
  python3 -m $Q.engine_vs_pipeline --models "$1" --workloads "$2" --contenders "" \
    --no-warm-caches --out "$W/prep" --work "$W" > "$W/prep.log" 2>&1
  grep -E '^\[genos|Error|Traceback' "$W/prep.log"
}

bench() {  # one contender lane, its results kept for report: bench LANE NAME SECONDS ARGS...
  # Lane names stay short: they are part of a Ray temp dir, whose unix sockets' paths are short.
  # BENCH_MODULE: the question module the lane runs (engine_vs_pipeline unless set).
  local lane=$1 name=$2 limit=$3
  shift 3
  timeout "$limit" python3 -m "$Q.${BENCH_MODULE:-engine_vs_pipeline}" --work "$W" \
    --lane "$lane" --out "$W/lanes/$lane" "$@" > "$OUT/$name.log" 2>&1
  cp "$W/lanes/$lane/bench.json" "$OUT/$name.json" 2>/dev/null
}

report() {  # every contender lane this machine has run so far, merged into $OUT/report.json
  local files=() lane
  for lane in $LANES; do
    [ -f "$W/lanes/$lane/bench.json" ] && files+=("$W/lanes/$lane/bench.json")
  done
  python3 -m benchmarks.harness.report "${files[@]}" --out "$OUT/report.json" \
    > "$OUT/report.log" 2>&1
}

pack_logs() {  # every log of this mode in one file (the device returns 8 files)
  tar -czf "$OUT/logs-$1.tar.gz" --ignore-failed-read "$W"/*.log "$W"/jobs/*.log "$OUT"/*.log \
    2>/dev/null
  rm -f "$OUT"/*.log
}

case "$MODE" in
  prep)
    # Figures: none. Both random-weight models (1.2B and 10B shapes) and their workloads,
    #   built once so that the modes after it keep their 600 s for measuring; checks Ray's
    #   dashboard extras (ray-jobs needs them).
    # Machine: whichever the next modes run on. About 3 min (mostly the 10B model).
    # Writes: logs-prep.tar.gz.
    python3 -c "import ray.dashboard.optional_deps, opentelemetry.metrics; print('dashboard deps ok')" \
      || echo "no dashboard extras: ray-jobs needs .whl/ carried (BENCHMARKS.md)"
    build_models genos_1_2b,genos_10b uniform,genome,long
    pack_logs prep
    ;;
  engine-vs-pipeline)
    # Figures: "Engine vs pipeline", 1.2B: the bare engine and dnaembed (its default packs and
    #   262,144-token packs) on uniform, genome and long; with raydata-llm first on the same
    #   machine, report.json has the Ray Data LLM table's engine and dnaembed columns too.
    # Machine: nvidia-h200 (one GPU, one contender at a time and nothing beside it: an engine
    #   on a neighbouring GPU slows whichever contender overlaps it). About 8 min.
    # Writes: engine-vs-pipeline.json (1.2B engine and dnaembed on uniform, genome, long),
    #   engine-vs-pipeline-packs.json (dnaembed, 262,144-token packs, on uniform and genome),
    #   report.json, logs-engine-vs-pipeline.tar.gz.
    export CUDA_VISIBLE_DEVICES=0
    build_models genos_1_2b uniform,genome,long
    bench evp engine-vs-pipeline 400 --timeout 250 --models genos_1_2b \
      --workloads uniform,genome,long --contenders engine,dnaembed
    V='{"dnaembed:b262k": {"contender": "dnaembed", "overrides": ["embed.max_batch_tokens=262144"]}}'
    bench evp2 engine-vs-pipeline-packs 180 --timeout 170 --models genos_1_2b \
      --workloads uniform,genome --variants "$V" --contenders dnaembed:b262k --no-warm-caches
    report
    summary "$OUT"/engine-vs-pipeline*.log "$OUT/report.log"
    pack_logs engine-vs-pipeline
    ;;
  raydata-llm)
    # Figures: "Engine vs pipeline", Ray Data LLM, 1.2B: its column, timed inside its engine
    #   stage (benchmarks/harness/raydata_timing.py), with every row's times (row_times).
    # Machine: nvidia-h200. About 7 min: Ray Data LLM starts an engine per workload, ~70 s
    #   each; 400 s for the contender gives room for the three starts (220 s did not).
    # Writes: raydata-llm.json, report.json, logs-raydata-llm.tar.gz.
    export CUDA_VISIBLE_DEVICES=0
    build_models genos_1_2b uniform,genome,long
    bench rd raydata-llm 440 --timeout 400 --models genos_1_2b --workloads uniform,genome,long \
      --contenders raydata
    report
    summary "$OUT/raydata-llm.log" "$OUT/report.log"
    pack_logs raydata-llm
    ;;
  hf-fidelity)
    # Figures: "Engine vs pipeline": the hf_today and hf_tuned rows of both shapes, and the
    #   fidelity figures against HF in bf16 and in float32 (HF bf16 against float32, 1.2B; the
    #   10B engine against float32). The Pearson / rel L2 figures are against hf_today:
    #   report.json has them for whatever else ran on this machine before.
    # Machine: nvidia-h200. About 8 min. The float32 reference leaves out windows over 16,384
    #   tokens (sdpa's float32 fallback would materialise a 131,072-token score matrix).
    # Writes: hf-fidelity-1_2b.json, hf-fidelity-10b.json, report.json,
    #   logs-hf-fidelity.tar.gz.
    export CUDA_VISIBLE_DEVICES=0
    build_models genos_1_2b,genos_10b uniform,genome,long
    bench hf1 hf-fidelity-1_2b 200 --timeout 190 --models genos_1_2b \
      --workloads uniform,genome,long --contenders hf_today,hf_tuned,hf_fp32 --no-warm-caches
    bench hf10 hf-fidelity-10b 330 --timeout 200 --models genos_10b \
      --workloads uniform,genome,long --contenders engine,hf_today,hf_tuned,hf_fp32
    report
    summary "$OUT"/hf-fidelity-*.log "$OUT/report.log"
    pack_logs hf-fidelity
    ;;
  moe-kernel)
    # Figures: "MoE tuning", the kernel alone (vLLM's fused_experts, 22 tiles at engine-step
    #   sizes) for the 10B shape, and the 1.2B sentence under it.
    # Machine: nvidia-h200 (tiles are per GPU kind; for another, ship its file too). About
    #   3 min; no model needed.
    # Writes: moe_tune_10b.json, moe_tune_1_2b.json (every timing), the 10B tile file vLLM reads
    #   (E=8,N=8192,device_name=NVIDIA_H200.json: compare it with pipeline/embed/moe_configs/),
    #   logs-moe-kernel.tar.gz.
    export CUDA_VISIBLE_DEVICES=0
    rm -rf "$W/moe" "$W/moe12" && mkdir -p "$W/moe" "$W/moe12"
    timeout 300 python3 -m $Q.moe_tune --shape genos_10b --out-dir "$W/moe" \
      --json "$OUT/moe_tune_10b.json" > "$OUT/moe_tune_10b.log" 2>&1
    timeout 120 python3 -m $Q.moe_tune --shape genos_1_2b --out-dir "$W/moe12" \
      --json "$OUT/moe_tune_1_2b.json" > "$OUT/moe_tune_1_2b.log" 2>&1
    cp "$W"/moe/*.json "$OUT/" 2>/dev/null
    grep -E '^(genos|vLLM|M=|wrote)|Error|Traceback' "$OUT"/moe_tune_*.log
    pack_logs moe-kernel
    ;;
  moe-tiles)
    # Figures: "MoE tuning", 10B end to end and as shipped (engine:stock is the engine with
    #   vLLM's own tiles; engine and dnaembed run with the tiles shipped in
    #   pipeline/embed/moe_configs, as users get them), the tuned rows of its MFU table; the
    #   10B rows of "Engine vs pipeline". hf_today and fidelity: hf-fidelity.
    # Machine: nvidia-h200. About 9 min: caches warmed for both tile sets first.
    # Writes: moe-tiles.json, report.json, logs-moe-tiles.tar.gz.
    export CUDA_VISIBLE_DEVICES=0
    build_models genos_10b uniform,genome,long
    V='{"engine:stock": {"contender": "engine", "env": '$STOCK'}}'
    bench moe moe-tiles 580 --timeout 250 --models genos_10b --workloads uniform,genome,long \
      --variants "$V" --warm-envs "[{}, $STOCK]" --contenders engine:stock,engine,dnaembed,hf_tuned
    report
    summary "$OUT/moe-tiles.log" "$OUT/report.log"
    pack_logs moe-tiles
    ;;
  mfu-knobs)
    # Figures: "MoE tuning", its MFU table (10B, uniform 8192-token windows, the engine
    #   alone): vLLM's defaults, max_num_batched_tokens=262144, enforce_eager, with vLLM's own
    #   MoE tiles (the tuned tiles' rows are moe-tiles').
    # Machine: nvidia-h200. About 5 min.
    # Writes: mfu-knobs.json, report.json, logs-mfu-knobs.tar.gz.
    export CUDA_VISIBLE_DEVICES=0
    build_models genos_10b uniform
    V='{"engine:stock": {"contender": "engine", "env": '$STOCK'},
        "engine:mnbt262k": {"contender": "engine", "env": '$STOCK',
         "spec": {"engine_kwargs": {"max_num_batched_tokens": 262144}}},
        "engine:eager": {"contender": "engine", "env": '$STOCK',
         "spec": {"engine_kwargs": {"enforce_eager": true}}}}'
    bench mfu mfu-knobs 400 --timeout 150 --models genos_10b --workloads uniform \
      --variants "$V" --warm-envs "[$STOCK]" --contenders engine:stock,engine:mnbt262k,engine:eager
    report
    summary "$OUT/mfu-knobs.log" "$OUT/report.log"
    pack_logs mfu-knobs
    ;;
  ray-jobs)
    # Figures: "Scale", Ray jobs on two GPUs (tp1_x2: 2 engines x 1 GPU; tp2_x1: 1 engine x
    #   2 GPUs). A Ray head on loopback over both GPUs, the pipeline submitted through
    #   `python -m pipeline.jobs submit --wait`, 10B shape, 1,048,576 tokens in 4 packs. Eager
    #   engines: the same steady speed for this shape (mfu-knobs) without minutes of cold
    #   compilation, which once left TP=2 unfinished in its lane; TP=2 runs with NCCL's
    #   all-reduce (benchmarks/questions/ray_jobs.py: vLLM's custom one crashed with NVLink
    #   multicast off, as it is here).
    # Machine: nvidia-h200-x2, with .whl/ carried (Ray's dashboard extras). About 7 min.
    # Writes: jobs.json (each layout: tok/s, per-pack times, job wall), logs-ray-jobs.tar.gz
    #   (jobs.log and each job's log).
    python3 -c "import ray.dashboard.optional_deps, opentelemetry.metrics; print('dashboard deps ok')" \
      || exit 1
    build_models genos_10b ""
    CUDA_VISIBLE_DEVICES=0,1 timeout 420 python3 -m $Q.ray_jobs --work "$W" \
      --layouts tp1_x2,tp2_x1 --extra +embed.engine_kwargs.enforce_eager=true \
      --job-timeout 180 --out "$OUT" > "$OUT/jobs.log" 2>&1
    grep -vE '^\s*$' "$OUT/jobs.log" | grep -E '^(\{|layout|tp[12]_|.*FAILED)|Error' | tail -30
    mkdir -p "$W/jobs" && cp "$OUT"/tp*.log "$W/jobs/" 2>/dev/null
    rm -f "$OUT"/tp*.log
    pack_logs ray-jobs
    ;;
  scaling)
    # Figures: "Scale", 1 vs 4 engines, Genos-1.2B shape, 4 x H200: dnaembed with 1 engine,
    #   then 4 (one per GPU), on 8,388,608 tokens (1,024 windows of 8192).
    # Machine: nvidia-h200-x4. About 6 min.
    # Writes: scaling.json, report.json, logs-scaling.tar.gz.
    build_models genos_1_2b ""
    bench sc scaling 420 --timeout 200 --models genos_1_2b --workloads "" --scale 4 \
      --scale-tokens 8388608
    report
    summary "$OUT/scaling.log" "$OUT/report.log"
    pack_logs scaling
    ;;
  layers-1_2b|layers-10b)
    # Figures: "Layers and poolings": engine throughput of layers and poolings against the
    #   default, bf16 fidelity of every layer x pooling against HF, TP=2 against TP=1 (10B),
    #   and the user's command end to end (1.2B). Each engine in a subprocess of its own.
    # Machine: nvidia-h200-x2. About 9 min (1.2B) and 8 min (10B); the 1.2B mode's last part
    #   (pipeline) may need a call of its own (--parts pipeline) on a cold machine.
    # Writes: layers-<shape>.json, logs-<mode>.tar.gz (each engine's log).
    export LAYERS_WORK=$W/layers
    if [ "$MODE" = layers-1_2b ]; then
      timeout 560 python3 -m $Q.layers --shape genos_1_2b \
        --parts engine,fidelity,pipeline --mbp 2 --out "$OUT/layers-1_2b.json" > "$OUT/layers.log" 2>&1
    else
      VLLM_ALLREDUCE_USE_SYMM_MEM=0 timeout 560 python3 -m $Q.layers --shape genos_10b \
        --parts engine,tp2,fidelity --configs default,l6,l3x2 --windows 32 --reps 2 \
        --timeout 240 --out "$OUT/layers-10b.json" > "$OUT/layers.log" 2>&1
    fi
    grep -E '^(model|genos|layer|[0-9]+ \||tp2|pipeline)' "$OUT/layers.log"
    (cd "$LAYERS_WORK" && tar czf "$OUT/logs-$MODE.tar.gz" log-*.txt)
    ;;
  loci-1_2b|loci-10b)
    # Figures: "Regions and variants": the user's command against the bare engine on the same
    #   windows (benchmarks/questions/loci.py). Needs pyfaidx and cyvcf2 (cp312) in .whl/,
    #   installed into /tmp/extras above.
    # Machine: nvidia-h200. About 5 min (1.2B) and 7 min (10B, its model built first).
    # Writes: loci-<shape>.json, logs-<mode>.tar.gz (each run's and the bare engine's log).
    export LOCI_WORK=$W/loci
    if [ "$MODE" = loci-1_2b ]; then
      timeout 560 python3 -m $Q.loci --shape genos_1_2b --regions 4000 --variants 600 \
        --timeout 240 --out "$OUT/loci-1_2b.json" > "$OUT/loci.log" 2>&1
    else
      timeout 570 python3 -m $Q.loci --shape genos_10b --regions 800 --variants 120 \
        --timeout 200 --out "$OUT/loci-10b.json" > "$OUT/loci.log" 2>&1
    fi
    cat "$OUT/loci.log" | grep -vE '^\s*$' | tail -20
    (cd "$LOCI_WORK" && tar czf "$OUT/logs-$MODE.tar.gz" log-*.txt)
    ;;
  scores)
    # Figures: zero-shot variant scores (LLR): variants per hour of the user's command
    #   (`'scores=[llr]' 'embed.layers=[]'`) at 255- and 8,192-base windows, centred and end
    #   layouts, against vLLM's own prompt_logprobs path (`LLM.generate`, runner generate) on
    #   the same variants, and the tokens computed per variant (benchmarks/questions/scores.py).
    #   SCORES_PARTS=beside (a call of its own, ~4 min): scores beside the default embeddings
    #   against embeddings alone, 8,192-base centred windows. SCORES_SHAPE=genos_10b: the 10B
    #   shape at smaller sizes, one window a call (255 unless SCORES_WINDOWS=8192). Extra
    #   options in SCORES_ARGS (e.g. --peer-caching on,off).
    # Machine: nvidia-h200, after prep (the 1.2B model). About 8 min: four runs of ~75 s
    #   start-up and exit and 20-30 s of engine each, then the peer (engine start, ~30 s of
    #   generate).
    # Writes: scores-<shape>.json (scores-<shape>[-<parts>][-<windows>].json where SCORES_PARTS
    #   or SCORES_WINDOWS differ from the defaults), logs-scores.tar.gz (this mode's output,
    #   each run's and the peer's log).
    export SCORES_WORK=$W/scores CUDA_VISIBLE_DEVICES=0
    SHAPE=${SCORES_SHAPE:-genos_1_2b} PARTS=${SCORES_PARTS:-layouts,peer}
    if [ "$SHAPE" = genos_10b ]; then
      WINDOWS=${SCORES_WINDOWS:-255} ALL=255
      SIZES="--variants 255:6000,8192:150 --peer-variants 255:1000,8192:32 --beside-variants 120"
    else
      WINDOWS=${SCORES_WINDOWS:-255,8192} ALL=255,8192
      SIZES="--variants 255:30000,8192:1000 --peer-variants 255:4000,8192:120"
      SIZES="$SIZES --beside-variants 600"
    fi
    NAME=scores-$SHAPE
    [ "$PARTS" = layouts,peer ] || NAME=$NAME-${PARTS//,/-}
    [ "$WINDOWS" = "$ALL" ] || NAME=$NAME-${WINDOWS//,/-}
    timeout 570 python3 -m $Q.scores --shapes "$SHAPE" --parts "$PARTS" --windows "$WINDOWS" \
      $SIZES --timeout 240 ${SCORES_ARGS:-} --out "$OUT/$NAME.json" > "$SCORES_WORK.log" 2>&1
    grep -vE '^\s*$' "$SCORES_WORK.log" | tail -20
    cp "$SCORES_WORK.log" "$SCORES_WORK/log-scores.txt"
    (cd "$SCORES_WORK" && tar czf "$OUT/logs-scores.tar.gz" log-*.txt)
    ;;
  tracks)
    # Figures: "Tracks" (benchmarks/questions/tracks.py): the user's command
    #   (`input.tracks=chr1.fa.gz tracks.strands=both window.size=8192 tracks.context=1024`)
    #   on a plain gzip FASTA of GRCh38 chr1's size (248,956,422 bases, random), scoring
    #   TRACKS_MBP Mbp of it (tracks.regions; the read task still streams the whole file), every
    #   process's memory sampled; then the engine core alone on the same windows. Projected to
    #   GRCh38 on 1 and 8 H200.
    # Machine: nvidia-h200. About 8 min (file and model ~1 min, start-up ~1 min, 40 Mbp x 2
    #   strands at ~430k tok/s ~3.5 min, bigWigs, the core alone ~1 min).
    # Writes: tracks.json, logs-tracks.tar.gz.
    export TRACKS_WORK=$W/tracks CUDA_VISIBLE_DEVICES=0
    timeout "${TRACKS_LIMIT:-560}" python3 -m $Q.tracks --device cuda --model genos_1_2b --parts run,core \
      --scored-mbp "${TRACKS_MBP:-40}" --timeout 420 ${TRACKS_ARGS:-} --out "$OUT" \
      > "$W/tracks.log" 2>&1
    grep -vE '^\s*$' "$W/tracks.log" | tail -30
    cp "$W/tracks.log" "$TRACKS_WORK/log-tracks.txt"
    (cd "$TRACKS_WORK" && tar czf "$OUT/logs-tracks.tar.gz" log-tracks.txt cli.log)
    ;;
  scale)
    # Figures: "Scale", the user's command at scale (benchmarks/questions/scale.py):
    #   `python -m pipeline` on one plain-gzip FASTA of 320 Mbp (BASES=...; two records of
    #   40%, 1,000 contigs), 1.2B shape, 2 engines (one per GPU), against the bare engine on one
    #   pack's worth of 8192-token windows (run first: it also warms vLLM's compile cache).
    #   Start-up per engine, idle gaps between packs, GPU utilisation sampled every 0.5 s.
    # Machine: nvidia-h200-x2. About 8 min (~1 min for the model and the bare engine, half a
    #   minute of start-up, ~6 min of 320 M tokens at 2 x ~450k tok/s).
    # Writes: scale.json, scale.png (without matplotlib on the machine: redraw it elsewhere,
    #   python -m benchmarks.questions.scale --plot scale.json), logs-scale.tar.gz (this mode's
    #   output, the CLI's, its dnaembed.log and the bare engine's log). The model is shared
    #   with prep.
    timeout 585 python3 -m $Q.scale --device cuda --model genos_1_2b --bases ${BASES:-320000000} \
      --engines 2 --timeout 500 --work "$W" --out "$OUT" > "$OUT/scale.log" 2>&1
    grep -vE '^\s*$' "$OUT/scale.log" | tail -40
    tar -czf "$OUT/logs-scale.tar.gz" --ignore-failed-read "$OUT"/scale*.log \
      "$W"/cli-hydra/*.log "$W"/cli-bare/*.log 2>/dev/null
    rm -f "$OUT"/*.log
    ;;
  startup-1_2b)
    # Figures: "Start-up": launch to the first pack's embeddings, 1.2B shape, one engine,
    #   4 Mbp gzip FASTA: the first run on a fresh machine (nothing cached but the model just
    #   built), a second run, and the earlier defaults (compiled engine, engine core in a
    #   process of its own) twice (cold then warm compile cache); the bare engine last.
    # Machine: nvidia-h200, run first after the kit is staged. About 6 min.
    # Writes: startup-{cold,warm,old-cold,old-warm}.json and .png, logs-startup-1_2b.tar.gz.
    export CUDA_VISIBLE_DEVICES=0
    S="python3 -m $Q.startup --device cuda --model genos_1_2b --bases 4000000 --contigs 20"
    S="$S --engines 1 --timeout 200 --work $W"
    OLD="--set +embed.engine_kwargs.enforce_eager=false"
    OLD="$OLD --set +embed.env_vars.VLLM_ENABLE_V1_MULTIPROCESSING=1"
    for run in cold warm old-cold old-warm; do
      case $run in
        cold) extra="--bare none" ;;
        warm) extra="--bare last" ;;
        old-*) extra="--bare none $OLD" ;;
      esac
      timeout 280 $S $extra --out "$W/st-$run" > "$W/startup-$run.log" 2>&1
      cp "$W/st-$run/startup.json" "$OUT/startup-$run.json" 2>/dev/null
      cp "$W/st-$run/startup.png" "$OUT/startup-$run.png" 2>/dev/null
      grep -E 'start-up|wall|steady|bare' "$W/startup-$run.log" | head -8
    done
    pack_logs startup-1_2b
    ;;
  startup-10b)
    # Figures: "Start-up" 10B row; "FP8" (engine bf16, engine fp8, compiled bf16, against HF
    #   float32 and HF bf16 on the sample windows; MFU).
    # Machine: nvidia-h200, after startup-1_2b. About 9 min (the 10B model is built first).
    # Writes: startup-10b.json/.png, fp8-10b.json, logs-startup-10b.tar.gz.
    export CUDA_VISIBLE_DEVICES=0
    build_models genos_10b uniform
    timeout 200 python3 -m $Q.startup --device cuda --model genos_10b --bases 2000000 \
      --contigs 20 --engines 1 --bare none --timeout 180 --work "$W" --out "$W/st-10b" \
      > "$W/startup-10b.log" 2>&1
    cp "$W/st-10b/startup.json" "$OUT/startup-10b.json"
    cp "$W/st-10b/startup.png" "$OUT/startup-10b.png"
    BENCH_MODULE=fp8 bench fp8 fp8-10b 380 --timeout 200
    summary "$OUT"/fp8-10b.log "$W/startup-10b.log"
    pack_logs startup-10b
    ;;
  tp2)
    # Figures: "Start-up" and "Scale" TP=2 rows: 10B shape, one engine over both GPUs
    #   (engine core in the actor's process, eager, NCCL all-reduce as these hosts need),
    #   8 Mbp gzip FASTA, against the bare engine (on one GPU: the harness gives it the run's
    #   dtype, length and engine kwargs, not its tensor-parallel size).
    # Machine: nvidia-h200-x2, after scale. About 4 min.
    # Writes: tp2.json, tp2.png, logs-tp2.tar.gz.
    VLLM_ALLREDUCE_USE_SYMM_MEM=0 timeout 560 python3 -m $Q.scale --device cuda \
      --model genos_10b --bases 8000000 --contigs 20 --engines 1 --timeout 260 --work "$W" \
      --set embed.tensor_parallel_size=2 --set +embed.engine_kwargs.disable_custom_all_reduce=true \
      --set +embed.env_vars.VLLM_ALLREDUCE_USE_SYMM_MEM=0 --out "$W/tp2" > "$W/tp2.log" 2>&1
    cp "$W/tp2/scale.json" "$OUT/tp2.json"; cp "$W/tp2/scale.png" "$OUT/tp2.png"
    grep -vE '^\s*$' "$W/tp2.log" | tail -30
    pack_logs tp2
    ;;
  serve)
    # Figures: "Serving": dnaembed-serve against vllm serve on the same random-weight 1.2B
    #   model, one GPU, each started by its own CLI and queried over HTTP
    #   (benchmarks/questions/serving.py): start-up, one 8 kb sequence's latency, 1/8/32/128
    #   clients, 64 sequences per request; then the bare engine. Ray Serve's own dependencies
    #   that the image lacks are installed first from .whl/serve
    #   (benchmarks/harness/serve_deps.py).
    # Machine: nvidia-h200 (or nvidia-h100-x1). About 7 min.
    # Writes: serve.json, logs-serve.tar.gz (this mode's output and each server's log).
    python3 benchmarks/harness/serve_deps.py --wheels .whl/serve --target /tmp/serve-extras
    export PYTHONPATH=$PYTHONPATH:/tmp/serve-extras
    timeout 570 python3 -m $Q.serving --device cuda --model genos_1_2b --work "$W" \
      --out "$OUT" ${SERVE_ARGS:-} > "$OUT/serve.log" 2>&1
    grep -vE '^\s*$' "$OUT/serve.log" | grep -vE '^\(|INFO|WARNING' | tail -30
    tar -czf "$OUT/logs-serve.tar.gz" --ignore-failed-read "$OUT"/serve.log "$W"/serve-*.log \
      "$W"/outputs/serve/*/*/dnaembed-serve.log 2>/dev/null
    rm -f "$OUT"/*.log
    ;;
  genome)
    # Figures: "Whole genome and host side" on the kinds lent: human chromosomes (GRCh38
    #   names and sizes, random bases, N runs at the ends; CHROMS, default chr21,chr22) in one
    #   gzip FASTA through the user's command (benchmarks/questions/whole_genome.py), one
    #   engine per GPU, against the bare engine; start-up, steady rate, GPU utilisation, and
    #   the whole genome (3.09 Gbp) projected on 8 engines from them.
    # Machine: nvidia-h200-x2 (nvidia-h200-x8 when lent: ENGINES=8 CHROMS=all is the run).
    #   About 6 min for the 1.2B shape on two GPUs.
    # Writes: genome.json, genome.png, logs-genome.tar.gz.
    timeout 560 python3 -m $Q.whole_genome --device cuda --model "${GENOME_MODEL:-genos_1_2b}" \
      --chromosomes "${CHROMS:-chr21,chr22}" --engines "${ENGINES:-2}" --project-engines 8 \
      --timeout 480 --work "$W" --out "$OUT" ${GENOME_ARGS:-} > "$OUT/genome.log" 2>&1
    grep -vE '^\s*$' "$OUT/genome.log" | grep -vE '^\(|INFO|WARNING' | tail -45
    tar -czf "$OUT/logs-genome.tar.gz" --ignore-failed-read "$OUT"/genome*.log \
      "$W"/cli-hydra/*.log "$W"/cli-bare/*.log 2>/dev/null
    rm -f "$OUT"/*.log
    ;;
  *)
    echo "usage: bash benchmarks/gpu_session.sh MODE, one of: prep engine-vs-pipeline" \
      "raydata-llm hf-fidelity moe-kernel moe-tiles mfu-knobs ray-jobs scaling" \
      "layers-1_2b layers-10b loci-1_2b loci-10b scores scale startup-1_2b startup-10b tp2" \
      "serve genome tracks" >&2
    exit 2
    ;;
esac
