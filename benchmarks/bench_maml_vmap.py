"""MAML meta-batch: per-task loop (learn2learn-style clone/adapt) vs torch.func.vmap vs
torch.compile, on the same tasks; and peak memory of second- vs first-order meta-training as the
number of inner steps grows (docs/design.md D8; targets at meta-batch 32, Omniglot 5-way 1-shot:
vmap >= 95% of the batching ceiling on a CPU, >= 15x the loop on a GPU, equal meta-gradients).

    python benchmarks/bench_maml_vmap.py [--meta-batch 32] [--queries 1] [--repeats 5]
        [--threads 1] [--memory-steps 1,2,5,10] [--no-compile] [--no-memory] [--device cuda]
        [--tf32]

Timing: one meta-gradient (forward through the inner loop, backward to the meta-weights) on
identical tasks drawn from `omniglot-fewshot`, with MAML's Omniglot net (conv4, stride-2, 64
channels; baselines/networks/functional.py) and the quick recipe (1 inner step, lr 0.4, 1 query per
class). Methods are interleaved per repeat, so machine load hits them alike; the median time
per meta-batch and the ratio to the loop are printed, and the losses and meta-gradients are
checked equal.
  - loop: the reference. Per task, the meta-weights are cloned (the clone stays in the
    graph), adapted with `torch.autograd.grad(create_graph=True)` and a manual SGD update, and
    the query loss is back-propagated, as learn2learn's `MAML.clone()` / `adapt()` do.
  - vmap: `MAMLLearner.meta_batch_loss` (the default): the whole meta-batch in one
    `torch.func.vmap` over a function whose inner gradient is `torch.func.grad`.
  - compile: the vmap function under `torch.compile` (reported as failed where the installed
    torch cannot compile it, and flagged MISMATCH where its meta-gradient differs; with torch
    2.15 on CPU it differs by ~10% of the largest entry, so it is not the default).
  - bound: the meta-batch's images as a single task (5 x 32 support and query images, shared
    weights): the same arithmetic with no per-task weights, so no batching of the tasks can be
    faster. Its speed-up over the loop is the ceiling of any vectorisation on this machine.

Memory: each (order, inner steps) configuration runs in a fresh subprocess on random 28x28
tasks (memory does not depend on pixel values) and makes one meta-step; printed is its peak
RSS above the resident set before the step (CPU, Linux), or torch.cuda.max_memory_allocated
above the resting allocation on a GPU (--device cuda). The second-order graph keeps the
inner-loop activations and their gradients alive until the meta-backward, so its memory grows
with the number of inner steps.

Everything printed, with the figures and their provenance, goes to
benchmarks/results/bench_maml_vmap.{json,md} (`bench_maml_vmap-cuda.*` with --device cuda).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from record import Printer, write

from baselines.maml import MAMLConfig
from harness.config import BuildContext
from scenarios.fewshot import OmniglotFewShotConfig

BOUND = "bound: one task of all images"


def make_learner(spec, steps: int = 1, first_order: bool = False, device: str = "cpu"):
    cfg = MAMLConfig(inner_steps=steps, first_order=first_order, test_steps=steps)
    return cfg.build(BuildContext(spec=spec, seed=0, device=device))


def loop_meta_grad(learner, xs, ys, xq, yq, second_order: bool = True) -> tuple[float, dict]:
    """The per-task reference: clone, adapt with autograd.grad, back-propagate the query loss."""
    net, cfg = learner.net, learner.cfg
    meta = learner.meta_params()
    total = 0.0
    for t in range(len(xs)):
        fast = {k: v.clone() for k, v in meta.items()}  # clone_module: stays in the graph
        for _ in range(cfg.inner_steps):
            loss = F.cross_entropy(net.forward(fast, xs[t]), ys[t])
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=second_order)
            fast = {k: v - cfg.inner_lr * g for (k, v), g in zip(fast.items(), grads,
                                                                  strict=True)}
        n = len(xs[t])
        out = net.forward(fast, torch.cat([xs[t], xq[t]]), n)[n:]
        qloss = F.cross_entropy(out, yq[t]) / len(xs)
        qloss.backward()
        total += qloss.item()
    return total, {k: v.grad.clone() for k, v in meta.items()}


def vmap_meta_grad(learner, xs, ys, xq, yq, fn=None) -> tuple[float, dict]:
    loss, _ = (fn or learner.meta_batch_loss)(xs, ys, xq, yq, True)
    loss.backward()
    return loss.item(), {k: v.grad.clone() for k, v in learner.meta_params().items()}


def timing(args, say: Printer) -> tuple[list[str], dict]:
    """Prints the timing table; returns the default methods whose meta-gradient differs from
    the loop's (the run exits 1 at the end, after the memory figures) and the figures."""
    sc = OmniglotFewShotConfig(test_episodes=1, val_episodes=0).build(0)
    learner = make_learner(sc.spec, device=args.device)
    g = torch.Generator().manual_seed(0)
    tasks = [t.to(args.device) for t in
             sc.meta_train.sample_batch(args.meta_batch, g, queries=args.queries)]
    methods = {
        "loop (clone/adapt per task)": lambda: loop_meta_grad(learner, *tasks),
        "vmap (default)": lambda: vmap_meta_grad(learner, *tasks),
    }
    if args.compile:
        compiled = torch.compile(learner.meta_batch_loss)
        methods["vmap + torch.compile"] = lambda: vmap_meta_grad(learner, *tasks, fn=compiled)
    # The ceiling of any batching of the tasks: the same images and the same arithmetic as one
    # big task with shared weights (no per-task weights at all). Not the same meta-gradient.
    one_task = [t.reshape(1, -1, *t.shape[2:]) for t in tasks]
    methods[BOUND] = lambda: vmap_meta_grad(learner, *one_task)
    times: dict[str, list[float]] = {m: [] for m in methods}
    results: dict[str, tuple[float, dict]] = {}
    failed: dict[str, str] = {}
    mismatches: list[str] = []
    for rep in range(args.repeats + 1):  # repeat 0 is warm-up (compilation included)
        for name, fn in methods.items():
            if name in failed:
                continue
            learner.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            try:
                results[name] = fn()
            except Exception as e:  # report, keep benchmarking the others
                failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                continue
            if rep:
                times[name].append(time.perf_counter() - t0)
    ref_name = "loop (clone/adapt per task)"
    ref_loss, ref_grads = results[ref_name]
    ref_t = statistics.median(times[ref_name])
    figures: dict = {"methods": {}, "failed": failed}
    say(f"MAML meta-gradient, Omniglot 5-way 1-shot, meta-batch {args.meta_batch}, "
          f"{args.queries} query/class, conv4-stride-64, second order, "
          f"{torch.get_num_threads()} thread(s), {args.device}, median of {args.repeats}")
    say(f"{'method':32s} {'s/meta-batch':>13s} {'speed-up':>9s} {'loss':>10s} "
          f"{'grad rel.err':>12s}")
    for name in methods:
        if name in failed:
            say(f"{name:32s} failed: {failed[name]}")
            continue
        loss, grads = results[name]
        t = statistics.median(times[name])
        figures["methods"][name] = {"s_per_meta_batch": t, "times": times[name],
                                    "speedup": ref_t / t}
        if name == BOUND:
            say(f"{name:32s} {t:13.3f} {ref_t / t:8.2f}x   (not the same tasks: the ceiling)")
            continue
        # Relative to the largest meta-gradient entry (conv biases before batch norm have
        # ~0 gradient, so a per-tensor ratio would be noise); inductor reorders float ops.
        scale = max(float(g.abs().max()) for g in ref_grads.values())
        diff = max(float((grads[k] - ref_grads[k]).abs().max()) for k in ref_grads) / scale
        same = abs(loss - ref_loss) < 1e-4 * max(1.0, abs(ref_loss)) and diff < 1e-4
        figures["methods"][name].update(loss=loss, grad_rel_err=diff, same=same)
        say(f"{name:32s} {t:13.3f} {ref_t / t:8.2f}x {loss:10.5f} {diff:12.2e}"
            f"{'' if same else '  MISMATCH: not the same meta-gradient'}")
        if name.startswith("vmap (default)") and not same:
            mismatches.append(name)
    vm, bound = figures["methods"].get("vmap (default)"), figures["methods"].get(BOUND)
    if vm and bound:
        figures["vmap_share_of_ceiling"] = vm["speedup"] / bound["speedup"]
        say(f"vmap reaches {figures['vmap_share_of_ceiling']:.0%} of the ceiling's speed-up")
    return mismatches, figures


MEMORY_CHILD = """
import json, resource, sys, torch
sys.path.insert(0, sys.argv[5])
from bench_maml_vmap import make_learner
from harness.protocol import ScenarioSpec
order, steps, mb, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(1)
spec = ScenarioSpec(input_shape=(1, 28, 28), n_outputs=5, episodic=True)
learner = make_learner(spec, steps, order == "first", device)
g = torch.Generator().manual_seed(0)  # memory does not depend on the pixel values
xs, xq = torch.rand(mb, 5, 1, 28, 28, generator=g), torch.rand(mb, 5, 1, 28, 28, generator=g)
ys = torch.arange(5).expand(mb, -1)
tasks = [t.to(device) for t in (xs, ys, xq, ys)]
import os
page = os.sysconf("SC_PAGE_SIZE")
with open("/proc/self/statm") as f:  # resident set now, in pages
    rss_now_kb = int(f.read().split()[1]) * page / 1024
if device.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
learner.meta_batch_loss(*tasks, order == "second")[0].backward()
peak = ((torch.cuda.max_memory_allocated() - base) / 2**20 if device.startswith("cuda") else
        (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_now_kb) / 1024)
print(json.dumps({"peak_mb": peak}))
"""


def memory(args, say: Printer) -> list[dict]:
    steps_list = [int(s) for s in args.memory_steps.split(",")]
    rows = []
    say(f"\nPeak memory of one meta-step (MiB above setup; {args.device}), meta-batch "
          f"{args.meta_batch}, Omniglot 5-way 1-shot, vmap:")
    say(f"{'inner steps':>11s} {'second order':>13s} {'first order':>12s} {'ratio':>6s}")
    for steps in steps_list:
        row = {}
        for order in ("second", "first"):
            out = subprocess.run(
                [sys.executable, "-c", MEMORY_CHILD, order, str(steps), str(args.meta_batch),
                 args.device, str(Path(__file__).resolve().parent)],
                capture_output=True, text=True, check=True)
            row[order] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]
        ratio = row["second"] / row["first"] if row["first"] > 0 else float("nan")
        rows.append({"inner_steps": steps, "second_order_mib": row["second"],
                     "first_order_mib": row["first"], "ratio": ratio})
        say(f"{steps:11d} {row['second']:13.1f} {row['first']:12.1f} {ratio:6.2f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meta-batch", type=int, default=32)
    ap.add_argument("--queries", type=int, default=1, help="query images per class")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--memory-steps", default="1,2,5,10")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--no-memory", dest="memory", action="store_false")
    ap.add_argument("--tf32", action="store_true", help="CUDA: keep TF32 convolutions on")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not args.tf32:
        # TF32 convolutions (cuDNN's default) round to 10 mantissa bits; the second-order
        # meta-gradient amplifies that (20% of the largest entry on an H200), so the equality
        # check and the timings run in full fp32 unless --tf32 is given.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    say = Printer()
    if args.device.startswith("cuda"):
        say(f"TF32: {'on' if torch.backends.cudnn.allow_tf32 else 'off'}")
    mismatches, figures = timing(args, say)
    if args.memory:
        figures["memory"] = memory(args, say)
    gpu = args.device.startswith("cuda")
    vm = figures["methods"].get("vmap (default)", {})
    ratio = (("vmap speed-up over the per-task loop", vm.get("speedup", float("nan")),
              ">= 15x, equal meta-gradients") if gpu else
             ("vmap's speed-up as a share of the batching ceiling's",
              figures.get("vmap_share_of_ceiling", float("nan")),
              ">= 0.95, equal meta-gradients"))
    note = "TF32 on: the meta-gradient check is not meaningful" if gpu and args.tf32 else ""
    name = "bench_maml_vmap" + ("-tf32" if gpu and args.tf32 else "")
    write(name, ap, args, figures, say.lines, ratio, device=args.device, note=note)
    if mismatches:
        sys.exit(f"vmap and the per-task loop gave different meta-gradients: {mismatches}")


if __name__ == "__main__":
    main()
