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
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, vmap

from baselines.fewshot_nets import Params, make_backbone
from baselines.maml import ResumableRun, _key, fill_from_recipe, scenario_kind
from harness.config import (
    BuildContext,
    Progress,
    check_choice,
    check_range,
    eval_field,
    train_config_hash,
)
from harness.errors import DivergedError, HarnessError
from harness.protocol import Budget, ScenarioSpec

RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {  # Nichol et al. 2018, App. A (Omniglot / MiniImageNet); sinusoid: Sec. 5.1
        "omniglot": dict(backbone="conv4-stride", inner_lr=1e-3, inner_steps=5, inner_batch=10,
                         train_shots=10, test_steps=50, test_batch=5, meta_step=1.0,
                         meta_batch=5, meta_steps=100000),
        "omniglot20": dict(backbone="conv4-stride", inner_lr=5e-4, inner_steps=10,
                           inner_batch=20, train_shots=10, test_steps=50, test_batch=10,
                           meta_step=1.0, meta_batch=5, meta_steps=200000),
        "miniimagenet": dict(backbone="conv4", inner_lr=1e-3, inner_steps=8, inner_batch=10,
                             train_shots=15, test_steps=50, test_batch=10, meta_step=1.0,
                             meta_batch=5, meta_steps=100000),
        "sinusoid": dict(backbone="mlp", inner_lr=0.02, inner_steps=32, inner_batch=10,
                         train_shots=50, test_steps=10, test_batch=0, meta_step=0.1,
                         meta_batch=1, meta_steps=30000, inner_opt="sgd"),
        "vector": dict(backbone="mlp", inner_lr=1e-3, inner_steps=5, inner_batch=10,
                       train_shots=10, test_steps=20, test_batch=0, meta_step=1.0,
                       meta_batch=5, meta_steps=3000),
    },
    "quick": {
        "omniglot": dict(meta_steps=10000, test_steps=50),  # ~18 min on one thread: MAML's budget
        "omniglot20": dict(meta_steps=6000),
        "miniimagenet": dict(meta_steps=3000),
        "sinusoid": dict(meta_steps=10000),
        "vector": dict(meta_steps=1000),
    },
}


@dataclass
class ReptileConfig:
    """Reptile. None = the recipe's value for the scenario kind."""

    SEEDED_TRAINING: ClassVar[bool] = True
    """Meta-training draws init and tasks from the run's seed: one checkpoint per seed."""

    recipe: str = "quick"
    """'quick' (CPU) or 'paper'; set by --preset."""
    backbone: str | None = None
    """conv4 | conv4-stride | resnet12 | mlp."""
    channels: int = 0
    """Conv channels (0 = paper default)."""
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
    time_limit_s: float = 0.0
    """Stop meta-training after this many seconds of this run (0 = no limit). The stopped run
    keeps a partial checkpoint, and the next run of the same config resumes from it; the rows
    record meta_steps_done."""
    checkpoint_every_s: float = 120.0
    """Partial-checkpoint interval during meta-training."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"recipe": "quick"}, "paper": {"recipe": "paper"}}
    NAME: ClassVar[str] = "reptile"

    def __post_init__(self) -> None:
        check_choice(self, "recipe", RECIPES)
        check_range(self, "time_limit_s", "checkpoint_every_s", ge=0)

    def resolved(self, spec: ScenarioSpec) -> ReptileConfig:
        return fill_from_recipe(self, RECIPES, scenario_kind(spec), {"inner_opt": "adam"})

    def checkpoint_key(self) -> list[str]:
        """The learner and its training fields, of the resolved config (see baselines/maml.py)."""
        return ["reptile", train_config_hash(self)]

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


class ReptileLearner(nn.Module):
    needs_meta_train = True
    resumed_seconds = 0.0
    """Meta-training seconds carried over from a partial checkpoint (see MAMLLearner)."""

    def __init__(self, cfg: ReptileConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg, self.spec, self.device, self.seed = cfg, ctx.spec, ctx.device, ctx.seed
        self.resume_path = getattr(ctx, "resume_path", None)
        self.progress = ctx.progress
        self.regression = ctx.spec.task == "regression"
        self.net = make_backbone(cfg.backbone, ctx.spec.input_shape, ctx.spec.n_outputs,
                                 cfg.channels)
        init = self.net.init(torch.Generator().manual_seed(int(ctx.seed)))
        self.names = list(init)
        self.params = nn.ParameterDict({_key(k): nn.Parameter(v) for k, v in init.items()})
        # The inner Adam's persistent state (adam_state='run'): second moments and step count.
        self.adam_v = _Buffers({_key(k): torch.zeros_like(v) for k, v in init.items()})
        self.register_buffer("adam_t", torch.zeros((), dtype=torch.long))
        self.to(ctx.device)
        self._support: list[tuple[Tensor, Tensor]] = []
        self._adapted: Params | None = None

    def meta_params(self) -> Params:
        return {k: self.params[_key(k)] for k in self.names}

    def _run_state(self) -> bool:
        return self.cfg.inner_opt == "adam" and self.cfg.adam_state == "run"

    def adam_state(self) -> tuple[Params | None, int]:
        """(second moments, steps taken) to start an inner loop from: the run's persistent
        Adam state, or (None, 0) = a fresh one."""
        if not self._run_state():
            return None, 0
        return self._adam_v(), int(self.adam_t)

    def _adam_v(self) -> Params:
        return {k: getattr(self.adam_v, _key(k)) for k in self.names}

    def _loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(out, y) if self.regression else F.cross_entropy(out, y)

    def meta_train(self, tasks: Any, budget: Budget, progress: Progress | None) -> None:
        cfg = self.cfg
        if not hasattr(tasks, "sample_batch"):
            raise HarnessError("reptile needs an episodic scenario (meta_train.sample_batch)")
        progress = progress or self.progress
        total = min(cfg.meta_steps, budget.steps) if budget.steps else cfg.meta_steps
        limit = min(x for x in (cfg.time_limit_s, budget.seconds, math.inf) if x > 0)
        g = torch.Generator().manual_seed(int(self.seed) + 7919)
        # The outer update is plain interpolation; an SGD optimiser with lr=1 on the
        # "gradient" (theta - mean phi) * eps keeps the resume machinery shared with MAML.
        opt = torch.optim.SGD(self.parameters(), lr=1.0)
        run = ResumableRun(self, opt, None, g, self.resume_path, cfg.checkpoint_every_s)
        self.resumed_seconds = run.seconds_before
        loss_fn = self._loss
        run_state = self._run_state()
        t_run = int(self.adam_t)  # after the resume, which restores it

        def adapt(p: Params, x: Tensor, y: Tensor, idx: Tensor, v: Params, t0: int) -> Any:
            return inner_train(self.net, loss_fn, p, x, y, idx, cfg.inner_lr, cfg.inner_opt,
                               v, t0, with_state=True)

        for step in range(run.start, total):
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
                        getattr(self.adam_v, _key(k)).copy_(t)
                t_run += idx.shape[0] * idx.shape[1]
                self.adam_t.fill_(t_run)  # a Python counter: no device sync per step
            frac = step / max(total, 1)
            eps = cfg.meta_step * (1 - frac) + cfg.meta_step_final * frac
            with torch.no_grad():
                for k, p in self.meta_params().items():
                    upd = phi[k].mean(0) - p
                    if not torch.isfinite(upd).all():
                        raise DivergedError(f"reptile: non-finite update at step {step}; "
                                            "lower inner_lr")
                    p.add_(eps * upd)
            if progress is not None and (step % 50 == 0 or step == total - 1):
                progress("meta-train", step + 1, total, {"eps": eps})
            if run.step_done(step + 1) > limit:
                break
        self.meta_steps_done = run.steps
        self.meta_train_complete = run.finish(total)

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
