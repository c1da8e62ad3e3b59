"""Reptile (Nichol, Achiam & Schulman 2018): adapt to a task with plain SGD/Adam, then move the
meta-weights towards the adapted ones, theta <- theta + eps * mean_i(phi_i - theta).

No second-order terms and no query set: meta-training tasks have `train_shots` samples per
class (Reptile trains on more shots than it tests with, e.g. 10 for 1-shot Omniglot), split
into mini-batches of `inner_batch`. The meta step size eps is annealed linearly from
`meta_step` to `meta_step_final`. The inner optimiser is Adam with beta1 = 0 as in the paper's
code, or SGD. As in that code, one Adam state serves the whole run (`adam_state='run'`): its
second moments carry over from task to task and meta-step to meta-step, and meta-test
adaptation starts from them (and leaves them unchanged); `adam_state='task'` resets it for
every task instead.
The tasks of a meta-batch are adapted together under torch.func.vmap, from the same Adam
state; the state carried on is the one they would leave run in sequence (`merge_adam_state`).

Published Omniglot 5-way 1-shot: 97.68 +- 0.04 (transductive), 95.39 +- 0.09 (not
transductive), with 1 query per class over 10,000 tasks and 50 test iterations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, vmap

from baselines.metakit.configs import RecipeConfig
from baselines.metakit.learner import FunctionalMetaLearner, param_key
from baselines.metakit.recipes import REPTILE_RECIPES, Recipes, fill_from_recipe, scenario_kind
from baselines.metakit.resumable import Info, step_target, stop_after, time_limit, train_steps
from baselines.networks.functional import Params
from harness.capabilities import MetaTrainReport, Validate
from harness.config import BuildContext, Progress, eval_field
from harness.errors import DivergedError
from harness.protocol import Budget, ScenarioSpec


@dataclass
class ReptileConfig(RecipeConfig):
    """Reptile. None = the recipe's value for the scenario kind (`REPTILE_RECIPES`)."""

    inner_opt: Literal["adam", "sgd"] | None = None
    """Inner optimiser: Adam with beta1 = 0 (the paper's code; default for images) or SGD."""
    inner_lr: float | None = None
    """Inner learning rate (meta-training and meta-test)."""
    inner_steps: int | None = None
    """Inner mini-batch steps per meta-training task."""
    inner_batch: int | None = None
    """Mini-batch size of the inner loop (0 = the whole task)."""
    train_shots: int | None = None
    """Samples per class in meta-training tasks."""
    test_steps: int | None = eval_field(None, "Inner steps at meta-test.")
    """Inner steps at meta-test."""
    test_batch: int | None = eval_field(None, "Mini-batch size at meta-test (0 = all support).")
    """Mini-batch size at meta-test (0 = the whole support set)."""
    meta_step: float | None = None
    """Initial outer step size eps (annealed linearly to meta_step_final)."""
    meta_step_final: float = 0.0
    """Final outer step size."""
    meta_batch: int | None = None
    """Tasks per outer step."""
    meta_steps: int | None = None
    """Outer steps."""
    bn: Literal["support", "transductive"] = "support"
    """Batch-norm statistics for queries at meta-test (see baselines/maml.py)."""
    adam_state: Literal["run", "task"] = "run"
    """Inner Adam's second moments: 'run' = one state for the whole run, as in the paper's
    code (a single TF Adam optimiser whose slots are never reset: they carry over from task to
    task through meta-training, and meta-test adaptation starts from them and leaves them
    unchanged); 'task' = reset to zero for every task and every test episode."""

    NAME: ClassVar[str] = "reptile"
    RECIPES: ClassVar[Recipes] = REPTILE_RECIPES

    def resolved(self, spec: ScenarioSpec) -> ReptileConfig:
        """A copy with every None filled from the recipe for this scenario kind."""
        return fill_from_recipe(self, self.RECIPES, scenario_kind(spec), {"inner_opt": "adam"})

    def build(self, ctx: BuildContext) -> ReptileLearner:
        return ReptileLearner(self.resolved(ctx.spec), ctx)


ADAM_BETA2 = 0.999


def inner_train(net: Any, loss_fn: Any, p: Params, x: Tensor, y: Tensor, idx: Tensor,
                lr: float, opt: str, v: Params | None = None, t0: int = 0,
                with_state: bool = False) -> Any:
    """SGD or Adam(beta1=0) steps on mini-batches x[idx[s]]; vmap-able (no in-place ops).

    Adam starts from the second moments `v` (zeros if None) after `t0` earlier steps (its bias
    correction uses t0 + s + 1), so a caller can carry one Adam state across tasks. Returns
    the adapted parameters, or (parameters, second moments) with `with_state`.
    """
    if v is None:
        v = {k: torch.zeros_like(t) for k, t in p.items()}
    for s in range(idx.shape[0]):
        xb, yb = x[idx[s]], y[idx[s]]
        g = grad(lambda q, xb=xb, yb=yb: loss_fn(net.forward(q, xb), yb))(p)
        if opt == "sgd":
            p = {k: p[k] - lr * g[k] for k in p}
        else:
            b2, t = ADAM_BETA2, t0 + s + 1
            v = {k: b2 * v[k] + (1 - b2) * g[k] * g[k] for k in p}
            corr = math.sqrt(1 - b2 ** t)
            p = {k: p[k] - lr * corr * g[k] / (v[k].sqrt() + 1e-8) for k in p}
    return (p, v) if with_state else p


def merge_adam_state(v0: Params, v: Params, steps: int, b2: float = ADAM_BETA2) -> Params:
    """The second moments after running the tasks of a meta-batch one after another, each
    continuing the Adam state of the previous one, from v0 and the states `v` [T, ...] that
    each task reached from v0 alone (`steps` inner steps each). Exact, since v is linear in the
    squared gradients: task i's contribution v_i - b2^steps v0 decays by b2^steps per later
    task. (Only the gradients differ: a task run after others would be normalised by their
    moments too; b2^(steps * T) ~ 0.98 for the paper's 5 x 5 steps.)"""
    out = {}
    for k, v0k in v0.items():
        n = v[k].shape[0]
        w = b2 ** (steps * torch.arange(n - 1, -1, -1, dtype=v0k.dtype, device=v0k.device))
        contrib = v[k] - b2 ** steps * v0k
        out[k] = b2 ** (steps * n) * v0k + (w.reshape(-1, *[1] * v0k.ndim) * contrib).sum(0)
    return out


def batch_indices(n: int, batch: int, steps: int, g: torch.Generator | None) -> Tensor:
    """[steps, batch] indices cycling through shuffled passes over range(n) (all if batch=0)."""
    b = n if batch <= 0 or batch > n else batch
    passes = -(-steps * b // n)
    perms = [torch.randperm(n, generator=g) if g is not None else torch.arange(n)
             for _ in range(passes)]
    return torch.cat(perms)[: steps * b].reshape(steps, b)


class _Buffers(nn.Module):
    """A dict of tensors registered as buffers (saved in state_dict, moved by .to())."""

    def __init__(self, tensors: dict[str, Tensor]) -> None:
        super().__init__()
        for k, t in tensors.items():
            self.register_buffer(k, t)


class ReptileLearner(FunctionalMetaLearner):
    cfg: ReptileConfig

    def __init__(self, cfg: ReptileConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx, ctx.spec.n_outputs)
        init = self._initial_weights()
        self._register(init)
        # The inner Adam's persistent state (adam_state='run'): second moments and step count.
        self.adam_v = _Buffers({param_key(k): torch.zeros_like(v) for k, v in init.items()})
        self.register_buffer("adam_t", torch.zeros((), dtype=torch.long))
        self.to(ctx.device)
        self._adapted: Params | None = None

    def _run_state(self) -> bool:
        return self.cfg.inner_opt == "adam" and self.cfg.adam_state == "run"

    def adam_state(self) -> tuple[Params | None, int]:
        """(second moments, steps taken) to start an inner loop from: the run's persistent
        Adam state, or (None, 0) = a fresh one."""
        if not self._run_state():
            return None, 0
        return self._adam_v(), int(self.adam_t)

    def _adam_v(self) -> Params:
        return {k: getattr(self.adam_v, param_key(k)) for k in self.names}

    def _loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(out, y) if self.regression else F.cross_entropy(out, y)

    def meta_train(self, data: Any, budget: Budget, progress: Progress | None,
                   validate: Validate | None) -> MetaTrainReport:
        """Meta-train on tasks from `data.sample_batch`, resumably from a partial checkpoint
        (baselines.metakit.resumable); `validate` is not used."""
        cfg = self.cfg
        tasks = self._episodes(data)
        progress = progress or self.progress
        total = step_target(cfg.meta_steps, budget)
        limit = time_limit(cfg.time_limit_s, budget)
        g = self._task_generator()
        # The outer update is plain interpolation; an SGD optimiser with lr=1 on the
        # "gradient" (theta - mean phi) * eps keeps the resume machinery shared with MAML.
        opt = torch.optim.SGD(self.parameters(), lr=1.0)
        run = self._resumable(opt, None, g)
        step = self._meta_step(tasks, g, total)  # after the resume, which restores adam_t
        return train_steps(run, total, step, stop_after(run, limit), progress, every=50)

    def _meta_step(self, tasks: Any, g: torch.Generator, total: int) -> Callable[[int], Info]:
        """Outer step i: adapt to a meta-batch of tasks (vmapped, from one inner Adam state),
        then move the meta-weights towards the mean adapted weights by the annealed eps."""
        cfg = self.cfg
        loss_fn = self._loss
        run_state = self._run_state()
        t_run = int(self.adam_t)

        def adapt(p: Params, x: Tensor, y: Tensor, idx: Tensor, v: Params, t0: int) -> Any:
            return inner_train(self.net, loss_fn, p, x, y, idx, cfg.inner_lr, cfg.inner_opt,
                               v, t0, with_state=True)

        def step(i: int) -> Info:
            nonlocal t_run
            x, y, _, _ = tasks.sample_batch(cfg.meta_batch, g, shots=cfg.train_shots, queries=0)
            x, y = x.to(self.device), y.to(self.device)
            if self.regression:
                y = y.reshape(*y.shape[:2], -1)
            idx = torch.stack([batch_indices(x.shape[1], cfg.inner_batch, cfg.inner_steps, g)
                               for _ in range(cfg.meta_batch)]).to(self.device)
            meta = {k: v.detach() for k, v in self.meta_params().items()}
            v0 = self._adam_v() if run_state else {
                k: torch.zeros_like(t) for k, t in meta.items()}
            phi, v = vmap(partial(adapt, t0=t_run if run_state else 0),
                          in_dims=(None, 0, 0, 0, None))(meta, x, y, idx, v0)
            if run_state:  # carry the Adam state on, as if the tasks had run in sequence
                with torch.no_grad():
                    for k, t in merge_adam_state(v0, v, idx.shape[1]).items():
                        getattr(self.adam_v, param_key(k)).copy_(t)
                t_run += idx.shape[0] * idx.shape[1]
                self.adam_t.fill_(t_run)  # a Python counter: no device sync per step
            frac = i / max(total, 1)
            eps = cfg.meta_step * (1 - frac) + cfg.meta_step_final * frac
            with torch.no_grad():
                for k, p in self.meta_params().items():
                    upd = phi[k].mean(0) - p
                    if not torch.isfinite(upd).all():
                        raise DivergedError(f"reptile: non-finite update at step {i}; "
                                            "lower inner_lr")
                    p.add_(eps * upd)
            return lambda: {"eps": eps}

        return step

    def reset(self) -> None:
        self._support.clear()
        self._adapted = None

    def observe(self, x: Tensor, y: Tensor) -> None:
        """Episodic: add to the support set and re-adapt from the meta-weights (test_steps
        steps). Stream: test_steps steps on (x, y) from the current weights."""
        y = y.float().reshape(len(y), -1) if self.regression else y
        if self.spec.episodic:
            self._support.append((x, y))
            xs = torch.cat([s[0] for s in self._support])
            ys = torch.cat([s[1] for s in self._support])
            start = {k: v.detach() for k, v in self.meta_params().items()}
        else:
            self._support = [*self._support, (x, y)][-32:]
            xs, ys = x, y
            start = self._adapted or {k: v.detach() for k, v in self.meta_params().items()}
        idx = batch_indices(len(xs), self.cfg.test_batch, self.cfg.test_steps, None)
        v0, t0 = self.adam_state()  # read only: meta-test leaves the run's Adam state as is
        with torch.enable_grad():
            p = inner_train(self.net, self._loss, start, xs, ys, idx.to(xs.device),
                            self.cfg.inner_lr, self.cfg.inner_opt, v0, t0)
        self._adapted = {k: v.detach() for k, v in p.items()}

    def predict(self, x: Tensor) -> Tensor:
        p = self._adapted or {k: v.detach() for k, v in self.meta_params().items()}
        if self._support and not self.regression and self.cfg.bn == "support":
            xs = torch.cat([s[0] for s in self._support])
            return self.net.forward(p, torch.cat([xs, x]), len(xs))[len(xs):]
        return self.net.forward(p, x)

    def describe(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "backbone": c.backbone, "backbone_width": self.net.width,
            "inner_lr": c.inner_lr, "inner_opt": c.inner_opt,
            "inner_steps_train": c.inner_steps, "inner_steps_test": c.test_steps,
            "gradient_order": "none (Reptile)", "meta_batch": c.meta_batch,
            "meta_steps": c.meta_steps, "train_shots": c.train_shots,
            "transductive_bn": c.bn == "transductive" and not self.regression,
            "inner_adam_state": c.adam_state if c.inner_opt == "adam" else None,
            "ci_type": "normal 1.96*sd/sqrt(n) over episodes",
            "checkpoint_selection": "last", "recipe": c.recipe,
        }
