#!/usr/bin/env bash
# The GPU checks of the MAML family in one short run, by the device tool with the machine's
# own python3/torch; results under $OUT. Sections (all by default, or name them):
#   tests   the GPU test tier (learners on CUDA give the CPU's outputs; CUDA-graph meta-training
#           gives the eager weights, also after a resume);
#   vmap    bench_maml_vmap.py on CUDA: per-task loop vs vmap, peak memory vs inner steps;
#   graph   bench_maml_cuda_graph.py: eager vs CUDA-graph meta-steps/s on the paper recipe;
#   paper   the `paper` presets of MAML and MAML++ on Omniglot 20-way 1-shot, each cut by a
#           meta-training time limit (rows record meta_steps_done), to measure the step rate;
#   resume  continue the full `paper` Omniglot 20-way 1-shot run of PAPER_LEARNER (default
#           maml; maml++ is the other) for PAPER_SECONDS (default 240) with CUDA graphs (eager
#           if the graph benchmark failed), from the checkpoint cache in .gpu-cache/ (carry it:
#           the run keeps a partial checkpoint there and resumes it next time); the cache comes
#           back as $OUT/gpu-cache.tar, the row under $OUT/res.
#   e.g.  bash benchmarks/gpu_check.sh tests graph resume
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HARNESS_CACHE_DIR=/tmp/harness-cache
OUT=${OUT:-/tmp/gpu-check}
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
      mkdir -p .gpu-cache
      ls -l .gpu-cache/checkpoints 2>/dev/null
      HARNESS_CACHE_DIR=$PWD/.gpu-cache timeout $((secs + 150)) "${HARNESS[@]}" run \
          --scenario omniglot-fewshot --learner "${PAPER_LEARNER:-maml}" --preset paper \
          --device cuda --set ways=20,shots=1,cuda_graph=$GRAPH,time_limit_s=$secs \
          --out "$OUT/res" --quiet
      ls -l .gpu-cache/checkpoints
      tar -C .gpu-cache -cf "$OUT/gpu-cache.tar" . ;;
    *) echo "unknown section $section (tests vmap graph paper resume)"; exit 2 ;;
  esac
done
# The device tool returns no file whose name holds a '+' (MAML++ rows): pack the rows.
[ -d "$OUT/res" ] && tar -C "$OUT" -cf "$OUT/rows.tar" res
ls -R "$OUT" | head -40
