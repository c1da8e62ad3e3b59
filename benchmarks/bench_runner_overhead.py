"""Harness overhead: the runner's predict-then-observe loop vs a bare PyTorch loop doing the same
work (same model, same stream, same evaluations at experience ends). Target <= 1.10x
(docs/design.md D8).

    python benchmarks/bench_runner_overhead.py [--classes 20] [--repeats 5]

Prints the median ratio over interleaved repeats, measured in one process on one torch thread,
and writes it to benchmarks/results/bench_runner_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from record import Printer, write
from torch import nn

from harness.experiment import build_scenario
from harness.runner import run_stream


class Plain(nn.Module):
    """The model both loops train: a small conv net + linear head, online SGD."""

    def __init__(self, n_out: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(32 * 7 * 7, n_out))
        self.opt = torch.optim.SGD(self.parameters(), lr=0.01)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def observe(self, x: torch.Tensor, y: torch.Tensor) -> None:
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()


def bare_loop(model: Plain, experiences) -> float:
    """The same work written by hand: predict, count hits, learn; evaluate at the ends."""
    t0 = time.perf_counter()
    hits = 0

    def evaluate_all() -> list[float]:
        model.eval()
        with torch.no_grad():
            accs = [(model.net(e.x_test).argmax(1) == e.y_test).float().mean().item()
                    for e in experiences]
        model.train()
        return accs

    evaluate_all()
    for exp in experiences:
        for x, y in exp:
            with torch.no_grad():
                hits += int((model.net(x).argmax(1) == y).sum())
            model.observe(x, y)
        evaluate_all()
    for e in experiences:  # the runner also scores the trained samples after the stream
        with torch.no_grad():
            model.eval()
            (model.net(e.x).argmax(1) == e.y).float().mean().item()
            model.train()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    scen = build_scenario("omniglot-stream", 0, None, {"n_classes": str(args.classes)})
    exps, spec = scen.experiences, scen.spec
    bare, harness_t = [], []
    for _ in range(args.repeats):  # interleaved so drifts in machine load hit both alike
        bare.append(bare_loop(Plain(spec.n_outputs), exps))
        t0 = time.perf_counter()
        run_stream(Plain(spec.n_outputs), exps, spec)
        harness_t.append(time.perf_counter() - t0)
    ratio = statistics.median(h / b for h, b in zip(harness_t, bare, strict=True))
    n = sum(e.n_train for e in exps)
    say = Printer()
    say(f"stream: omniglot-stream, {args.classes} classes, {n} samples, batch 1, "
          f"{len(exps)} experiences")
    say(f"bare loop   median {statistics.median(bare):.3f} s")
    say(f"runner loop median {statistics.median(harness_t):.3f} s")
    say(f"runner overhead ratio (runner / bare): {ratio:.3f}x  (target <= 1.10x)")
    write("bench_runner_overhead", ap, args,
          {"classes": args.classes, "samples": n, "experiences": len(exps),
           "bare_s": bare, "runner_s": harness_t, "bare_median_s": statistics.median(bare),
           "runner_median_s": statistics.median(harness_t), "ratio_median": ratio},
          say.lines, ("runner time / bare loop time (median of interleaved repeats)", ratio,
                      "<= 1.10x"))


if __name__ == "__main__":
    main()
