"""MAML sinusoid: test MSE of one seed's meta-weights along meta-training (docs/maml.md).

    python docs/scripts/maml_sine_trajectory.py SEED [--steps 70000] [--every 10000]
        [--save W.safetensors] [--out docs/scripts/results/maml_sine_trajectory-seedSEED.json]
    python docs/scripts/maml_sine_trajectory.py SEED --load W.safetensors [--test-lr 0.0005]

Meta-trains exactly as `harness run --scenario sinusoid-fewshot --learner maml --seed SEED`
does (quick recipe, same initialisation and task draws), but every `--every` meta-steps
scores the current meta-weights on one fixed set of 600 test functions that does not depend
on SEED (so seeds are compared on the same functions) and on 200 validation functions: MSE
on 100 points per function after S = 0, 1, 2, 5, 9, 10 SGD steps from K = 5 and 10 points.
Prints one JSON line per evaluation; `--out FILE` also saves them with their provenance
(docs/scripts/output.py). `--load` scores saved meta-weights instead of training, at the
recipe's inner lr or at `--test-lr`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
import torch.nn.functional as F
from output import write
from torch.func import vmap

from baselines.maml import MAMLConfig
from harness.config import BuildContext
from harness.meta import detach_params
from harness.protocol import ScenarioSpec
from scenarios.fewshot import SinusoidSampler, sinusoid_episodes

SPEC = ScenarioSpec(input_shape=(1,), n_outputs=1, task="regression", episodic=True)


def function_set(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    amp, phase, x, xq = sinusoid_episodes(n, 10, 100, torch.Generator().manual_seed(seed), "f")
    return amp.view(-1, 1, 1), phase.view(-1, 1, 1), x, xq


def score(learner, functions, steps=(0, 1, 2, 5, 9, 10)) -> dict[str, float]:
    amp, phase, x, xq = functions
    meta = detach_params(learner.meta_params())
    out = {}
    for k in (5, 10):
        xs = x[:, :k]
        ys, yq = amp * torch.sin(xs - phase), amp * torch.sin(xq - phase)
        for s in steps:
            def one(xs, ys, xq, yq, s=s):
                with torch.enable_grad():
                    p, _ = learner.adapt(meta, xs, ys, s, second_order=False)
                return F.mse_loss(learner.net.forward(p, xq, None, None), yq)
            out[f"K{k}_S{s}"] = round(float(vmap(one)(xs, ys, xq, yq).mean()), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("seed", type=int)
    ap.add_argument("--steps", type=int, default=70000)
    ap.add_argument("--every", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", help="write the final meta-weights here (safetensors)")
    ap.add_argument("--load", help="score these meta-weights (from --save); no training")
    ap.add_argument("--test-lr", type=float, help="inner lr when scoring (default: recipe's)")
    ap.add_argument("--out", help="also save the printed lines, with provenance, to this file")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = MAMLConfig(recipe="quick").resolved(SPEC)
    learner = cfg.build(BuildContext(spec=SPEC, seed=a.seed))
    tasks = SinusoidSampler(10, cfg.train_queries)
    test, val = function_set(600, 4242), function_set(200, 777)
    if a.load:
        from safetensors.torch import load_file

        learner.load_state_dict(load_file(a.load))
        if a.test_lr:
            learner.cfg = dataclasses.replace(learner.cfg, inner_lr=a.test_lr)
        record = {"seed": a.seed, "inner_lr": learner.cfg.inner_lr,
                  "test": score(learner, test), "val": score(learner, val)}
        print(json.dumps(record))
        write(a.out, [record])
        return
    # The same generator, optimiser and loss as MAMLLearner.meta_train.
    g = torch.Generator().manual_seed(a.seed + 7919)
    opt = torch.optim.Adam(learner.parameters(), lr=cfg.meta_lr)
    t0 = time.perf_counter()
    records = []
    for step in range(a.steps):
        xs, ys, xq, yq = tasks.sample_batch(cfg.meta_batch, g, queries=cfg.train_queries)
        loss, _ = learner.meta_batch_loss(xs, ys, xq, yq, True, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % a.every == 0 or step + 1 == a.steps:
            records.append({"seed": a.seed, "step": step + 1,
                            "seconds": round(time.perf_counter() - t0, 1),
                            "test": score(learner, test), "val": score(learner, val)})
            print(json.dumps(records[-1]), flush=True)
    write(a.out, records)
    if a.save:
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous() for k, v in learner.state_dict().items()}, a.save)


if __name__ == "__main__":
    main()
