"""The `avalanche:<Strategy>` adapter in the harness loop vs the same strategy run natively by
Avalanche on the same stream (docs/design.md D8 style: one ratio, measured in this one run).

    python benchmarks/bench_avalanche_adapter.py [--strategy Naive] [--classes 20] [--repeats 3]

Both sides train the same network (the baselines' convnet-small + linear head, identical
initial weights) with the same strategy on the `omniglot-stream` batches, one Avalanche
`train()` per batch of 1, and evaluate every test set at the end of every experience:
  - adapter: `harness.runner.run_stream` with the adapter (which also predicts every sample
    before learning from it, the prequential protocol, and evaluates R0 and R_train);
  - native: Avalanche on the exported benchmark (`harness.avalanche_export`): for each
    experience, `strategy.train(mini)` over `online_stream(exp, 1)`, then
    `strategy.eval(test_stream)` with `accuracy_metrics(experience=True)`, plus one eval before
    training (R0).
The accuracy matrices are compared; the printed ratio is adapter time / native time (best of
`--repeats` alternating runs). A third timing, the adapter without the prequential predict,
separates the adapter's own cost from the extra forward pass the protocol asks for. Needs the
`avalanche` extra. Writes benchmarks/results/bench_avalanche_adapter.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from typing import Any

import numpy as np
import torch
from record import Printer, write

from baselines.avalanche_adapter import AvalancheConfig, make_strategy
from harness.avalanche_export import accuracy_matrix, online_stream, to_avalanche
from harness.config import BuildContext
from harness.experiment import build_scenario
from harness.runner import evaluate, run_stream


def native_strategy(cfg: AvalancheConfig, model: torch.nn.Module, batch: int) -> Any:
    """The strategy as Avalanche runs it, recording its own accuracy per experience."""
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    with warnings.catch_warnings(record=True):
        evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    return make_strategy(cfg, model, torch.device("cpu"), evaluator=evaluator,
                         train_mb_size=batch)


def native(cfg, scenario, model) -> tuple[float, np.ndarray]:
    batch = scenario.experiences[0].batch_size
    strategy = native_strategy(cfg, model, batch)
    bm = to_avalanche(scenario)
    T = len(scenario.experiences)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True):
        strategy.eval(bm.test_stream)
        results = []
        for exp in bm.train_stream:
            for mini in online_stream(exp, batch):
                strategy.train(mini, shuffle=False)
            with torch.random.fork_rng(devices=[]):
                results.append(strategy.eval(bm.test_stream))
    return time.perf_counter() - t0, np.array(accuracy_matrix(results, T))


def adapter(learner, scenario) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    rec = run_stream(learner, scenario.experiences, scenario.spec)
    return time.perf_counter() - t0, rec.R


def adapter_observe_only(learner, scenario) -> float:
    """The adapter without the prequential predict: observe every batch, evaluate all test
    sets at each experience end (what native Avalanche does), to isolate the adapter's cost."""
    t0 = time.perf_counter()
    for e in scenario.experiences:
        for x, y in e:
            learner.observe(x, y)
        for f in scenario.experiences:
            evaluate(learner, f.x_test, f.y_test, scenario.spec, "cpu")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategy", default="Naive")
    ap.add_argument("--classes", type=int, default=20, help="omniglot-stream classes (x15)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="No loggers specified")
    scenario = build_scenario("omniglot-stream", 0, None,
                              {"n_classes": str(args.classes), "classes_per_exp": "5"})
    cfg = AvalancheConfig(strategy=args.strategy, lr=0.03, width=32)
    n = sum(e.n_train for e in scenario.experiences)
    times: dict[str, list[float]] = {"adapter": [], "native": [], "observe": []}
    same = True
    for _ in range(args.repeats):
        learner = cfg.build(BuildContext(spec=scenario.spec, seed=0))
        model = copy.deepcopy(torch.nn.Sequential(learner.features, learner.head))
        torch.manual_seed(0)
        t_a, R_a = adapter(learner, scenario)
        torch.manual_seed(0)
        t_n, R_n = native(cfg, scenario, model)
        times["adapter"].append(t_a)
        times["native"].append(t_n)
        torch.manual_seed(0)
        times["observe"].append(adapter_observe_only(
            cfg.build(BuildContext(spec=scenario.spec, seed=0)), scenario))
        same &= bool(np.allclose(R_a, R_n, atol=1e-6))
    a, b = min(times["adapter"]), min(times["native"])
    say = Printer()
    say(f"avalanche:{args.strategy} on omniglot-stream ({args.classes} classes, {n} samples, "
          f"batch 1, {len(scenario.experiences)} experiences), {args.threads} thread(s)")
    say(f"  adapter (harness loop, predict-then-observe): {a:7.2f} s  {n / a:7.1f} samples/s")
    say(f"  native Avalanche (online mini-experiences):   {b:7.2f} s  {n / b:7.1f} samples/s")
    c = min(times["observe"])
    say(f"  adapter without the prequential predict:      {c:7.2f} s  ({c / b:.2f}x native)")
    say(f"  accuracy matrices identical: {same}")
    say(f"ratio adapter/native time: {a / b:.2f}x")
    write("bench_avalanche_adapter", ap, args,
          {"samples": n, "experiences": len(scenario.experiences), "times_s": times,
           "adapter_best_s": a, "native_best_s": b, "observe_only_best_s": c,
           "identical_R": bool(same), "ratio_adapter_native": a / b},
          say.lines, ("adapter time / native Avalanche time (best of repeats)", a / b,
                      "none; the adapter also predicts every sample before learning it"))


if __name__ == "__main__":
    main()
