"""MAML meta-training on a GPU: eager vmap steps vs the same step captured as a CUDA graph
(`cuda_graph=true`), with the `paper` recipe of Omniglot 20-way 1-shot (conv4-stride-64,
meta-batch 16, 5 second-order inner steps, one query per class, transductive batch norm).

    python benchmarks/bench_maml_cuda_graph.py [--steps 300] [--ways 20] [--tf32]

The meta-training step is launch-bound on a large GPU: vmap over 16 tasks of a small conv net
issues thousands of small kernels per step, and the CPU cost of launching them exceeds the GPU
time. A CUDA graph replays the recorded kernels with one launch. Each mode meta-trains a fresh
learner (same seed, same tasks) for --steps steps on the real Omniglot background split; the
rate is measured between the progress reports at step 20 and the last step (capture and cuDNN
warm-up excluded, they are one-off costs, printed separately). Equality is checked apart, on
six meta-steps with deterministic cuDNN kernels in fp32, on every weight except the conv
biases that batch norm cancels: their true gradient is zero, so Adam turns rounding noise into
full-size steps, and two runs that round differently (another cuDNN algorithm under capture)
differ there without computing a different function. Prints steps/s per mode, the ratio, and
the full paper run's projected time, and writes them to
benchmarks/results/bench_maml_cuda_graph-cuda.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from record import Printer, write

from baselines.maml import MAMLConfig, bn_cancelled
from harness.config import BuildContext
from harness.protocol import Budget
from scenarios.fewshot import OmniglotFewShotConfig


def meta_train(scenario, steps: int, graphed: bool) -> tuple[float, float, dict]:
    """(steps/s after step 20, seconds to step 20, final weights) of one fresh learner."""
    cfg = MAMLConfig(recipe="paper", meta_steps=steps, cuda_graph=graphed)
    learner = cfg.build(BuildContext(spec=scenario.spec, seed=0, device="cuda"))
    marks: dict[int, float] = {}

    def progress(phase: str, done: int, total: int, info: dict) -> None:
        torch.cuda.synchronize()  # the graph replays asynchronously
        marks[done] = time.perf_counter()

    t0 = time.perf_counter()
    learner.meta_train(scenario.meta_train, Budget(), progress, None)
    weights = {k: v.detach().cpu() for k, v in learner.state_dict().items()}
    first = min((k for k in marks if k >= 20), default=steps)
    rate = (steps - first) / (marks[steps] - marks[first]) if first < steps else math.nan
    return rate, marks[first] - t0, weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--ways", type=int, default=20)
    ap.add_argument("--tf32", action="store_true", help="leave TF32 convolutions on")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_maml_cuda_graph needs a CUDA device; run it on a GPU machine")
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    scenario = OmniglotFewShotConfig(ways=args.ways, shots=1).build(seed=0)
    recipe = MAMLConfig(recipe="paper").resolved(scenario.spec)
    say = Printer()
    say(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, tf32 {args.tf32}; "
          f"Omniglot {args.ways}-way 1-shot, paper recipe: meta-batch {recipe.meta_batch}, "
          f"{recipe.inner_steps} inner steps, {recipe.meta_steps} meta-steps")
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    check = {graphed: meta_train(scenario, 6, graphed)[2] for graphed in (False, True)}
    gaps = {k: (check[True][k] - v).abs().max().item() for k, v in check[False].items()}
    cancelled = [k for k in gaps if bn_cancelled(k)]
    worst = max((k for k in gaps if k not in cancelled), key=gaps.__getitem__)
    diff = gaps[worst]
    say(f"weights after 6 meta-steps (deterministic kernels): max |graph - eager| = {diff:.2e}"
          f" in {worst} ({max(gaps[k] for k in cancelled):.2e} on the conv biases batch norm "
          "cancels)")
    torch.backends.cudnn.deterministic = False
    results = {}
    for graphed in (False, True):
        rate, warm, _ = meta_train(scenario, args.steps, graphed)
        results[graphed] = rate
        name = "cuda graph" if graphed else "eager"
        say(f"{name:>10}: {rate:6.1f} meta-steps/s (first 20 steps incl. warm-up {warm:.1f} s)"
            f" -> {recipe.meta_steps} steps in {recipe.meta_steps / rate / 60:.0f} min")
    speedup = results[True] / results[False]
    say(f"speed-up of the CUDA graph: {speedup:.2f}x")
    same = diff <= 1e-4 or args.tf32
    write("bench_maml_cuda_graph", ap, args,
          {"ways": args.ways, "meta_batch": recipe.meta_batch, "inner_steps": recipe.inner_steps,
           "paper_meta_steps": recipe.meta_steps, "eager_steps_per_s": results[False],
           "graph_steps_per_s": results[True], "speedup": speedup,
           "max_weight_diff_6_steps": diff, "worst_weight": worst, "same_weights": same},
          say.lines, ("CUDA-graph meta-steps/s / eager meta-steps/s", speedup,
                      "none; the weights must match the eager run's"),
          device="cuda", note="" if same else "MISMATCH: the graphed weights differ")
    if not same:
        raise SystemExit("MISMATCH: the graphed run's weights differ from the eager run's")


if __name__ == "__main__":
    main()
