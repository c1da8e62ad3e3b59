"""The five-baseline comparison on omniglot-stream, timed, and the least CPU time its i.i.d.
oracle's recipe allows.

    python benchmarks/time_compare.py [--seeds 0-2] [--threads 1] [--steps 300]

1. Runs `harness compare --scenario omniglot-stream --learners finetune,replay,ncm,slda,
   iid-offline --seeds 0-2` as a user does (a fresh process, an empty checkpoint cache and
   output folder in a temporary directory) and measures its wall and CPU time (user + system
   of the child). From the run files it reads each cell's `wall_s` and final accuracy, and
   compares every metric of each cell (timings and peak memory left out) with the committed
   row of the same run id in `published/omniglot-stream`, where one exists.
2. Measures, in this process and as CPU time, one optimizer step of a minimal hand-written
   version of iid-offline's fit: the same network (two 3x3 convolutions of 64 channels with
   ReLU and 2x2 max-pooling, 4x4 average pooling, a linear head over 1024 features), a
   minibatch of 16 28x28 images, cross-entropy, gradient-norm clipping, Adam; the faster of
   two bit-identical max-pools (`nn.MaxPool2d`, the harness's `baselines.networks.pool`),
   timed in alternating blocks. It multiplies
   that by the number of such steps the recipe cannot do without: at each evaluation point of
   the scored stream, `epochs` epochs over every sample stored so far (the head-only probe,
   the fit checks and the evaluations are left out), and for the learning-rate search one fit
   per grid rate on the whole validation stream (the intermediate fits and the fallbacks it
   also does are left out). The product is a lower bound on iid-offline's CPU time with its
   accuracies unchanged.

Run it on idle cores: the figures are absolute, not ratios. Results go to
benchmarks/results/time_compare.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from record import Printer, write
from torch import nn

from baselines.iid_offline import IIDOfflineConfig
from baselines.networks.pool import MaxPool2d
from harness.run_config import LR_GRID
from scenarios.omniglot import OmniglotStreamConfig

LEARNERS = ("finetune", "replay", "ncm", "slda", "iid-offline")
TARGET_CPU_MIN = 6.0
PUBLISHED = Path(__file__).resolve().parent.parent / "published" / "omniglot-stream"
NOT_COMPARED = {"wall_s", "samples_per_s", "meta_train_s", "peak_rss_mb"}
"""Metrics that measure the machine, not the learner: left out of the identity check."""


def cells(folder: Path) -> list[dict[str, Any]]:
    """Every run file of `folder`: run id, learner, seed, its metrics, git sha."""
    out = []
    for path in sorted(folder.glob("*.csv")):
        if not path.with_suffix(".json").exists():
            continue  # the leaderboard, not a run file
        rows = list(csv.DictReader(path.open()))
        out.append({"run_id": rows[0]["run_id"], "learner": rows[0]["learner"],
                    "seed": int(rows[0]["seed"]), "git_sha": rows[0]["git_sha"],
                    "metrics": {r["metric"]: r["value"] for r in rows}})
    return out


def same_as_published(cell: dict[str, Any]) -> bool | None:
    """Whether every metric but the machine's equals the committed row's (None: no such row)."""
    path = PUBLISHED / f"{cell['run_id']}.csv"
    if not path.exists():
        return None
    ref = {r["metric"]: r["value"] for r in csv.DictReader(path.open())}
    mine = {k: v for k, v in cell["metrics"].items() if k not in NOT_COMPARED}
    return mine == {k: v for k, v in ref.items() if k not in NOT_COMPARED}


def oracle_fit_steps() -> tuple[int, int]:
    """(steps per seed of the scored stream's fits, least steps per seed of the lr search) of
    iid-offline's default recipe on the default omniglot-stream (module docstring)."""
    s, c = OmniglotStreamConfig(), IIDOfflineConfig()

    def fit(n: int) -> int:
        return c.epochs * math.ceil(n / c.batch_size)

    points = range(s.classes_per_exp, s.n_classes + s.classes_per_exp, s.classes_per_exp)
    scored = sum(fit(min(k, s.n_classes) * s.train_per_class) for k in points)
    search = len(LR_GRID) * fit(s.n_val_classes * s.train_per_class)
    return scored, search


def minimal_step_cpu_s(steps: int, n_classes: int, batch: int, pool: type[nn.Module]) -> float:
    """CPU seconds of one step of the minimal fit loop (module docstring) with max-pool
    `pool`, after 20 warm-up steps."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), pool(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), pool(2),
        nn.AdaptiveAvgPool2d((4, 4)), nn.Flatten(), nn.Linear(1024, n_classes))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(steps + 20, batch, 1, 28, 28)
    y = torch.randint(n_classes, (steps + 20, batch))
    params = list(net.parameters())
    t0 = 0.0
    for i in range(steps + 20):
        if i == 20:
            t0 = time.process_time()
        loss = nn.functional.cross_entropy(net(x[i]), y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return (time.process_time() - t0) / steps


def fastest_step_cpu_s(steps: int, n_classes: int, batch: int) -> dict[str, float]:
    """Per max-pool, the least step time over 3 alternating blocks of `steps` steps."""
    pools: dict[str, type[nn.Module]] = {"nn.MaxPool2d": nn.MaxPool2d,
                                         "baselines.networks.pool": MaxPool2d}
    times: dict[str, list[float]] = {k: [] for k in pools}
    for _ in range(3):
        for k, pool in pools.items():
            times[k].append(minimal_step_cpu_s(steps, n_classes, batch, pool))
    return {k: min(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-2", help="seeds of the comparison")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of both parts")
    ap.add_argument("--steps", type=int, default=300, help="timed steps of the minimal loop")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    say = Printer()
    command = ["compare", "--scenario", "omniglot-stream", "--learners", ",".join(LEARNERS),
               "--seeds", args.seeds]
    with tempfile.TemporaryDirectory() as tmp:
        out, cache = Path(tmp) / "results", Path(tmp) / "cache"
        cmd = [sys.executable, "-m", "harness", "--quiet", "--threads", str(args.threads),
               *command, "--out", str(out), "--cache-dir", str(cache)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            sys.exit(f"the comparison failed ({proc.returncode}): {proc.stderr[-2000:]}")
        runs = cells(out / "omniglot-stream")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    say(f"harness {' '.join(command)} (empty cache, {args.threads} thread(s)): "
        f"{wall:.0f} s wall, {cpu:.0f} s CPU = {cpu / 60:.1f} CPU-min "
        f"(target < {TARGET_CPU_MIN:g})")
    per_learner: dict[str, Any] = {}
    for name in LEARNERS:
        mine = [c for c in runs if c["learner"] == name]
        same = [same_as_published(c) for c in mine]
        per_learner[name] = {
            "wall_s": [float(c["metrics"]["wall_s"]) for c in mine],
            "meta_train_s": [float(c["metrics"].get("meta_train_s", 0)) for c in mine],
            "acc_final_macro": [float(c["metrics"]["acc_final_macro"]) for c in mine],
            "same_as_published": same}
        v = per_learner[name]
        say(f"  {name:12s} wall_s {sum(v['wall_s']):7.1f} over {len(mine)} seeds "
            f"(pre-training in it {sum(v['meta_train_s']):5.1f})  acc "
            + " ".join(f"{a:.3f}" for a in v["acc_final_macro"])
            + f"  identical to the published rows: {same}")
    scored, search = oracle_fit_steps()
    steps = fastest_step_cpu_s(args.steps, OmniglotStreamConfig().n_classes,
                               IIDOfflineConfig().batch_size)
    step = min(steps.values())
    n_seeds = len(per_learner["iid-offline"]["wall_s"])
    floor = (scored + search) * step * n_seeds
    say(f"iid-offline's recipe: {scored} full-network steps per seed on the scored stream, at "
        f"least {search} in the lr search ({len(LR_GRID)} rates)")
    say(f"minimal fit step (batch {IIDOfflineConfig().batch_size}), ms CPU: "
        + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in steps.items()))
    others = sum(sum(per_learner[k]["wall_s"]) for k in LEARNERS if k != "iid-offline")
    say(f"least CPU time of iid-offline's fits over {n_seeds} seeds: {floor:.0f} s = "
        f"{floor / 60:.1f} CPU-min; the harness's iid-offline took "
        f"{sum(per_learner['iid-offline']['wall_s']):.0f} s, the four other learners "
        f"{others:.0f} s (wall_s at {args.threads} thread(s), pre-training included)")
    write("time_compare", ap, args,
          {"wall_s": wall, "cpu_s": cpu, "learners": per_learner, "command": command,
           "oracle_steps_scored_per_seed": scored, "oracle_steps_search_per_seed": search,
           "minimal_step_cpu_s": steps, "oracle_floor_cpu_s": floor,
           "other_learners_s": others},
          say.lines, ("five-baseline comparison, CPU minutes", cpu / 60,
                      f"< {TARGET_CPU_MIN:g} CPU-min with identical accuracies"))


if __name__ == "__main__":
    main()
