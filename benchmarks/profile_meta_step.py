"""Where ANML's quick meta-training step spends its time (the report in docs/profile-meta-step.md
quotes this script's output).

    python benchmarks/profile_meta_step.py [--steps 200] [--threads 0]

On `omniglot-stream` with the `anml` quick preset (32/64 channels, first order, 20 inner
steps, 64 remembered images) it measures, in one process:
  1. the step split into its phases, timed around the same calls the learner makes
     (`ANMLLearner._meta_step` and the loop of baselines/headonly.py): sampling and indexing
     the pool, the inner loop, the outer forward, the backward, Adam, and the loop's own
     bookkeeping (divergence check, loss average);
  2. the torch profiler's operators by self time over `--steps` steps (shapes grouped), and
     the share of the step that is not inside any operator (Python and dispatch);
  3. one partial-checkpoint write (what the loop does every `checkpoint_every_s` seconds);
  4. candidates: glibc's default handling of freed memory against harness/memory.py (each
     timed in fresh processes, alternately); the max-pool through PyTorch's NCHW kernel
     (`nn.MaxPool2d`) against baselines/networks/pool.py; inner gradients by torch.func.grad
     against torch.autograd.grad; the whole step at 1 and 2 threads; the fast weights' SGD
     update by `torch._foreach_add` against `p - lr * g`; the trajectory's gates in one batched
     pass against one per inner step; `PerImageNorm` (group_norm) against nn.InstanceNorm2d,
     in the step and alone (also channels-last); `torch.compile` (whether it runs here and how
     far its gradients are from eager ones).
Results go to benchmarks/results/profile_meta_step.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from record import Printer, write
from torch import nn
from torch.profiler import ProfilerActivity, profile

import harness.meta as meta_module
from baselines.anml import ANMLConfig, ANMLLearner
from baselines.headonly import reset_rows
from baselines.networks.oml_anml import PerImageNorm
from baselines.networks.pool import MaxPool2d
from harness import checkpoint
from harness.config import BuildContext
from harness.experiment import build_scenario
from harness.memory import keep_freed_memory
from harness.meta import inner_loop

PHASES = ("sample", "gates", "inner loop", "outer forward", "backward", "adam", "bookkeeping")


def learner_and_pool() -> tuple[ANMLLearner, Any]:
    scenario = build_scenario("omniglot-stream", 0, None, {})
    learner = ANMLConfig(**ANMLConfig.PRESETS["quick"]).build(BuildContext(spec=scenario.spec))
    return learner, scenario.meta_train


OPTIONS = {"batched_gates": True, "fused": True}
"""How `phased_step` runs: as the learner does (True), or the older way (candidates)."""


def phased_step(lrn: ANMLLearner, pool: Any, gen: torch.Generator, opt: torch.optim.Optimizer,
                clock: dict[str, float]) -> None:
    """The learner's step (baselines/anml.py `_meta_step` and the training loop), with a
    timer between its phases."""
    cfg = lrn.cfg
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        clock[name] = clock.get(name, 0.0) + now - t
        t = now

    c = int(pool.sample_classes(1, gen)[0])
    traj = pool.sample_from_class(c, cfg.inner_steps, gen)
    rem = pool.sample_random(cfg.remember, gen)
    x_traj, y_traj = pool.x[traj], pool.y[traj]
    reset_rows(lrn.net.head.weight, [c], gen)
    x_out, y_out = torch.cat([x_traj, pool.x[rem]]), torch.cat([y_traj, pool.y[rem]])
    lap("sample")
    xs: Any = x_traj[:, None]
    if OPTIONS["batched_gates"]:
        with torch.no_grad():
            xs = (xs, lrn.net.gates(x_traj)[:, None])
    lap("gates")
    fast, slow = lrn._fm.params()
    adapted = inner_loop(lrn._fm, fast, slow, xs, y_traj[:, None], loss_fn=F.cross_entropy,
                         lr=cfg.inner_lr, first_order=True, fused=OPTIONS["fused"])
    lap("inner loop")
    loss = F.cross_entropy(lrn._fm(adapted, slow, x_out), y_out)
    lap("outer forward")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    lap("backward")
    opt.step()
    lap("adam")
    if not torch.isfinite(loss):
        raise RuntimeError("diverged")
    loss.item()
    lap("bookkeeping")


def seconds_per_step(step: Callable[[], None], n: int) -> float:
    step()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def interleaved(step: Callable[[], None], set_a: Callable[[], None],
                set_b: Callable[[], None], blocks: int, n: int) -> tuple[float, float]:
    """Median s/step of `step` after `set_a` and after `set_b`, timed in alternating blocks
    of `n` steps (so a change in the machine's load hits both alike); ends set to b."""
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(blocks):
        for k, setup in enumerate((set_a, set_b)):
            setup()
            times[k].append(seconds_per_step(step, n))
    return statistics.median(times[0]), statistics.median(times[1])


def replace_layers(net: nn.Module, kind: type, make: Callable[[nn.Module], nn.Module]) -> None:
    """Replace every layer of type `kind` in the network's Sequentials by `make(layer)`."""
    for module in net.modules():
        if isinstance(module, nn.Sequential):
            for i, m in enumerate(module):
                if isinstance(m, kind):
                    module[i] = make(m)


def swap_norms(net: nn.Module, to_group: bool) -> None:
    """Swap every per-image norm between `PerImageNorm` (group_norm) and nn.InstanceNorm2d,
    keeping the same Parameter objects (Adam's state stays attached)."""
    def make(m: nn.Module) -> nn.Module:
        new = (PerImageNorm(m.weight.shape[0]) if to_group
               else nn.InstanceNorm2d(m.weight.shape[0], affine=True))
        new.weight, new.bias = m.weight, m.bias
        return new

    replace_layers(net, nn.InstanceNorm2d if to_group else PerImageNorm, make)


def swap_pools(net: nn.Module, to_fast: bool) -> None:
    """Swap every max-pool between nn.MaxPool2d and baselines/networks/pool.py's."""
    if to_fast:
        replace_layers(net, nn.MaxPool2d, lambda m: MaxPool2d(2))
    else:
        replace_layers(net, MaxPool2d, lambda m: nn.MaxPool2d(2))


def compile_check(lrn: ANMLLearner, pool: Any) -> dict[str, Any]:
    """Whether torch.compile runs the outer loss's forward and backward here (the bulk of the
    step), how far its gradients are from eager ones, and its speed."""
    net, x, y = lrn.net, pool.x[:84], pool.y[:84]

    def grads(f: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
        net.zero_grad(set_to_none=True)
        f(x).backward()
        return {n: p.grad.clone() for n, p in net.named_parameters()}

    def eager_loss(t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(net(t), y)

    eager = grads(eager_loss)
    try:
        compiled_loss = torch.compile(eager_loss)
        t0 = time.perf_counter()
        comp = grads(compiled_loss)
        compile_s = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 (any failure is the finding)
        return {"runs": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    scale = max(float(g.abs().max()) for g in eager.values())
    rel = {n: float((eager[n] - comp[n]).abs().max() / eager[n].abs().max().clamp_min(1e-30))
           for n in eager}
    # Parameters whose gradient is zero in exact arithmetic (a conv bias followed by instance
    # norm, which removes any per-channel constant) hold rounding noise in both: not compared.
    noise = sorted(n for n in eager if float(eager[n].abs().max()) <= 1e-6 * scale)
    worst = max((r, n) for n, r in rel.items() if n not in noise)
    return {"runs": True, "compile_s": compile_s, "worst_relative_difference": worst[0],
            "worst_parameter": worst[1], "zero_gradient_parameters": noise,
            "eager_ms": seconds_per_step(lambda: grads(eager_loss), 10) * 1000,
            "compiled_ms": seconds_per_step(lambda: grads(compiled_loss), 10) * 1000}


def time_in_process(steps: int, keep_memory: bool) -> float:
    """s/step of the phased step in a fresh process, with or without harness/memory.py."""
    out = subprocess.run(
        [sys.executable, __file__, "--child-steps", str(steps), "--threads",
         str(torch.get_num_threads())],
        capture_output=True, text=True, check=True,
        env={**os.environ, "HARNESS_KEEP_MEMORY": "1" if keep_memory else "0"})
    return float(out.stdout.strip().splitlines()[-1])


def child(steps: int) -> None:
    keep_freed_memory()
    lrn, pool = learner_and_pool()
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(lrn.net.parameters(), lr=lrn.cfg.meta_lr)
    print(seconds_per_step(lambda: phased_step(lrn, pool, gen, opt, {}), steps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200, help="steps profiled and timed")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--child-steps", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_steps:
        return child(args.child_steps)
    kept = keep_freed_memory()
    threads = torch.get_num_threads()
    say = Printer()
    lrn, pool = learner_and_pool()
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(lrn.net.parameters(), lr=lrn.cfg.meta_lr)
    lrn.net.train()
    n = args.steps
    results: dict[str, Any] = {"steps": n, "threads": threads, "keep_freed_memory": kept}

    # 1. phases
    clock: dict[str, float] = {}
    phased_step(lrn, pool, gen, opt, {})
    t0 = time.perf_counter()
    for _ in range(n):
        phased_step(lrn, pool, gen, opt, clock)
    total = (time.perf_counter() - t0) / n
    results["s_per_step"] = total
    results["phases_ms"] = {k: 1000 * clock[k] / n for k in PHASES}
    say(f"ANML quick meta-step, {threads} threads, {n} steps: {total * 1000:.1f} ms/step "
        f"(freed memory kept by harness/memory.py: {kept})")
    for k in PHASES:
        say(f"  {k:14s} {1000 * clock[k] / n:7.2f} ms  {100 * clock[k] / n / total:5.1f}%")

    # 2. operators
    n_prof = min(n, 30)  # the profiler's event list grows by ~19,000 operators a step
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        t0 = time.perf_counter()
        for _ in range(n_prof):
            phased_step(lrn, pool, gen, opt, {})
        wall = time.perf_counter() - t0
    events = prof.key_averages(group_by_input_shape=True)
    ops = sorted((e for e in events if e.key.startswith("aten::")),
                 key=lambda e: -e.self_cpu_time_total)
    in_ops = sum(e.self_cpu_time_total for e in events) / 1e6
    calls = sum(e.count for e in events if e.key.startswith("aten::"))
    top = [{"op": e.key, "shapes": str(e.input_shapes)[:90],
            "self_ms_per_step": e.self_cpu_time_total / 1e3 / n_prof,
            "calls_per_step": e.count / n_prof} for e in ops[:15]]
    results["profiler"] = {"steps": n_prof, "wall_s": wall, "operator_self_s": in_ops,
                           "aten_calls_per_step": calls / n_prof, "top": top}
    say(f"profiler: {calls / n_prof:.0f} aten calls per step; operators' self time "
        f"{in_ops / wall * 100:.0f}% of the profiled wall time (the rest: Python, dispatch, "
        f"profiler)")
    say("top operators by self time (ms per step, calls per step, input shapes):")
    for e in ops[:15]:
        say(f"  {e.self_cpu_time_total / 1e3 / n_prof:7.2f} {e.count / n_prof:6.1f}  "
            f"{e.key:34s} {str(e.input_shapes)[:70]}")

    # 3. a checkpoint write
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.safetensors"
        sd = {k: v for k, v in lrn.net.state_dict().items()}
        t0 = time.perf_counter()
        checkpoint.save(path, {**sd, "rng": gen.get_state()}, {"step": 1})
        results["checkpoint_write_s"] = time.perf_counter() - t0
    say(f"one partial checkpoint write: {results['checkpoint_write_s'] * 1000:.1f} ms "
        f"(every {lrn.cfg.checkpoint_every_s:g} s by default)")

    # 4. candidates
    def step() -> None:
        phased_step(lrn, pool, gen, opt, {})

    def use_nchw_pool() -> None:
        swap_pools(lrn.net, to_fast=False)

    def use_fast_pool() -> None:
        swap_pools(lrn.net, to_fast=True)

    def use_func_grad() -> None:
        meta_module._autograd_applies = lambda fast, first_order: False

    def use_autograd() -> None:
        meta_module._autograd_applies = applies

    def use_instance_norm() -> None:
        swap_norms(lrn.net, to_group=False)

    def use_group_norm() -> None:
        swap_norms(lrn.net, to_group=True)

    def option(key: str, value: bool) -> Callable[[], None]:
        return lambda: OPTIONS.__setitem__(key, value)

    def threads_1() -> None:
        torch.set_num_threads(1)

    def threads_2() -> None:
        torch.set_num_threads(2)

    applies = meta_module._autograd_applies
    cand: dict[str, float] = {}
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(3):
        for keep in (False, True):
            runs[keep].append(time_in_process(max(10, n // 5), keep))
    cand["glibc default (memory unmapped when freed)"] = statistics.median(runs[False])
    cand["freed memory kept (harness/memory.py)"] = statistics.median(runs[True])
    for (name_a, set_a), (name_b, set_b) in (
            (("nn.MaxPool2d (NCHW kernel)", use_nchw_pool),
             ("baselines/networks/pool.py", use_fast_pool)),
            (("inner gradients by torch.func.grad", use_func_grad),
             ("inner gradients by torch.autograd.grad", use_autograd)),
            (("nn.InstanceNorm2d", use_instance_norm),
             ("PerImageNorm (group_norm kernel)", use_group_norm)),
            (("gates per image, in the inner loop", option("batched_gates", False)),
             ("gates of the trajectory in one pass", option("batched_gates", True))),
            (("SGD update per parameter (p - lr * g)", option("fused", False)),
             ("SGD update fused (torch._foreach_add)", option("fused", True))),
            (("1 thread", threads_1), ("2 threads", threads_2))):
        a, b = interleaved(step, set_a, set_b, blocks=5, n=max(4, n // 20))
        cand[name_a], cand[name_b] = a, b
    torch.set_num_threads(threads)
    x = torch.randn(84, 64, 26, 26, requires_grad=True)
    cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    for name, norm, t in (("nn.InstanceNorm2d", nn.InstanceNorm2d(64, affine=True), x),
                          ("nn.InstanceNorm2d, channels-last", nn.InstanceNorm2d(64, affine=True),
                           cl),
                          ("PerImageNorm", PerImageNorm(64), x)):
        cand[f"{name}, forward + backward, 84 x 64 x 26 x 26 (ms)"] = seconds_per_step(
            lambda norm=norm, t=t: norm(t).sum().backward(), 20) * 1000
    results["candidates"] = cand
    say("candidates (s/step unless marked):")
    for k, v in cand.items():
        say(f"  {k:40s} {v:.4f}")
    comp = results["compile"] = compile_check(lrn, pool)
    if comp["runs"]:
        say(f"torch.compile of the outer loss (forward + backward, 84 images): compiled in "
            f"{comp['compile_s']:.0f} s, {comp['compiled_ms']:.1f} ms against eager "
            f"{comp['eager_ms']:.1f} ms; largest relative gradient difference from eager "
            f"{comp['worst_relative_difference']:.1e} ({comp['worst_parameter']}), not counting "
            f"the zero-gradient parameters {', '.join(comp['zero_gradient_parameters'])}")
    else:
        say(f"torch.compile does not run here: {comp['error']}")
    write("profile_meta_step", ap, args, results, say.lines,
          ("ms per ANML quick meta-step", total * 1000, "see docs/profile-meta-step.md"))


if __name__ == "__main__":
    main()
