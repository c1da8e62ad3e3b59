#!/usr/bin/env bash
# Rebuild every table in published/ from the committed grids (published/grids/*.toml): run
# what is missing, then write each scenario folder's leaderboard, docs/results.md, the
# README's headline table and the figures (docs/figures) from the rows. One torch thread per cell, so that
# the rows are bit-identical for a given torch build (see the README, "Reproducibility"). Run from the
# repository root:
#     bash published/make.sh                       # serially
#     bash published/make.sh --executor local --workers 2
# A sweep started again does only what is missing. The paper presets need a GPU:
#     .venv/bin/harness sweep published/grids/gpu.toml
set -euo pipefail
cd "$(dirname "$0")/.."
export HARNESS_THREADS=1
for grid in omniglot-stream sine-incremental sinusoid-fewshot omniglot-fewshot video-frames \
        natural-streams; do
    .venv/bin/harness sweep "published/grids/$grid.toml" --out published --quiet "$@"
done
.venv/bin/harness report published --out docs/results.md --readme README.md
# Every figure of every scenario (PNG), the two the README shows among them.
.venv/bin/harness plot published --out docs/figures --formats png
