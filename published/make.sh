#!/usr/bin/env bash
# Rebuild every table in published/ from scratch: the commands that produced its rows, then the
# leaderboards and docs/results.md. One torch thread, so that the rows are bit-identical for a
# given torch build (see the README, "Reproducibility"). Run from the repository root:
#     bash published/make.sh
# A run whose row already exists with the same run id is simply made again and replaces it.
set -euo pipefail
cd "$(dirname "$0")/.."
H=".venv/bin/harness --threads 1"
O="--out published --quiet"

# The headline: ANML (quick) and its references, then the baselines, on 100 unseen classes.
$H compare --scenario omniglot-stream --learners anml,anml-untrained,anml-pretrain,anml-iid --seeds 0-2 $O
$H compare --scenario omniglot-stream --learners finetune,replay,ncm,slda,iid-offline --seeds 0-2 $O
# OML's incremental sine.
$H compare --scenario sine-incremental --learners oml-sine,oml-sine-pretrain,oml-sine-untrained,finetune --seeds 0-2 $O
# MAML's sinusoid regression (each seed meta-trains its own model).
$H compare --scenario sinusoid-fewshot --learners maml --seeds 0-2 $O
# Frames of the shipped videos, every ordering.
$H compare --scenario video-frames --learners finetune,replay,slda --seeds 0-2 $O
# Omniglot 5-way 1-shot episodes (Prototypical Networks; the MAML family: docs/maml.md).
$H compare --scenario omniglot-fewshot --learners protonet --seeds 0-2 $O

for d in published/*/; do $H leaderboard "$d" > /dev/null; done
$H report published --out docs/results.md --readme README.md
