"""The MAML family: `maml`, `fomaml`, `maml++`, `anil`, `boil` (and the base of `sparse-maml`).

One learner class with switches; each registered id is a config class with its own defaults.
An episode is a tiny stream: `observe(support)` adapts a copy of the meta-learned weights with
`test_steps` SGD steps on all support data seen since `reset()`, and `predict(query)` answers
with the adapted weights. Meta-training differentiates through the inner loop (second order, or
first order), for a meta-batch of tasks at once under `torch.func.vmap` (docs/design.md D8).

Papers: MAML / first-order MAML (Finn, Abbeel & Levine 2017); MAML++ (Antoniou, Edwards &
Storkey 2019: multi-step loss, derivative-order annealing, per-step batch-norm weights, learned
per-layer per-step inner learning rates, cosine annealing of the meta learning rate); ANIL
(Raghu et al. 2020: only the head adapts); BOIL (Oh et al. 2021: only the body adapts).

Hyper-parameters left at None take the published value for the scenario kind (sinusoid,
Omniglot N-way, MiniImageNet) under the chosen preset (`recipe`): 'paper' is the published
recipe, 'quick' the CPU recipe (fewer meta-steps; docs/maml.md gives the measured rows).

Batch norm has no running statistics (baselines/fewshot_nets.py). `bn='transductive'` (the
papers' MAML code) normalises the query batch with its own statistics; `bn='support'` (the
default, non-transductive) normalises every query with the support set's statistics, so no
query influences another. Result rows record which (`transductive_bn`).

Checkpoint ensembling (MAML++'s test protocol, `ensemble_top` > 0): meta-training scores the
meta-weights on the scenario's validation episodes every `val_every` meta-steps and keeps copies
of the `ensemble_top` best; at test every member adapts on the support set and `predict`
returns the mean of their outputs (logits). See `MAMLLearner.meta_train` and docs/maml.md.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, vmap

from baselines.fewshot_nets import Params, head, is_head, make_backbone
from harness import checkpoint
from harness.config import (
    BuildContext,
    Progress,
    check_choice,
    check_range,
    eval_field,
    train_config_hash,
)
from harness.errors import DivergedError, HarnessError
from harness.meta import detach_params, sgd_update
from harness.protocol import Budget, Experience, ScenarioSpec
from harness.runner import run_episodes

Kind = Literal["sinusoid", "vector", "omniglot", "omniglot20", "miniimagenet"]

# Published recipes (Finn et al. 2017, Sec. 5 and App. A; Antoniou et al. 2019, Sec. 5).
# 'quick' overrides on top of 'paper'. train_queries: queries per class (points for sinusoid).
# Sinusoid inner_lr: the paper's text says 0.01, but the authors' code runs the sinusoid with
# its default update_lr of 0.001 (the command in its usage notes sets none), so 0.001 it is.
# It does not reproduce the published curve's shape (docs/maml.md, "Sinusoid regression").
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "sinusoid": dict(backbone="mlp-maml", inner_lr=0.001, inner_steps=1, test_steps=10,
                         meta_lr=1e-3, meta_batch=25, meta_steps=70000, train_queries=10,
                         bn="transductive"),
        "vector": dict(backbone="mlp", inner_lr=0.1, inner_steps=1, test_steps=5,
                       meta_lr=1e-3, meta_batch=16, meta_steps=10000, train_queries=5,
                       bn="support"),
        "omniglot": dict(backbone="conv4-stride", inner_lr=0.4, inner_steps=1, test_steps=10,
                         meta_lr=1e-3, meta_batch=32, meta_steps=60000, train_queries=0,
                         bn="transductive"),
        "omniglot20": dict(backbone="conv4-stride", inner_lr=0.1, inner_steps=5, test_steps=10,
                           meta_lr=1e-3, meta_batch=16, meta_steps=60000, train_queries=0,
                           bn="transductive"),
        "miniimagenet": dict(backbone="conv4", inner_lr=0.01, inner_steps=5, test_steps=10,
                             meta_lr=1e-3, meta_batch=4, meta_steps=60000, train_queries=15,
                             bn="transductive"),
    },
    "quick": {
        "sinusoid": dict(meta_steps=70000),
        "vector": dict(meta_steps=1000),
        "omniglot": dict(meta_steps=5000, test_steps=10, train_queries=1, bn="support"),
        "omniglot20": dict(meta_steps=2000, test_steps=10, train_queries=1, bn="support"),
        "miniimagenet": dict(meta_steps=2000, bn="support"),
    },
}
"""train_queries=0 means 'as many as shots' (MAML's Omniglot code samples K queries)."""


def fill_from_recipe(cfg: Any, recipes: dict[str, dict[str, dict[str, Any]]], kind: str,
                     defaults: dict[str, Any] | None = None) -> Any:
    """A copy of `cfg` whose None fields take the value of `recipes` for this scenario kind:
    the 'paper' entry, overridden by the entry of the config's own recipe ('quick'), then
    `defaults` for what neither sets."""
    values = {**(defaults or {}), **recipes["paper"][kind], **recipes[cfg.recipe].get(kind, {})}
    return dataclasses.replace(cfg, **{k: v for k, v in values.items()
                                       if getattr(cfg, k) is None})


def scenario_kind(spec: ScenarioSpec) -> Kind:
    """Which published recipe applies to a scenario with this spec ('vector': classification
    of flat inputs, no published recipe; an MLP with MAML's settings)."""
    if spec.task == "regression":
        return "sinusoid"
    if len(spec.input_shape) == 1:
        return "vector"
    if spec.input_shape[0] == 1:
        return "omniglot" if spec.n_outputs <= 5 else "omniglot20"
    return "miniimagenet"


@dataclass
class MAMLConfig:
    """MAML (Finn et al. 2017), second order. None = the recipe's value for the scenario."""

    SEEDED_TRAINING: ClassVar[bool] = True
    """Meta-training draws init and tasks from the run's seed: one checkpoint per seed."""

    recipe: str = "quick"
    """'quick' (CPU, minutes) or 'paper' (the published recipe); set by --preset."""
    backbone: str | None = None
    """conv4 | conv4-stride (MAML's Omniglot net) | resnet12 | mlp | mlp-maml (the sinusoid
    net with MAML's init: truncated normal std 0.01, zero biases)."""
    channels: int = 0
    """Conv channels (0 = paper default: 64 Omniglot, 32 MiniImageNet)."""
    inner_lr: float | None = None
    """Inner-loop SGD step size (alpha)."""
    inner_steps: int | None = None
    """Inner SGD steps during meta-training."""
    test_steps: int | None = eval_field(None, "Inner SGD steps at meta-test (per episode).")
    """Inner SGD steps at meta-test (per episode)."""
    meta_lr: float | None = None
    """Adam learning rate of the outer loop (beta)."""
    meta_batch: int | None = None
    """Tasks per meta-update."""
    meta_steps: int | None = None
    """Meta-updates."""
    train_queries: int | None = None
    """Query samples per class (points, for regression) in meta-training tasks (0 = shots)."""
    first_order: bool = False
    """Drop second-order terms (first-order MAML)."""
    adapt: Literal["all", "head", "body"] = "all"
    """Which parameters the inner loop adapts (ANIL: head, BOIL: body)."""
    bn: Literal["support", "transductive"] | None = None
    """Batch-norm statistics for queries: the support set's, or the query batch's own."""
    vectorize: Literal["vmap", "loop"] = "vmap"
    """Meta-batch as one torch.func.vmap call, or a per-task loop (the reference)."""
    msl_steps: int = 0
    """MAML++ multi-step loss: query loss after every inner step, annealed to the last one over
    this many meta-steps (0 = off)."""
    da_steps: int = 0
    """MAML++ derivative-order annealing: first order for this many meta-steps, then second."""
    per_step_bn: bool = False
    """MAML++ BNWB: separate batch-norm weights and biases per inner step."""
    learn_lrs: bool = False
    """MAML++ LSLR: learned inner learning rate per layer and per step."""
    cosine: bool = False
    """MAML++ cosine annealing of the meta learning rate (to meta_lr / 100)."""
    mask: Literal["none", "binary", "relu"] = "none"
    """sparse-MAML: learned mask on the inner-loop learning rates (see baselines/sparse_maml)."""
    grad_clip: float = 0.0
    """Clip the meta-gradient norm (0 = off)."""
    cuda_graph: bool = False
    """CUDA only: capture one meta-step (inner loops, meta-gradient, Adam) as a CUDA graph and
    replay it, which removes the per-kernel CPU launch cost. The same computation runs, so the
    model matches the eager run's, up to rounding (cuDNN may pick other algorithms under
    capture). MAML++'s multi-step-loss steps run eagerly; a change of gradient order
    re-captures; the cosine schedule updates a device-tensor learning rate in place. Off by
    default until its GPU check passes (docs/maml.md)."""
    time_limit_s: float = 0.0
    """Stop meta-training after this many seconds of this run (0 = no limit). The stopped run
    keeps a partial checkpoint, and the next run of the same config resumes from it; the rows
    record meta_steps_done."""
    checkpoint_every_s: float = 120.0
    """Save a resumable partial checkpoint this often during meta-training."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"recipe": "quick"}, "paper": {"recipe": "paper"}}
    NAME: ClassVar[str] = "maml"

    def __post_init__(self) -> None:
        check_choice(self, "recipe", RECIPES)
        check_range(self, "inner_lr", "meta_lr", gt=0)  # None: the recipe's value
        check_range(self, "inner_steps", "meta_batch", "meta_steps", ge=1)
        check_range(self, "test_steps", ge=0)
        check_range(self, "time_limit_s", "checkpoint_every_s", ge=0)
        if self.cuda_graph and self.vectorize != "vmap":
            raise ValueError("cuda_graph needs vectorize='vmap' (the per-task loop is the "
                             "reference); set learner.vectorize=vmap or cuda_graph=false")

    def checkpoint_key(self) -> list[str]:
        """What a meta-trained checkpoint depends on: the learner and its training fields. The
        harness keys the config `resolved` for the scenario, so editing the recipe of one
        scenario kind retrains that kind only."""
        return [self.NAME, train_config_hash(self)]

    def resolved(self, spec: ScenarioSpec) -> MAMLConfig:
        """A copy with every None filled from the recipe for this scenario kind."""
        return fill_from_recipe(self, RECIPES, scenario_kind(spec))

    def build(self, ctx: BuildContext) -> MAMLLearner:
        return MAMLLearner(self.resolved(ctx.spec), ctx)


# -- the functional core ----------------------------------------------------------------------


class MAMLLearner(nn.Module):
    """One learner for the whole family; the config's switches select the variant."""

    needs_meta_train = True
    resumed_seconds = 0.0
    """Meta-training seconds recorded by the partial checkpoint the last meta_train resumed
    from (0 when it started afresh); the harness adds them to the reported meta_train_s."""

    def __init__(self, cfg: MAMLConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg, self.spec, self.device = cfg, ctx.spec, ctx.device
        self.seed, self.resume_path = ctx.seed, getattr(ctx, "resume_path", None)
        self.progress = ctx.progress
        self.regression = ctx.spec.task == "regression"
        self.net = make_backbone(cfg.backbone, ctx.spec.input_shape, ctx.spec.n_outputs,
                                 cfg.channels)
        init = self.net.init(torch.Generator().manual_seed(int(ctx.seed)))
        n_bn_steps = max(cfg.inner_steps, cfg.test_steps or 0) + 1
        if cfg.per_step_bn:  # BNWB: one copy per step replaces the shared (unadapted) BN
            for k in [k for k in init if ".bn" in k or k.startswith("bn")]:
                for s in range(n_bn_steps):
                    init[f"{k}@{s}"] = init[k].clone()
                del init[k]
        self.n_bn_steps = n_bn_steps if cfg.per_step_bn else 0
        self.names = list(init)
        self.params = nn.ParameterDict({_key(k): nn.Parameter(v) for k, v in init.items()})
        self.adapt_keys = [k for k in self.names if "@" not in k and (
            cfg.adapt == "all" or (cfg.adapt == "head") == is_head(k))]
        if not self.adapt_keys:
            raise HarnessError(f"{cfg.NAME}: adapt={cfg.adapt!r} leaves no parameter to adapt")
        n_lr_steps = max(cfg.inner_steps, cfg.test_steps or 0)
        self.lrs = nn.ParameterDict()
        if cfg.learn_lrs:
            for k in self.adapt_keys:
                self.lrs[_key(k)] = nn.Parameter(torch.full((n_lr_steps,), cfg.inner_lr))
        self.masks = nn.ParameterDict()
        if cfg.mask != "none":
            for k in self.adapt_keys:
                self.masks[_key(k)] = nn.Parameter(torch.ones_like(init[k]))
        self.to(ctx.device)
        # Checkpoint ensembling: `ensemble_top` slots of meta-weights, beside the weights on
        # the learner's device (an episode adapts every member without a copy). They are
        # buffers, so the state dict (and with it the harness checkpoint and the partial one)
        # carries them; an empty slot has score NaN. Only maml++ has the switch (a field of
        # its config).
        self.ensemble_top = int(getattr(cfg, "ensemble_top", 0) or 0)
        if self.ensemble_top:
            k = self.ensemble_top
            self.register_buffer("ens_score", torch.full((k,), math.nan, dtype=torch.float64))
            self.register_buffer("ens_step", torch.zeros(k, dtype=torch.int64))
            self.register_buffer("ens_n_val", torch.zeros((), dtype=torch.int64))
            for i in range(k):
                for name, v in self.meta_params().items():
                    self.register_buffer(_member_key(i, name), torch.zeros_like(v))
        self._validating = False
        self._support: list[tuple[Tensor, Tensor]] = []
        self._adapted: list[Params] | None = None

    # -- pieces --------------------------------------------------------------------------

    def meta_params(self) -> Params:
        """All meta-learned tensors by name: weights, then 'lr:<name>' and 'mask:<name>'."""
        p = {k: self.params[_key(k)] for k in self.names}
        p.update({f"lr:{k}": self.lrs[_key(k)] for k in self.adapt_keys if _key(k) in self.lrs})
        p.update({f"mask:{k}": self.masks[_key(k)] for k in self.adapt_keys
                  if _key(k) in self.masks})
        return p

    def members(self) -> list[Params]:
        """The ensemble's meta-weights, in slot order; [] when not ensembling or before the
        first validation."""
        if not self.ensemble_top:
            return []
        names = list(self.meta_params())
        return [{n: getattr(self, _member_key(i, n)) for n in names}
                for i in range(self.ensemble_top) if not math.isnan(self.ens_score[i])]

    def _bases(self) -> list[Params]:
        """The weights an episode adapts from: the ensemble's members once it holds any
        (except while meta-training validates the current weights), else the meta-weights."""
        held = [] if self._validating else self.members()
        return held or [detach_params(self.meta_params())]

    def _lr(self, meta: Params, step: int) -> dict[str, Tensor | float]:
        """Per-parameter scalar inner lr at `step` (LSLR: learned; steps past the learned
        ones reuse the last)."""
        if not self.cfg.learn_lrs:
            return {k: self.cfg.inner_lr for k in self.adapt_keys}
        return {k: meta[f"lr:{k}"][min(step, len(meta[f"lr:{k}"]) - 1)]
                for k in self.adapt_keys}

    def _masked(self, meta: Params, g: Params) -> Params:
        """sparse-MAML: the gradient gated by the learned mask (= a masked learning rate)."""
        if self.cfg.mask == "none":
            return g
        return {k: v * mask_values(meta[f"mask:{k}"], self.cfg.mask) for k, v in g.items()}

    def _bn_step(self, step: int) -> int | None:
        return min(step, self.n_bn_steps - 1) if self.n_bn_steps else None

    def _loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(out, y) if self.regression else F.cross_entropy(out, y)

    def _score(self, out: Tensor, y: Tensor) -> Tensor:
        if self.regression:
            return F.mse_loss(out, y)
        return (out.argmax(-1) == y).float().mean()

    def _query_out(self, p: Params, xs: Tensor, xq: Tensor, step: int) -> Tensor:
        """Query outputs with weights p; BN statistics from the support set or the queries."""
        st = self._bn_step(step)
        if self.regression or self.cfg.bn == "transductive":
            return self.net.forward(p, xq, None, st)
        n = xs.shape[0]
        return self.net.forward(p, torch.cat([xs, xq]), n, st)[n:]

    def _query_features(self, p: Params, xs: Tensor, xq: Tensor) -> Tensor:
        if self.regression or self.cfg.bn == "transductive":
            return self.net.features(p, xq)
        n = xs.shape[0]
        return self.net.features(p, torch.cat([xs, xq]), n)[n:]

    def adapt(self, meta: Params, xs: Tensor, ys: Tensor, steps: int, second_order: bool,
              functional: bool = True, xq: Tensor | None = None, yq: Tensor | None = None,
              loss_weights: list[float] | None = None) -> tuple[Params, Tensor]:
        """`steps` inner SGD steps on (xs, ys) from `meta`; returns the adapted weights and the
        (weighted multi-step) query loss when (xq, yq) are given (else 0).

        functional=True takes inner gradients with torch.func.grad (vmap-able); False with
        torch.autograd.grad (the per-task reference loop).
        """
        p = meta
        qloss = xs.new_zeros(())
        # ANIL: the body does not change, so its features are computed once per task.
        head_only = self.cfg.adapt == "head" and not self.n_bn_steps
        fs = self.net.features(meta, xs) if head_only else None
        fq = self._query_features(meta, xs, xq) if head_only and xq is not None else None

        def query_out(p: Params, step: int) -> Tensor:
            return head(p, fq) if head_only else self._query_out(p, xs, xq, step)

        for s in range(steps):
            st = self._bn_step(s)

            def support_loss(sub: Params, p: Params = p, st: int | None = st) -> Tensor:
                if head_only:
                    return self._loss(head({**p, **sub}, fs), ys)
                return self._loss(self.net.forward({**p, **sub}, xs, None, st), ys)

            sub = {k: p[k] for k in self.adapt_keys}
            if functional:
                g = grad(support_loss)(sub)
                if not second_order:
                    g = detach_params(g)
            else:
                gl = torch.autograd.grad(support_loss(sub), list(sub.values()),
                                         create_graph=second_order)
                g = dict(zip(sub, gl, strict=True))
            p = {**p, **sgd_update(sub, self._masked(meta, g), self._lr(meta, s))}
            if loss_weights is not None and xq is not None and s < steps - 1 \
                    and loss_weights[s] > 0:
                qloss = qloss + loss_weights[s] * self._loss(query_out(p, s + 1), yq)
        if xq is not None:
            w = 1.0 if loss_weights is None else loss_weights[-1]
            out = query_out(p, steps)
            return p, (qloss + w * self._loss(out, yq), self._score(out, yq))
        return p, qloss

    def task_loss(self, meta: Params, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor,
                  second_order: bool, loss_weights: list[float] | None,
                  functional: bool = True) -> tuple[Tensor, Tensor]:
        """Query loss and score of one task after the inner loop (vmap over this)."""
        _, (loss, score) = self.adapt(meta, xs, ys, self.cfg.inner_steps, second_order,
                                      functional, xq, yq, loss_weights)
        return loss, score

    def meta_batch_loss(self, xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor,
                        second_order: bool, loss_weights: list[float] | None = None,
                        vectorize: str | None = None) -> tuple[Tensor, Tensor]:
        """Mean query loss and score over a meta-batch (leading task dim)."""
        meta = self.meta_params()
        if (vectorize or self.cfg.vectorize) == "vmap":
            def one(xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> tuple[Tensor, Tensor]:
                return self.task_loss(meta, xs, ys, xq, yq, second_order, loss_weights)

            losses, scores = vmap(one)(xs, ys, xq, yq)
            return losses.mean(), scores.mean()
        losses, scores = zip(*[self.task_loss(meta, *t, second_order, loss_weights,
                                              functional=False)
                               for t in zip(xs, ys, xq, yq, strict=True)], strict=True)
        return torch.stack(losses).mean(), torch.stack(scores).mean()

    def msl_weights(self, step: int) -> list[float] | None:
        """MAML++ multi-step-loss importance (Antoniou et al. 2019, code): uniform at first,
        annealed towards the final step over `msl_steps` meta-steps (epochs of 500 there)."""
        n, total = self.cfg.inner_steps, self.cfg.msl_steps
        if not total or n == 1 or step >= total:
            return None
        frac = step / total
        floor = 0.03 / n
        w = [max(1.0 / n - frac / n, floor) for _ in range(n - 1)]
        w.append(1.0 - sum(w))
        return w

    # -- meta-training ---------------------------------------------------------------------

    def meta_train(self, tasks: Any, budget: Budget, progress: Progress | None,
                   val_episodes: Sequence[Experience] | None = None) -> None:
        """Meta-train on tasks from `tasks.sample_batch`; resumable from a partial checkpoint.

        `val_episodes`: the scenario's validation episodes (`val_experiences`), which the
        harness passes to a meta_train that takes this keyword. They are used only when
        ensembling (`ensemble_top` > 0): after every `val_every` meta-steps, and after the last
        one, the current meta-weights are scored on them and offered to the ensemble
        (`keep_if_best`). Validation runs eagerly between meta-steps, outside any CUDA graph,
        and draws nothing from the task sampler's generator, so the meta-weights are those of a
        run without ensembling. The partial checkpoint carries the members and their scores
        (they are buffers), so a resumed run keeps the same ensemble as an uninterrupted one.
        """
        cfg = self.cfg
        if not hasattr(tasks, "sample_batch"):
            raise HarnessError(f"{cfg.NAME} needs an episodic scenario (its meta_train must "
                               "provide sample_batch); this one gives "
                               f"{type(tasks).__name__}")
        if self.ensemble_top and not val_episodes:
            raise HarnessError(f"{cfg.NAME}: ensemble_top={self.ensemble_top} picks checkpoints "
                               "on validation episodes, but none were given; set the "
                               "scenario's val_episodes > 0 or learner.ensemble_top=0")
        progress = progress or self.progress
        total = cfg.meta_steps
        if budget.steps:
            total = min(total, budget.steps)
        limit = min(x for x in (cfg.time_limit_s, budget.seconds, math.inf) if x > 0)
        g = torch.Generator().manual_seed(int(self.seed) + 7919)
        on_cuda = torch.device(self.device).type == "cuda"
        if cfg.cuda_graph and not on_cuda:
            raise HarnessError(f"{cfg.NAME}: cuda_graph needs --device cuda (got "
                               f"{self.device}); drop cuda_graph=true on this device")
        graphs = cfg.cuda_graph
        # Capturable Adam (its step count on the GPU) on any CUDA run, so that an eager run and
        # a graphed one do the same arithmetic. Graphed, the learning rate is a device tensor,
        # which the cosine schedule fills in place, so the captured Adam step reads it.
        lr = torch.tensor(cfg.meta_lr, device=self.device) if graphs else cfg.meta_lr
        opt = torch.optim.Adam(self.parameters(), lr=lr, capturable=on_cuda)
        sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, total, cfg.meta_lr / 100)
                 if cfg.cosine else None)
        run = ResumableRun(self, opt, sched, g, self.resume_path, cfg.checkpoint_every_s)
        self.resumed_seconds = run.seconds_before
        start = run.start
        shots = getattr(tasks, "shots", 1)
        queries = cfg.train_queries or shots

        def update(batch: list[Tensor], second: bool, w: list[float] | None
                   ) -> tuple[Tensor, Tensor]:
            opt.zero_grad(set_to_none=True)
            loss, score = self.meta_batch_loss(*batch, second, w)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.parameters(), cfg.grad_clip)
            opt.step()
            return loss.detach(), score.detach()

        graph: GraphedStep | None = None
        for step in range(start, total):
            batch = [t.to(self.device) for t in
                     tasks.sample_batch(cfg.meta_batch, g, queries=queries)]
            second = not cfg.first_order and step >= cfg.da_steps
            w = self.msl_weights(step)
            if graphs and w is None:
                if graph is None or graph.second != second:
                    graph = GraphedStep(update, opt, batch, second)
                loss, score = graph(batch)
            else:
                loss, score = update(batch, second, w)
            if not torch.isfinite(loss):
                raise DivergedError(f"{cfg.NAME}: meta-training loss is {loss.item()} at "
                                    f"step {step}; lower meta_lr or inner_lr")
            if sched is not None:
                sched.step()
            if progress is not None and (step % 10 == 0 or step == total - 1):
                progress("meta-train", step + 1, total,
                         {"loss": float(loss), "mse" if self.regression else "acc": float(score)})
            if self.ensemble_top and ((step + 1) % cfg.val_every == 0 or step + 1 == total):
                self.ens_n_val.fill_(len(val_episodes))
                val = self.validation_score(val_episodes)
                self.keep_if_best(val, step + 1)
                if progress is not None:
                    progress("validation", step + 1, total,
                             {"val_mse": -val} if self.regression else {"val_acc": val})
            if run.step_done(step + 1) > limit:
                break
        self.meta_steps_done = run.steps  # fewer than meta_steps where a time limit stopped it
        self.meta_train_complete = run.finish(total)

    def validation_score(self, episodes: Sequence[Experience]) -> float:
        """Score of the current meta-weights on `episodes`, run as the scored episodes are
        (harness.runner.run_episodes, `test_steps` inner steps): the mean accuracy, or minus
        the mean MSE for regression (higher is better). A diverging episode scores -inf."""
        self._validating = True
        try:
            scores = run_episodes(self, episodes, self.spec, device=str(self.device)).scores
        except DivergedError:
            return -math.inf
        finally:
            self._validating = False
            self.reset()
        mean = float(scores.mean())
        return -mean if self.regression else mean

    def keep_if_best(self, score: float, step: int) -> bool:
        """Offer the current meta-weights, with validation `score` after `step` meta-steps, to
        the ensemble: they fill an empty slot, or replace the worst member if they score at
        least as well (a tie goes to the later checkpoint, as a reversed stable sort of the
        scores, the authors' pick of the top-n, would have it). Non-finite scores are never
        kept. Returns whether they were."""
        if not math.isfinite(score):
            return False
        scores = self.ens_score
        empty = torch.isnan(scores)
        if empty.any():
            slot = int(empty.nonzero()[0])
        else:
            worst = scores.min()
            if score < worst:
                return False
            tied = (scores == worst).nonzero().flatten()
            slot = int(tied[self.ens_step[tied].argmin()])  # the earliest of the worst
        with torch.no_grad():
            for name, v in self.meta_params().items():
                getattr(self, _member_key(slot, name)).copy_(v.detach())
        scores[slot] = score
        self.ens_step[slot] = step
        return True

    # -- the episode protocol -----------------------------------------------------------------

    def reset(self) -> None:
        """Back to the meta-learned weights (forget the current episode's support)."""
        self._support.clear()
        self._adapted = None

    def observe(self, x: Tensor, y: Tensor) -> None:
        """Episodic: add (x, y) to the support set and re-adapt from the meta-learned weights
        on all of it. Stream (non-episodic scenario): `test_steps` steps on (x, y) from the
        current weights (online fine-tuning from the meta-learned init). With an ensemble,
        every member adapts (`_bases`)."""
        y = y.float().reshape(len(y), -1) if self.regression else y
        bases = self._bases()
        if self.spec.episodic:
            self._support.append((x, y))
            starts = bases
        else:  # bounded reference set for batch-norm statistics
            self._support = [*self._support, (x, y)][-REF_BATCHES:]
            starts = [{**a, **{k: v for k, v in b.items() if ":" in k}}
                      for a, b in zip(self._adapted or bases, bases, strict=True)]
        xs = x if not self.spec.episodic else torch.cat([s[0] for s in self._support])
        ys = y if not self.spec.episodic else torch.cat([s[1] for s in self._support])
        with torch.enable_grad():
            self._adapted = [detach_params(self.adapt(start, xs, ys, self.cfg.test_steps,
                                                      second_order=False)[0])
                             for start in starts]

    def predict(self, x: Tensor) -> Tensor:
        """Outputs for queries `x` with the adapted weights (the meta weights before observe).
        An ensemble answers with the mean of its members' outputs (logits for classification),
        as the MAML++ authors average the top models' logits."""
        adapted = self._adapted is not None
        steps = self.cfg.test_steps if adapted else 0
        xs = torch.cat([s[0] for s in self._support]) if self._support else None
        outs = [self._query_out(p, xs, x, steps) if xs is not None
                else self.net.forward(p, x, None, self._bn_step(steps))
                for p in (self._adapted if adapted else self._bases())]
        return outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)

    def describe(self) -> dict[str, Any]:
        """Provenance columns for every result row."""
        c = self.cfg
        order = "first" if c.first_order else (
            f"first for {c.da_steps} steps, then second" if c.da_steps else "second")
        return {
            "backbone": c.backbone, "backbone_width": self.net.width,
            "inner_lr": c.inner_lr, "inner_steps_train": c.inner_steps,
            "inner_steps_test": c.test_steps, "gradient_order": order,
            "adapted_params": c.adapt, "meta_batch": c.meta_batch, "meta_steps": c.meta_steps,
            "train_queries_per_class": c.train_queries or "shots",
            "transductive_bn": c.bn == "transductive" and not self.regression,
            "ci_type": "normal 1.96*sd/sqrt(n) over episodes",
            "checkpoint_selection": self.checkpoint_selection(), "recipe": c.recipe,
            "vectorize": c.vectorize,
        }

    def checkpoint_selection(self) -> str:
        """Which meta-weights answer at test, for the result rows."""
        k = self.ensemble_top
        if not k:
            return "last"
        steps = sorted(int(s) for s, v in zip(self.ens_step, self.ens_score, strict=True)
                       if not math.isnan(v))
        if not steps:
            return f"last (ensemble of top-{k} asked, but no validation was reached)"
        what = "MSE" if self.regression else "accuracy"
        return (f"ensemble of top-{k} by val {what} (every {self.cfg.val_every} steps, "
                f"{int(self.ens_n_val)} val episodes; members from step"
                f"{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))})")


REF_BATCHES = 32
"""Stream mode: batch-norm statistics come from the last this-many observed batches."""


def mask_values(m: Tensor, kind: str) -> Tensor:
    """sparse-MAML masks: 'binary' = 1[m > 0] with a straight-through gradient (identity);
    'relu' = max(m, 0) (continuous, sparse-ReLU-MAML)."""
    if kind == "relu":
        return F.relu(m)
    hard = (m > 0).to(m.dtype)
    return hard + (m - m.detach())


def _key(name: str) -> str:
    # nn.ParameterDict keys may not contain '.'.
    return name.replace(".", "/")


def _member_key(slot: int, name: str) -> str:
    """Buffer (and state-dict) name of ensemble slot `slot`'s copy of meta-parameter `name`."""
    return f"ens{slot}/{_key(name)}"


def bn_cancelled(state_key: str) -> bool:
    """A conv bias (state key 'params.convI/bias' of a MAML-family or Reptile learner) that the
    batch norm right after it cancels. Its true meta-gradient is zero, so Adam turns rounding
    noise into full-size steps there: two runs that round differently (vmap against a task loop,
    a CUDA graph against eager kernels, a resumed run) differ in these entries without computing
    a different function. Comparisons of trained weights leave them out."""
    return state_key.startswith("params.conv") and state_key.endswith("/bias")


class GraphedStep:
    """One meta-update captured as a CUDA graph (whole-step capture, as in PyTorch's CUDA-graph
    notes). `update(batch, second, None)` runs three times on a side stream first to warm up
    (cuDNN workspaces, the allocator); those would be three extra updates, so the weights and
    the Adam state are put back afterwards, in place. Then one call is captured on static input
    tensors. Calling the object copies a batch into them and replays the graph: the weights and
    Adam state update in place, and the loss and score land in static outputs."""

    def __init__(self, update: Any, opt: torch.optim.Optimizer, batch: list[Tensor],
                 second: bool) -> None:
        self.second = second
        self.static = [t.clone() for t in batch]
        params = [p for group in opt.param_groups for p in group["params"]]
        before = {p: (p.detach().clone(),
                      {k: v.clone() for k, v in opt.state.get(p, {}).items()})
                  for p in params}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                update(self.static, second, None)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for p, (value, state) in before.items():
                p.copy_(value)
                for k, v in opt.state.get(p, {}).items():
                    if k in state:
                        v.copy_(state[k])
                    else:  # no state before the warm-up: a fresh Adam's zeros
                        v.zero_()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss, self.score = update(self.static, second, None)

    def __call__(self, batch: list[Tensor]) -> tuple[Tensor, Tensor]:
        for dst, src in zip(self.static, batch, strict=True):
            dst.copy_(src)
        self.graph.replay()
        return self.loss, self.score


# -- resumable meta-training ------------------------------------------------------------------


def save_partial(model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
                 g: torch.Generator, step: int, path: Any, elapsed_s: float = 0.0) -> None:
    """Model, Adam state, scheduler position and sampler RNG as a safetensors checkpoint; the
    JSON beside it records the step and the meta-training seconds spent so far."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                tensors[f"opt.{names[id(p)]}.{k}"] = torch.as_tensor(v)
    tensors["rng"] = g.get_state()
    checkpoint.save(path, tensors, {"step": step,
                                    "sched": sched.last_epoch if sched is not None else 0,
                                    "elapsed_s": elapsed_s})


def resume(model: nn.Module, opt: torch.optim.Optimizer, sched: Any, g: torch.Generator,
           path: Any) -> tuple[int, float]:
    """Restore a partial checkpoint written by `save_partial`; returns the step to start at
    and the seconds the interrupted run(s) had spent ((0, 0.0) without a checkpoint)."""
    if path is None or not checkpoint.exists(path):
        return 0, 0.0
    tensors, meta = checkpoint.load(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    by_name = dict(model.named_parameters())
    # Adam keeps its moments on the parameters' device, and its step count there only when
    # capturable (CUDA graphs); the checkpoint holds them all on the CPU.
    on_device = opt.defaults.get("capturable", False)
    for k, v in tensors.items():
        if k.startswith("opt."):
            name, _, field = k[4:].rpartition(".")
            param = by_name[name]
            move = field != "step" or on_device
            opt.state[param][field] = v.to(param.device) if move else v.clone()
    g.set_state(tensors["rng"])
    if sched is not None:
        # Fast-forward the schedule; torch warns that no optimizer step came first, which is
        # the point here (the optimizer state was restored above).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step")
            for _ in range(int(meta.get("sched", 0))):
                sched.step()
    return int(meta["step"]), float(meta.get("elapsed_s", 0.0))


class ResumableRun:
    """The partial-checkpoint bookkeeping of one meta-training call (MAML family, Reptile,
    ProtoNets): restores the checkpoint at `path` if there is one, saves one every `every_s`
    seconds, and carries the seconds of the interrupted runs, so that a resumed run can report
    its total. `path` None: nothing is restored or saved."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
                 g: torch.Generator, path: Any, every_s: float) -> None:
        self.model, self.opt, self.sched, self.g = model, opt, sched, g
        self.path, self.every_s = path, every_s
        # The step to start at, and the seconds the interrupted runs spent (0 unless resumed).
        self.start, self.seconds_before = resume(model, opt, sched, g, path)
        # Meta-steps done in all so far (the learner's `meta_steps_done` when it stops).
        self.steps = self.start
        self.t0 = self.last_save = time.perf_counter()

    def step_done(self, steps: int) -> float:
        """Call after each step (`steps` done in all); saves when one is due. Returns the
        seconds of this call so far (for its time limit)."""
        now = time.perf_counter()
        self.steps = steps
        if self.path is not None and now - self.last_save > self.every_s:
            save_partial(self.model, self.opt, self.sched, self.g, steps, self.path,
                         self.seconds_before + now - self.t0)
            self.last_save = now
        return now - self.t0

    def finish(self, total: int) -> bool:
        """Training stopped after `self.steps` of `total` steps. Complete: remove the partial
        checkpoint. Stopped early (a time limit): save it, so that the next run with the same
        config resumes here instead of starting over. Returns whether training is complete."""
        if self.path is None:
            return self.steps >= total
        if self.steps < total:
            save_partial(self.model, self.opt, self.sched, self.g, self.steps, self.path,
                         self.seconds_before + time.perf_counter() - self.t0)
            return False
        for p in (self.path, self.path.with_suffix(".json")):
            p.unlink(missing_ok=True)
        return True


# -- the registered variants --------------------------------------------------------------------


@dataclass
class FOMAMLConfig(MAMLConfig):
    """First-order MAML (Finn et al. 2017, Sec. 5.2): second-order terms dropped."""

    first_order: bool = True
    NAME: ClassVar[str] = "fomaml"


@dataclass
class ANILConfig(MAMLConfig):
    """ANIL (Raghu et al. 2020): the inner loop adapts only the classifier head."""

    adapt: Literal["all", "head", "body"] = "head"
    NAME: ClassVar[str] = "anil"


@dataclass
class BOILConfig(MAMLConfig):
    """BOIL (Oh et al. 2021): the inner loop adapts only the body; the head is frozen."""

    adapt: Literal["all", "head", "body"] = "body"
    NAME: ClassVar[str] = "boil"


PLUS_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "*": dict(meta_steps=75000, msl_steps=5000, da_steps=25000, ensemble_top=5,
                  inner_lr=0.1, cosine=True),
        # The authors' Omniglot configs (experiment_config/omniglot_maml++-omniglot_1_8_0.1_64_
        # {5,20}_0.json): batch_size 8, 100 epochs x 500 iterations, multi-step loss for 10
        # epochs, first_order_to_second_order_epoch -1 (second order from the start),
        # max_pooling true (conv4, not MAML's strided conv4).
        "omniglot": dict(backbone="conv4", meta_batch=8, meta_steps=50000, da_steps=0),
        "omniglot20": dict(backbone="conv4", meta_batch=8, meta_steps=50000, da_steps=0),
        # Their MiniImageNet configs (experiment_config/mini-imagenet_maml++-mini-imagenet_
        # {1,5}_2_0.01_48_5_0.json): batch_size 2, 48 filters, init inner lr 0.01, 100 epochs,
        # multi-step loss for 15 epochs, second order from the start, 15 target samples, and
        # min_learning_rate = meta_learning_rate (0.001), i.e. no annealing of the meta lr.
        "miniimagenet": dict(backbone="conv4", channels=48, meta_batch=2, meta_steps=50000,
                             msl_steps=7500, da_steps=0, inner_lr=0.01, cosine=False),
    },
    "quick": {
        "*": dict(msl_steps=500, da_steps=500, ensemble_top=0, inner_lr=0.1, cosine=True),
        "miniimagenet": dict(channels=48, inner_lr=0.01, cosine=False),
    },
}
"""MAML++'s own recipe values, by recipe and scenario kind ('*': every kind), applied before
MAML's RECIPES (which fill what these leave unset; `channels` counts as unset at 0). 'quick'
keeps MAML's CPU recipe with the multi-step loss and the first-order phase over 500 steps, and
no ensembling, with MAML++'s inner lr, schedule and width."""


@dataclass
class MAMLPlusPlusConfig(MAMLConfig):
    """MAML++ (Antoniou et al. 2019) with all five fixes on (each one a switch).

    Paper recipe: 5 inner steps at train and test, inner lr 0.1, MSL annealed over the first
    10 epochs (5,000 steps), cosine annealing, and at test the ensemble of the 5 checkpoints
    with the best validation accuracy (one checkpoint per epoch of 500 steps). The authors'
    configs (PLUS_RECIPES) train 50,000 steps, second order throughout, with a max-pooling
    conv4: on Omniglot 8 tasks per meta-batch; on MiniImageNet 2 tasks, 48 channels, inner lr
    0.01, MSL over 7,500 steps and a constant meta lr. Other scenarios: first order for the
    first 50 epochs (25,000 steps), as the paper describes derivative-order annealing, and
    75,000 steps. BNRS (per-step running
    statistics) is replaced by per-step batch statistics: the nets here keep no running
    statistics.
    """

    inner_steps: int | None = 5
    test_steps: int | None = eval_field(5, "Inner SGD steps at meta-test.")
    inner_lr: float | None = None
    """Initial inner lr, learned per layer and step (None = the recipe's: 0.1, 0.01 on
    MiniImageNet)."""
    msl_steps: int | None = None
    """Multi-step loss annealed over this many meta-steps (None = the recipe's: 5,000 paper,
    500 quick)."""
    da_steps: int | None = None
    """First order for this many meta-steps (None = the recipe's: 0 on Omniglot, 25,000 on
    other scenarios, 500 quick)."""
    per_step_bn: bool = True
    learn_lrs: bool = True
    cosine: bool | None = None
    """Cosine annealing of the meta lr (None = the recipe's: on, off on MiniImageNet, where
    the authors' minimum lr equals the meta lr)."""
    ensemble_top: int | None = None
    """Test with the ensemble of this many meta-weights, the best on the scenario's validation
    episodes (0 = the last meta-weights). None = the recipe's: 5 paper, 0 quick."""
    val_every: int = 500
    """Meta-steps between validations when ensembling (the authors' epoch: 500 iterations);
    the last meta-step is always validated too."""
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"recipe": "quick"}, "paper": {"recipe": "paper"}}
    NAME: ClassVar[str] = "maml++"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "msl_steps", "da_steps", "ensemble_top", ge=0)
        check_range(self, "val_every", ge=1)

    def resolved(self, spec: ScenarioSpec) -> MAMLPlusPlusConfig:
        """PLUS_RECIPES for this recipe and scenario kind, then MAML's RECIPES."""
        table = PLUS_RECIPES[self.recipe]
        kind = scenario_kind(spec)
        values = {**table["*"], **table.get(kind, {})}
        own = dataclasses.replace(self, **{k: v for k, v in values.items()
                                           if getattr(self, k) is None
                                           or (k == "channels" and not self.channels)})
        return fill_from_recipe(own, RECIPES, kind)
