#!/usr/bin/env bash
# The GPU checks of the MAML family in one short run (about 8 minutes on one H200; run by the
# device tool with the machine's own python3/torch; results under $OUT):
#   1. the GPU test tier (learners on CUDA give the CPU's outputs);
#   2. bench_maml_vmap.py on CUDA: per-task loop vs vmap, peak memory vs inner steps;
#   3. the `paper` presets of MAML and MAML++ on Omniglot 20-way 1-shot, each cut by a
#      meta-training time limit (the rows record meta_steps_done), to measure the step rate on
#      the GPU and extrapolate the full 60k / 75k-step runs.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HARNESS_CACHE_DIR=/tmp/harness-cache
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
HARNESS=(python3 -c "from harness.cli import app; app()")
echo "== 1. GPU tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests > "$OUT/gpu_tests.txt" 2>&1
tail -5 "$OUT/gpu_tests.txt"
echo "== 2. vmap benchmark on CUDA"
timeout 120 python3 benchmarks/bench_maml_vmap.py --device cuda --no-compile --repeats 10 \
    --memory-steps 1,5,10 2>&1 | tee "$OUT/bench_cuda.txt"
timeout 60 python3 benchmarks/bench_maml_vmap.py --device cuda --no-compile --repeats 10 \
    --no-memory --tf32 2>&1 | tee "$OUT/bench_cuda_tf32.txt"
echo "== 3. paper presets, Omniglot 20-way 1-shot, time-limited"
timeout 210 "${HARNESS[@]}" run --scenario omniglot-fewshot --learner maml --preset paper --device cuda \
    --set ways=20,shots=1,time_limit_s=120 --out "$OUT/res" --quiet
timeout 180 "${HARNESS[@]}" run --scenario omniglot-fewshot --learner maml++ --preset paper \
    --device cuda --set ways=20,shots=1,time_limit_s=90 --out "$OUT/res" --quiet
ls -R "$OUT"
