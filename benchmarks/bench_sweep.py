"""One grid on three executors in one run: serial, the local pool with 2 workers, and a local
Ray cluster with 2 CPUs (docs/design.md D7; target: 2 local workers in <= 0.6x the serial wall
time).

    python benchmarks/bench_sweep.py [--seeds 3] [--classes 20]

The grid is `synthetic-stream` x {finetune, replay, ncm, slda} x seeds (12 cells by default),
each cell with one torch thread. Every executor starts from an empty results folder and an
empty checkpoint cache (ncm and slda share one pre-trained backbone, trained once per run), so
all three do the same work. Per-cell overhead = (wall time x workers - sum of the cells' own
run times) / cells: what an executor adds to each cell (process start, imports, scheduling,
transfers). Figures go to benchmarks/results/bench_sweep.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from record import Printer, write

from harness.experiment import RunConfig
from harness.sweep import Cell, LocalPool, Ray, Serial, plan_cells, run_sweep

LEARNERS = ("finetune", "replay", "ncm", "slda")


def cells(seeds: int, classes: int) -> list[Cell]:
    sets = (("n_classes", str(classes)), ("test_per_class", "5"), ("train_per_class", "20"))
    return [Cell(scenario="synthetic-stream", learner=name, seed=s, overrides=sets)
            for name in LEARNERS for s in range(seeds)]


def timed(executor: object, grid: list[Cell], root: Path, name: str) -> dict[str, float]:
    base = RunConfig(scenario="", learner="", out_dir=root / name, cache_dir=root / f"{name}-c")
    planned = plan_cells(grid, base)
    t0 = time.perf_counter()
    summary = run_sweep(planned, executor)
    wall = time.perf_counter() - t0
    assert summary.counts() == {"ok": len(grid)}, summary.outcomes
    cell_s = sum(o["wall_s"] for o in summary.outcomes.values())
    workers = getattr(executor, "workers", 1)
    return {"wall_s": wall, "cells_s": cell_s, "workers": workers,
            "overhead_per_cell_s": (wall * workers - cell_s) / len(grid)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--classes", type=int, default=20)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    grid = cells(args.seeds, args.classes)
    root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")
    try:
        serial = Serial()
        serial.workers = 1
        res = {
            "serial": timed(serial, grid, root, "serial"),
            "local-2": timed(LocalPool(workers=2, threads=1), grid, root, "local"),
            "ray-2": timed(Ray(num_cpus=1, init={"num_cpus": 2, "_temp_dir": ray_tmp,
                                                 "object_store_memory": 80 * 1024**2}),
                           grid, root, "ray"),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    say = Printer()
    say(f"grid: synthetic-stream x {len(LEARNERS)} learners x {args.seeds} seeds = "
        f"{len(grid)} cells, {args.classes} classes")
    for name, r in res.items():
        say(f"{name:9s} wall {r['wall_s']:6.1f} s  cells {r['cells_s']:6.1f} s  "
            f"workers {r['workers']}  overhead/cell {r['overhead_per_cell_s']:.2f} s  "
            f"ratio to serial {r['wall_s'] / res['serial']['wall_s']:.2f}x")
    ratio = res["local-2"]["wall_s"] / res["serial"]["wall_s"]
    write("bench_sweep", ap, args, {"cells": len(grid), "executors": res}, say.lines,
          ("local pool (2 workers) wall time / serial wall time", ratio, "<= 0.6x"),
          note="Ray's figure includes starting and stopping its local cluster.")


if __name__ == "__main__":
    main()
