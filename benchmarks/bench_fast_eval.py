"""Fast head-only meta-test vs the plain per-sample loop (docs/design.md D8; target >= 10x at 600
classes, identical accuracies).

    python benchmarks/bench_fast_eval.py [--classes 600] [--reference-lrs 1] [--threads 1]

Both sides run the `omniglot-stream` meta-test of an ANML network (quick size, 32/64 channels;
the weights do not change the timing) through the same learning-rate sweep (the harness's
11-point grid, 1e-6..1e-1):
  - reference: for each lr, `harness.runner.run_stream` on a learner whose frozen features are
    recomputed at every call (predict and observe of every image, every test set at every
    experience end), as a plain implementation does. Only `--reference-lrs` of the rates are
    run (each costs the same); the sweep's time is their mean times the grid size.
  - fast: `head_sgd_sweep` on the learner's `sweep_features()`: features computed once per
    image, the head-only trajectory for all 11 rates at once with torch.func.vmap
    (`harness.fast_eval.head_sgd_sweep`).
The accuracies (R, R_train, prequential hits) of every reference rate are compared with the fast
ones; the ratio, measured in this one run, is printed and written to
benchmarks/results/bench_fast_eval.{json,md}.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from record import Printer, write

from baselines.anml import ANMLConfig
from harness.config import BuildContext
from harness.experiment import LR_GRID, build_scenario
from harness.fast_eval import FEATURES, head_sgd_sweep
from harness.runner import run_stream


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=600)
    ap.add_argument("--reference-lrs", type=int, default=1,
                    help="how many grid rates the slow reference runs (spread over the grid)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    scenario = build_scenario("omniglot-stream", 0, None, {"n_classes": str(args.classes)})
    exps, spec = scenario.experiences, scenario.spec
    base = dict(nm_channels=32, pred_channels=64, init="random")

    def make(lr: float):
        return ANMLConfig(**base, lr=lr).build(BuildContext(spec=spec))

    grid = list(LR_GRID)
    FEATURES.clear()
    t0 = time.perf_counter()
    fast = head_sgd_sweep(make(grid[0]).sweep_features(), exps, spec, grid)
    t_fast = time.perf_counter() - t0

    say = Printer()
    per_rate = []
    picks = np.linspace(0, len(grid) - 1, args.reference_lrs + 2)[1:-1].round().astype(int)
    ref_times, identical = [], True
    for k in picks:
        learner = make(grid[k])
        learner.cache_features = False
        t0 = time.perf_counter()
        ref = run_stream(learner, exps, spec)
        ref_times.append(time.perf_counter() - t0)
        same = (np.array_equal(ref.R, fast[k].R) and np.array_equal(ref.R_train, fast[k].R_train)
                and np.array_equal(ref.prequential, fast[k].prequential))
        identical &= same
        acc_ref = float(np.average(ref.R[-1], weights=ref.test_sizes))
        acc_fast = float(np.average(fast[k].R[-1], weights=fast[k].test_sizes))
        per_rate.append({"lr": grid[k], "seconds": ref_times[-1], "acc_reference": acc_ref,
                         "acc_fast": acc_fast, "identical": same})
        say(f"lr={grid[k]:g}: meta_test_test_acc reference {acc_ref:.4f}, fast {acc_fast:.4f}, "
            f"identical R/R_train/prequential: {same}")
    t_ref = float(np.mean(ref_times)) * len(grid)
    n_samples = sum(e.n_train for e in exps)
    say(f"omniglot-stream, {args.classes} classes ({n_samples} stream images), "
          f"{len(grid)}-rate sweep, torch threads {torch.get_num_threads()}")
    say(f"reference per-sample loop: {np.mean(ref_times):.1f} s per rate -> {t_ref:.1f} s for "
          f"the sweep")
    say(f"fast (cached features + vmap over rates): {t_fast:.1f} s for the sweep")
    say(f"speed-up: {t_ref / t_fast:.1f}x  (identical accuracies: {identical})")
    write("bench_fast_eval", ap, args,
          {"classes": args.classes, "stream_images": n_samples, "grid_size": len(grid),
           "reference_s_per_rate": float(np.mean(ref_times)), "reference_sweep_s": t_ref,
           "fast_sweep_s": t_fast, "speedup": t_ref / t_fast, "identical": bool(identical),
           "reference_rates": per_rate},
          say.lines, ("speed-up of the fast sweep over the per-sample loop", t_ref / t_fast,
                      ">= 10x at 600 classes, identical accuracies"))


if __name__ == "__main__":
    main()
