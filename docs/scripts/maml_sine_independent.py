"""MAML on the sinusoid, written from scratch without any harness code (docs/maml.md).

    python docs/scripts/maml_sine_independent.py SEED [--steps 70000] [--save W.safetensors]
        [--out docs/scripts/results/maml_sine_independent-seedSEED.json]

A cross-check of `harness run --scenario sinusoid-fewshot --learner maml`: the same recipe as
the authors' code (cbfinn/maml: 1-40-40-1 ReLU net, weights from a normal with std 0.01
truncated at 2 std, zero biases; 25 tasks per meta-batch, 10 support and 10 query points per
task; one SGD step at 0.001 on the support MSE; second-order meta-gradient; Adam 1e-3; 70k
meta-steps), but its own sampler (NumPy), its own batched forward pass (per-task weights as
expanded tensors and `torch.baddbmm`, no torch.func) and its own test set: 600 functions from
NumPy seed 12345, 100 query points each, the 5-shot support set the first 5 of the 10 points.
Prints one JSON line with the query MSE after 1, 5 and 10 SGD steps at K = 5 and 10.
`--save` writes the meta-weights under the harness's parameter names, so that
`docs/scripts/maml_sine_trajectory.py SEED --load W` scores them on the harness's function set.
`--check-gradient` instead compares one meta-gradient with the harness's (`MAMLLearner`, the
quick sinusoid recipe) on the same batch and weights, and exits 1 if they differ.
`--out FILE` also saves what it prints, with its provenance (docs/scripts/output.py).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from output import write

NAMES = ["fc0/weight", "fc0/bias", "fc1/weight", "fc1/bias", "head/weight", "head/bias"]


def init(std: float = 0.01) -> list[torch.Tensor]:
    """Weights stored [in, out] (the TF layout); truncated normal weights, zero biases."""
    def w(*shape: int) -> torch.Tensor:
        return torch.nn.init.trunc_normal_(torch.empty(shape), std=std, a=-2 * std, b=2 * std)

    return [p.requires_grad_() for p in
            (w(1, 40), torch.zeros(40), w(40, 40), torch.zeros(40), w(40, 1), torch.zeros(1))]


def forward(p: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x [T, N, 1] with per-task weights p[i] [T, ...] -> [T, N, 1]."""
    h = torch.relu(torch.baddbmm(p[1].unsqueeze(1), x, p[0]))
    h = torch.relu(torch.baddbmm(p[3].unsqueeze(1), h, p[2]))
    return torch.baddbmm(p[5].unsqueeze(1), h, p[4])


def task_mse_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over tasks of each task's mean squared error (its gradient with respect to a task's
    own weights is that task's gradient)."""
    return ((out - y) ** 2).mean(dim=(1, 2)).sum()


def sgd_step(p: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, lr: float,
             create_graph: bool) -> list[torch.Tensor]:
    g = torch.autograd.grad(task_mse_sum(forward(p, x), y), p, create_graph=create_graph)
    return [a - lr * b for a, b in zip(p, g, strict=True)]


def sine_functions(rng: np.random.RandomState, n: int, points: int) -> tuple[np.ndarray, ...]:
    amp = rng.uniform(0.1, 5.0, (n, 1, 1))
    phase = rng.uniform(0.0, math.pi, (n, 1, 1))
    x = rng.uniform(-5.0, 5.0, (n, points, 1))
    return amp, phase, x


def as_tensors(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.tensor(a, dtype=torch.float32) for a in arrays]


def check_gradient(out: str | None) -> None:
    """The harness's second-order meta-gradient against this file's, on one batch of 25 tasks
    with random weights of std 0.5 (large enough that every term matters)."""
    from baselines.maml import MAMLConfig
    from harness.config import BuildContext
    from harness.protocol import ScenarioSpec
    from scenarios.fewshot import SinusoidSampler

    spec = ScenarioSpec(input_shape=(1,), n_outputs=1, task="regression", episodic=True)
    learner = MAMLConfig().build(BuildContext(spec=spec, seed=0))
    meta = learner.meta_params()
    with torch.no_grad():
        for v in meta.values():
            v.copy_(torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) * 0.5)
    xs, ys, xq, yq = SinusoidSampler(10, 10).sample_batch(25, torch.Generator().manual_seed(0))
    learner.meta_batch_loss(xs, ys, xq, yq, True)[0].backward()
    params = [(meta[n.replace("/", ".")].detach().t() if meta[n.replace("/", ".")].ndim == 2
               else meta[n.replace("/", ".")].detach()).clone().requires_grad_() for n in NAMES]
    expanded = [p.expand(25, *p.shape) for p in params]
    fast = sgd_step(expanded, xs, ys, learner.cfg.inner_lr, create_graph=True)
    (task_mse_sum(forward(fast, xq), yq) / 25).backward()
    worst, rows = 0.0, []
    for n, p in zip(NAMES, params, strict=True):
        theirs = meta[n.replace("/", ".")].grad
        ours = p.grad.t() if p.grad.ndim == 2 else p.grad
        rel = float((theirs - ours).abs().max() / theirs.abs().max().clamp_min(1e-12))
        print(f"{n:12s} largest entry {float(theirs.abs().max()):9.4f}  relative difference "
              f"{rel:.1e}")
        rows.append({"tensor": n, "largest_entry": float(theirs.abs().max()),
                     "relative_difference": rel})
        worst = max(worst, rel)
    write(out, [*rows, {"worst": worst, "equal": worst < 1e-5}])
    raise SystemExit(0 if worst < 1e-5 else 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("seed", type=int)
    ap.add_argument("--steps", type=int, default=70000)
    ap.add_argument("--inner-lr", type=float, default=0.001)
    ap.add_argument("--save", help="write the meta-weights here (harness parameter names)")
    ap.add_argument("--check-gradient", action="store_true",
                    help="compare one meta-gradient with the harness's, then exit")
    ap.add_argument("--out", help="also save what is printed, with provenance, to this file")
    a = ap.parse_args()
    if a.check_gradient:
        check_gradient(a.out)
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    rng = np.random.RandomState(a.seed)
    params = init()
    opt = torch.optim.Adam(params, lr=1e-3)
    tasks, k = 25, 10
    t0 = time.perf_counter()
    for _ in range(a.steps):
        amp, phase, x = sine_functions(rng, tasks, 2 * k)
        x, y = as_tensors(x, amp * np.sin(x - phase))
        expanded = [p.expand(tasks, *p.shape) for p in params]
        fast = sgd_step(expanded, x[:, :k], y[:, :k], a.inner_lr, create_graph=True)
        loss = task_mse_sum(forward(fast, x[:, k:]), y[:, k:]) / tasks
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0

    test = np.random.RandomState(12345)
    amp, phase, xs = sine_functions(test, 600, 10)
    xq = test.uniform(-5.0, 5.0, (600, 100, 1))
    xs_t, ys_t, xq_t, yq_t = as_tensors(xs, amp * np.sin(xs - phase), xq,
                                        amp * np.sin(xq - phase))
    result: dict[str, float] = {}
    for shots in (5, 10):
        p = [q.detach().expand(600, *q.shape).clone().requires_grad_() for q in params]
        for step in range(1, 11):
            p = [q.detach().requires_grad_() for q in
                 sgd_step(p, xs_t[:, :shots], ys_t[:, :shots], a.inner_lr, False)]
            if step in (1, 5, 10):
                with torch.no_grad():
                    mse = float(((forward(p, xq_t) - yq_t) ** 2).mean())
                result[f"K{shots}_S{step}"] = round(mse, 4)
    record = {"seed": a.seed, "steps": a.steps, "inner_lr": a.inner_lr, **result,
              "train_s": round(seconds, 1)}
    print(json.dumps(record))
    write(a.out, [record])
    if a.save:
        from safetensors.torch import save_file

        save_file({f"params.{n}": (p.detach().t() if p.ndim == 2 else p.detach()).contiguous()
                   for n, p in zip(NAMES, params, strict=True)}, a.save)


if __name__ == "__main__":
    main()
