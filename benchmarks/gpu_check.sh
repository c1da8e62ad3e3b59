#!/usr/bin/env bash
# The GPU checks of the MAML family in one short run, on a machine with a CUDA GPU, from the
# repository root, with that machine's python3 and torch. Results go to $OUT (default
# /tmp/gpu-check); the benchmarks also write their output files to benchmarks/results/
# (`*-cuda.json` / `.md`), which are copied to $OUT. Sections (all but resume by default, or
# name them):
#   tests   the GPU test tier (learners on CUDA give the CPU's outputs; CUDA-graph meta-training
#           gives the eager weights, also after a resume);
#   vmap    bench_maml_vmap.py on CUDA: per-task loop vs vmap, peak memory vs inner steps (fp32,
#           then the timing again with TF32 convolutions);
#   graph   bench_maml_cuda_graph.py: eager vs CUDA-graph meta-steps/s on the paper recipe;
#   paper   the `paper` presets of MAML and MAML++ on Omniglot 20-way 1-shot, each cut by a
#           meta-training time limit (partial rows with meta_steps_done), to measure the step rate;
#   resume  continue the full `paper` Omniglot 20-way 1-shot run of PAPER_LEARNER (default
#           maml; maml++ is the other) for PAPER_SECONDS (default 240) with CUDA graphs (eager
#           if the graph benchmark failed in this run), from the checkpoint cache GPU_CACHE
#           (default .gpu-cache/, which git ignores): keep that folder between runs, the run
#           leaves a partial checkpoint there and the next one resumes it. A tar of the cache is
#           written to $OUT/gpu-cache.tar, the rows to $OUT/res.
#   e.g.  bash benchmarks/gpu_check.sh tests graph resume
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HARNESS_CACHE_DIR=/tmp/harness-cache
OUT=${OUT:-/tmp/gpu-check}
GPU_CACHE=${GPU_CACHE:-.gpu-cache}
SECTIONS=${*:-tests vmap graph paper}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
HARNESS=(python3 -c "from harness.cli import app; app()")
GRAPH=true
for section in $SECTIONS; do
  echo "== $section ($(date +%T))"
  case $section in
    tests)
      timeout 180 python3 -m pytest -q -p no:cacheprovider -m gpu tests > "$OUT/gpu_tests.txt" 2>&1
      tail -15 "$OUT/gpu_tests.txt" ;;
    vmap)
      timeout 120 python3 benchmarks/bench_maml_vmap.py --device cuda --no-compile --repeats 10 \
          --memory-steps 1,5,10 2>&1 | tee "$OUT/bench_cuda.txt"
      timeout 60 python3 benchmarks/bench_maml_vmap.py --device cuda --no-compile --repeats 10 \
          --no-memory --tf32 2>&1 | tee "$OUT/bench_cuda_tf32.txt" ;;
    graph)
      timeout 150 python3 benchmarks/bench_maml_cuda_graph.py --steps 200 \
          > "$OUT/bench_cuda_graph.txt" 2>&1 || GRAPH=false  # resume then runs eagerly
      tail -12 "$OUT/bench_cuda_graph.txt" ;;
    paper)
      timeout 210 "${HARNESS[@]}" run --scenario omniglot-fewshot --learner maml --preset paper \
          --device cuda --set ways=20,shots=1,time_limit_s=120 --out "$OUT/res" --quiet
      timeout 180 "${HARNESS[@]}" run --scenario omniglot-fewshot --learner maml++ --preset paper \
          --device cuda --set ways=20,shots=1,time_limit_s=90 --out "$OUT/res" --quiet ;;
    resume)
      secs=${PAPER_SECONDS:-240}
      mkdir -p "$GPU_CACHE"
      ls -l "$GPU_CACHE/checkpoints" 2>/dev/null
      HARNESS_CACHE_DIR=$(cd "$GPU_CACHE" && pwd) timeout $((secs + 150)) "${HARNESS[@]}" run \
          --scenario omniglot-fewshot --learner "${PAPER_LEARNER:-maml}" --preset paper \
          --device cuda --set ways=20,shots=1,cuda_graph=$GRAPH,time_limit_s=$secs \
          --out "$OUT/res" --quiet
      ls -l "$GPU_CACHE/checkpoints"
      tar -C "$GPU_CACHE" -cf "$OUT/gpu-cache.tar" . ;;
    *) echo "unknown section $section (tests vmap graph paper resume)"; exit 2 ;;
  esac
done
cp benchmarks/results/*-cuda.json benchmarks/results/*-cuda.md "$OUT"/ 2>/dev/null
# The rows in one file, to copy them off the machine in one piece.
[ -d "$OUT/res" ] && tar -C "$OUT" -cf "$OUT/rows.tar" res
ls -R "$OUT" | head -40
