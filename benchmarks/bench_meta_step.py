"""The harness's ANML and OML meta-training step against a minimal hand-written step of the
same network, in the same process (docs/design.md D8; target: harness / minimal <= 1.15x).

    python benchmarks/bench_meta_step.py [--steps 60] [--rounds 3] [--threads 0]

Harness side: the learner's own `meta_train` (the resumable loop, its sampler, the functional
inner loop of harness/meta.py, Adam, the divergence check and the loss average), from the
quick preset of `anml` on `omniglot-stream` and of `oml` (OML-2020: linear PLN, 3 classes x 5
single-image steps, second order) on `omniglot-stream` at image_size=84.

Minimal side: a plain PyTorch loop written out here: the same network, initialised with the
same seed, the same draws from the meta-train pool, the inner loop as a Python loop of
`torch.autograd.grad` calls on plain tensors (ANML: first order on detached copies; OML-2020:
second order with `create_graph`), the outer cross-entropy, `backward` and Adam.

Both sides run `--steps` steps from the same start, alternately, `--rounds` times; the figure
is the ratio of the medians. After each pair the two networks' weights are compared: equal
bit for bit means both sides did the same arithmetic, so the ratio is overhead alone. Results
go to benchmarks/results/bench_meta_step.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from record import Printer, write
from torch import Tensor, nn

from baselines.anml import ANMLConfig
from baselines.headonly import reset_rows
from baselines.oml import OMLConfig
from baselines.seeding import sub_seed
from harness.config import BuildContext
from harness.experiment import build_scenario
from harness.protocol import Budget, LabeledPool


def anml_minimal_step(net: nn.Module, pool: LabeledPool, gen: torch.Generator,
                      cfg: ANMLConfig) -> Tensor:
    """First-order ANML: the trajectory's gates in one pass, one class's 20 single-image SGD
    steps on pred + head, then the outer loss at the adapted weights on those 20 images and 64
    others."""
    c = int(pool.sample_classes(1, gen)[0])
    traj = pool.sample_from_class(c, cfg.inner_steps, gen)
    rem = pool.sample_random(cfg.remember, gen)
    xt, yt = pool.x[traj], pool.y[traj]
    reset_rows(net.head.weight, [c], gen)
    params = dict(net.named_parameters())
    fast_names = [n for n in params if n.startswith(("pred.", "head."))]
    slow = {n: p for n, p in params.items() if n not in fast_names}
    slow_detached = {n: p.detach() for n, p in slow.items()}
    fast = {n: params[n] for n in fast_names}
    with torch.no_grad():
        gates = net.gates(xt)
    for i in range(len(traj)):
        leaves = {n: p.detach().requires_grad_() for n, p in fast.items()}
        logits = torch.func.functional_call(net, {**slow_detached, **leaves},
                                            (xt[i : i + 1], gates[i : i + 1]))
        grads = torch.autograd.grad(F.cross_entropy(logits, yt[i : i + 1]),
                                    list(leaves.values()))
        fast = dict(zip(fast, torch._foreach_add(list(fast.values()), list(grads),
                                                 alpha=-cfg.inner_lr), strict=True))
    x = torch.cat([xt, pool.x[rem]])
    y = torch.cat([yt, pool.y[rem]])
    return F.cross_entropy(torch.func.functional_call(net, {**slow, **fast}, (x,)), y)


def oml_minimal_step(net: nn.Module, pool: LabeledPool, gen: torch.Generator,
                     cfg: OMLConfig) -> Tensor:
    """Second-order OML-2020: RLN features of 3 classes x 5 images, 15 single-image SGD steps
    on the linear PLN, outer loss on 5 other images of each class and 15 of other classes."""
    classes = pool.sample_classes(3, gen).tolist()
    traj, query = [], []
    for c in classes:
        idx = pool.sample_from_class(c, 10, gen)
        traj.append(idx[:5])
        query.append(idx[5:])
    traj_idx = torch.cat(traj)
    candidates = torch.nonzero(~torch.isin(pool.y, torch.tensor(classes))).squeeze(1)
    others = candidates[torch.randperm(len(candidates), generator=gen)[:15]]
    head = net.pln[-1]
    reset_rows(head.weight, classes, gen)
    rep = net.rln(pool.x[traj_idx])
    y_t = pool.y[traj_idx]
    w, b = head.weight, head.bias
    for i in range(len(traj_idx)):
        loss = F.cross_entropy(F.linear(rep[i : i + 1], w, b), y_t[i : i + 1])
        gw, gb = torch.autograd.grad(loss, (w, b), create_graph=True)
        w, b = w - cfg.inner_lr * gw, b - cfg.inner_lr * gb
    q = torch.cat([torch.cat(query), others])
    return F.cross_entropy(F.linear(net.rln(pool.x[q]), w, b), pool.y[q])


def minimal_train(net: nn.Module, step: Callable[..., Tensor], pool: LabeledPool,
                  cfg: Any, steps: int) -> None:
    """The plain loop: Adam on the step's loss, the sampler seeded as the learner seeds it."""
    gen = torch.Generator().manual_seed(sub_seed(cfg.meta_seed, cfg.init))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.meta_lr)
    net.train()
    for _ in range(steps):
        loss = step(net, pool, gen, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def timed_pair(cfg: Any, spec: Any, pool: LabeledPool, step: Callable[..., Tensor]
               ) -> tuple[float, float, bool]:
    """(harness seconds, minimal seconds, identical weights) of `cfg.meta_steps` steps each
    from the same initial network."""
    learner = cfg.build(BuildContext(spec=spec))
    net = type(learner.net)(**_net_args(learner))
    net.load_state_dict(learner.net.state_dict())
    t0 = time.perf_counter()
    learner.meta_train(pool, Budget(), None, None)
    t_harness = time.perf_counter() - t0
    t0 = time.perf_counter()
    minimal_train(net, step, pool, cfg, cfg.meta_steps)
    t_minimal = time.perf_counter() - t0
    same = all(torch.equal(a, b) for a, b in zip(learner.net.state_dict().values(),
                                                 net.state_dict().values(), strict=True))
    return t_harness, t_minimal, same


def _net_args(learner: Any) -> dict[str, Any]:
    """Constructor arguments that rebuild the learner's network (the weights are copied)."""
    net = learner.net
    if hasattr(net, "nm"):  # ANMLNet
        return {"in_channels": net.nm[0].in_channels, "nm_channels": net.nm[0].out_channels,
                "pred_channels": net.pred[0].out_channels,
                "n_outputs": net.head.out_features, "image_size": learner.spec.input_shape[-1]}
    return {"in_channels": net.rln[0].in_channels, "channels": net.rln[0].out_channels,
            "hidden": 0, "n_outputs": net.pln[-1].out_features,
            "image_size": learner.spec.input_shape[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="meta-steps per timed block")
    ap.add_argument("--rounds", type=int, default=3, help="alternating blocks per side")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    say = Printer()
    say(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps "
        f"x {args.rounds} rounds per side")
    cases = {
        "anml": ({}, ANMLConfig(**{**ANMLConfig.PRESETS["quick"], "meta_steps": args.steps}),
                 anml_minimal_step),
        "oml": ({"image_size": "84"},
                OMLConfig(**{**OMLConfig.PRESETS["quick"], "meta_steps": args.steps}),
                oml_minimal_step),
    }
    results: dict[str, Any] = {}
    for name, (params, cfg, step) in cases.items():
        scenario = build_scenario("omniglot-stream", 0, None, params)
        timed_pair(cfg, scenario.spec, scenario.meta_train, step)  # warm-up
        rounds = [timed_pair(cfg, scenario.spec, scenario.meta_train, step)
                  for _ in range(args.rounds)]
        h = statistics.median(r[0] for r in rounds) / args.steps
        m = statistics.median(r[1] for r in rounds) / args.steps
        same = all(r[2] for r in rounds)
        results[name] = {"harness_s_per_step": h, "minimal_s_per_step": m, "ratio": h / m,
                         "identical_weights": same,
                         "rounds": [{"harness_s": a, "minimal_s": b} for a, b, _ in rounds]}
        say(f"{name} quick: harness {h:.4f} s/step, minimal {m:.4f} s/step, ratio "
            f"{h / m:.3f}; identical weights after {args.steps} steps: {same}")
    worst = max(r["ratio"] for r in results.values())
    write("bench_meta_step", ap, args, results, say.lines,
          ("harness step / minimal step (worst of ANML and OML)", worst,
           "<= 1.15x, identical weights"))


if __name__ == "__main__":
    main()
