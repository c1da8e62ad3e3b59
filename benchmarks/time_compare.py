"""The five-baseline comparison on omniglot-stream, timed per learner, and the least CPU time
the recipes of its i.i.d. oracle and of the shared pre-training allow.

    python benchmarks/time_compare.py [--seeds 0-2] [--threads 1] [--steps 200]

1. Runs `harness compare --scenario omniglot-stream --learners L --seeds 0-2` for L = finetune,
   replay, ncm, slda, iid-offline, one fresh process each, in that order, into one output
   folder and one checkpoint cache, both empty at the start (in a temporary directory), and
   measures each process's wall and CPU time (user + system). These are the cells of
   `harness compare ... --learners finetune,replay,ncm,slda,iid-offline` (the same run ids);
   one process would save four start-ups. `ncm`, the first learner on pre-trained features,
   pre-trains the shared backbone; `slda` and `iid-offline` load it. From the run files it
   reads each cell's final accuracy and compares every metric of each cell (timings and peak
   memory left out) with the committed row of the same run id in `published/omniglot-stream`,
   where one exists.
2. Measures, in this process and as CPU time, one optimizer step of a minimal hand-written
   loop with the baselines' network (two 3x3 convolutions of 64 channels with ReLU and 2x2
   max-pooling, 4x4 average pooling, a linear head over its 1024 features), cross-entropy and
   Adam, with the faster of two bit-identical max-pools (`nn.MaxPool2d`, the harness's
   `baselines.networks.pool`), in alternating blocks; two shapes of step:
   - iid-offline's fit: a minibatch of 16, a 100-class head, gradient-norm clipping. The
     recipe cannot do without, per seed: at each evaluation point of the scored stream,
     `epochs` epochs over every sample stored so far; in the learning-rate search, one fit
     per grid rate on the whole validation stream (the head-only probes, the fit checks, the
     evaluations, the search's intermediate fits and its fallbacks are left out).
   - the shared pre-training: a minibatch of 64, a head over the 964 background classes,
     `pretrain_epochs` epochs over the background pool, once.
   Steps x step time is a lower bound on the CPU time of these two with their results
   unchanged; the comparison cannot take less than that plus what the other learners need.

Run it on idle cores: the figures are absolute, not ratios. Results go to
benchmarks/results/time_compare.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from record import Printer, write
from time_main_job import run_harness
from torch import nn

from baselines.backbone import BackboneConfig
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
    """Every run file of `folder`: run id, learner, seed, its metrics."""
    out = []
    for path in sorted(folder.glob("*.csv")):
        if not path.with_suffix(".json").exists():
            continue  # the leaderboard, not a run file
        rows = list(csv.DictReader(path.open()))
        out.append({"run_id": rows[0]["run_id"], "learner": rows[0]["learner"],
                    "seed": int(rows[0]["seed"]),
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


def pretrain_steps() -> tuple[int, int]:
    """(steps, pool classes) of the shared pre-training on omniglot-stream's background pool."""
    pool = OmniglotStreamConfig().build(0).meta_train
    assert pool is not None
    c = BackboneConfig()
    return c.pretrain_epochs * math.ceil(len(pool.y) / c.pretrain_batch), pool.n_classes


def minimal_step_cpu_s(steps: int, n_classes: int, batch: int, clip: bool,
                       pool: type[nn.Module]) -> float:
    """CPU seconds of one step of the minimal loop (module docstring) with max-pool `pool`,
    after 10 warm-up steps."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), pool(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), pool(2),
        nn.AdaptiveAvgPool2d((4, 4)), nn.Flatten(), nn.Linear(1024, n_classes))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(n_classes, (batch,))
    params = list(net.parameters())
    t0 = 0.0
    for i in range(steps + 10):
        if i == 10:
            t0 = time.process_time()
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return (time.process_time() - t0) / steps


def fastest_step_cpu_s(steps: int, n_classes: int, batch: int, clip: bool
                       ) -> dict[str, float]:
    """Per max-pool, the least step time over 3 alternating blocks of `steps` steps."""
    pools: dict[str, type[nn.Module]] = {"nn.MaxPool2d": nn.MaxPool2d,
                                         "baselines.networks.pool": MaxPool2d}
    times: dict[str, list[float]] = {k: [] for k in pools}
    for _ in range(3):
        for k, pool in pools.items():
            times[k].append(minimal_step_cpu_s(steps, n_classes, batch, clip, pool))
    return {k: min(v) for k, v in times.items()}


def run_learner(learner: str, seeds: str, threads: int, out: Path, cache: Path
                ) -> tuple[float, float]:
    """(wall s, CPU s) of `harness compare` of one learner in a fresh process."""
    wall, cpu, proc = run_harness(
        ["--quiet", "--threads", str(threads), "compare", "--scenario", "omniglot-stream",
         "--learners", learner, "--seeds", seeds, "--out", str(out), "--cache-dir", str(cache)])
    if proc.returncode != 0:
        sys.exit(f"compare of {learner} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-2", help="seeds of the comparison")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of both parts")
    ap.add_argument("--steps", type=int, default=200, help="timed steps per block of the loop")
    args = ap.parse_args()
    if args.threads < 1 or args.steps < 1:
        ap.error(f"--threads and --steps must be >= 1, got {args.threads} and {args.steps}")
    torch.set_num_threads(args.threads)
    say = Printer()
    per_learner: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out, cache = Path(tmp) / "results", Path(tmp) / "cache"
        for name in LEARNERS:
            wall, cpu = run_learner(name, args.seeds, args.threads, out, cache)
            mine = [c for c in cells(out / "omniglot-stream") if c["learner"] == name]
            per_learner[name] = {
                "wall_s": wall, "cpu_s": cpu,
                "acc_final_macro": [float(c["metrics"]["acc_final_macro"]) for c in mine],
                "same_as_published": [same_as_published(c) for c in mine]}
    cpu = sum(v["cpu_s"] for v in per_learner.values())
    wall = sum(v["wall_s"] for v in per_learner.values())
    say(f"harness compare --scenario omniglot-stream --learners {','.join(LEARNERS)} --seeds "
        f"{args.seeds}, one process per learner, empty cache, {args.threads} thread(s): "
        f"{wall:.0f} s wall, {cpu:.0f} s CPU = {cpu / 60:.1f} CPU-min (target < "
        f"{TARGET_CPU_MIN:g})")
    for name, v in per_learner.items():
        say(f"  {name:12s} CPU {v['cpu_s']:6.1f} s  wall {v['wall_s']:6.1f} s  acc "
            + " ".join(f"{a:.3f}" for a in v["acc_final_macro"])
            + f"  identical to the published rows: {v['same_as_published']}")
    n_seeds = len(per_learner["iid-offline"]["acc_final_macro"])
    scored, search = oracle_fit_steps()
    fit_step = fastest_step_cpu_s(args.steps, OmniglotStreamConfig().n_classes,
                                  IIDOfflineConfig().batch_size, clip=True)
    pre, pool_classes = pretrain_steps()
    pre_step = fastest_step_cpu_s(max(1, args.steps // 4), pool_classes,
                                  BackboneConfig().pretrain_batch, clip=False)
    oracle_floor = (scored + search) * min(fit_step.values()) * n_seeds
    pre_floor = pre * min(pre_step.values())
    say(f"iid-offline's recipe: {scored} full-network steps of 16 per seed on the scored "
        f"stream, at least {search} in the lr search ({len(LR_GRID)} rates); minimal step, ms "
        "CPU: " + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in fit_step.items()))
    say(f"shared pre-training: {pre} steps of {BackboneConfig().pretrain_batch} "
        f"({pool_classes} classes); minimal step, ms CPU: "
        + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in pre_step.items()))
    floor = oracle_floor + pre_floor
    say(f"least CPU time: iid-offline's fits over {n_seeds} seeds {oracle_floor:.0f} s, the "
        f"pre-training {pre_floor:.0f} s; together {floor:.0f} s = {floor / 60:.1f} CPU-min, "
        f"before finetune, replay, ncm and slda (measured above: "
        f"{sum(per_learner[k]['cpu_s'] for k in ('finetune', 'replay')):.0f} s for finetune "
        f"and replay)")
    write("time_compare", ap, args,
          {"wall_s": wall, "cpu_s": cpu, "learners": per_learner,
           "oracle_steps_scored_per_seed": scored, "oracle_steps_search_per_seed": search,
           "oracle_step_cpu_s": fit_step, "oracle_floor_cpu_s": oracle_floor,
           "pretrain_steps": pre, "pretrain_step_cpu_s": pre_step,
           "pretrain_floor_cpu_s": pre_floor, "floor_cpu_s": floor},
          say.lines, ("five-baseline comparison, CPU minutes", cpu / 60,
                      f"< {TARGET_CPU_MIN:g} CPU-min with identical accuracies"))


if __name__ == "__main__":
    main()
