"""The MAML family: `maml`, `fomaml`, `anil`, `boil`, and the base of `maml++`
(baselines/maml_pp.py) and `sparse-maml` (baselines/sparse_maml.py).

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
recipe, 'quick' the CPU recipe (fewer meta-steps; docs/maml.md gives the measured rows). The
tables are `MAML_RECIPES` in baselines/metakit/recipes.py.

Batch norm has no running statistics (baselines/networks/functional.py). `bn='transductive'`
(the papers' MAML code) normalises the query batch with its own statistics; `bn='support'`
(the default, non-transductive) normalises every query with the support set's statistics, so
no query influences another. Result rows record which (`transductive_bn`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import grad, vmap

from baselines import maml_training
from baselines.metakit.configs import RecipeConfig
from baselines.metakit.learner import FunctionalMetaLearner, param_key
from baselines.metakit.recipes import MAML_RECIPES, Recipes
from baselines.networks.functional import Params, head, is_head
from harness.capabilities import MetaTrainReport, Validate
from harness.config import BuildContext, Progress, check_range, eval_field
from harness.errors import HarnessError
from harness.meta import detach_params, sgd_update
from harness.protocol import Budget


@dataclass
class MAMLConfig(RecipeConfig):
    """MAML (Finn et al. 2017), second order. None = the recipe's value for the scenario."""

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

    NAME: ClassVar[str] = "maml"
    RECIPES: ClassVar[Recipes] = MAML_RECIPES

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "inner_lr", "meta_lr", gt=0)  # None: the recipe's value
        check_range(self, "inner_steps", "meta_batch", "meta_steps", ge=1)
        check_range(self, "test_steps", ge=0)
        if self.cuda_graph and self.vectorize != "vmap":
            raise ValueError("cuda_graph needs vectorize='vmap' (the per-task loop is the "
                             "reference); set learner.vectorize=vmap or cuda_graph=false")

    def build(self, ctx: BuildContext) -> MAMLLearner:
        return MAMLLearner(self.resolved(ctx.spec), ctx)


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


REF_BATCHES = 32
"""Stream mode: batch-norm statistics come from the last this-many observed batches."""


def mask_values(m: Tensor, kind: str) -> Tensor:
    """sparse-MAML masks: 'binary' = 1[m > 0] with a straight-through gradient (identity);
    'relu' = max(m, 0) (continuous, sparse-ReLU-MAML)."""
    if kind == "relu":
        return F.relu(m)
    hard = (m > 0).to(m.dtype)
    return hard + (m - m.detach())


def bn_cancelled(state_key: str) -> bool:
    """A conv bias (state key 'params.convI/bias' of a MAML-family or Reptile learner) that the
    batch norm right after it cancels. Its true meta-gradient is zero, so Adam turns rounding
    noise into full-size steps there: two runs that round differently (vmap against a task loop,
    a CUDA graph against eager kernels, a resumed run) differ in these entries without computing
    a different function. Comparisons of trained weights leave them out."""
    return state_key.startswith("params.conv") and state_key.endswith("/bias")


class MAMLLearner(FunctionalMetaLearner):
    """One learner for the whole family; the config's switches select the variant."""

    cfg: MAMLConfig

    def __init__(self, cfg: MAMLConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx, ctx.spec.n_outputs)
        init = self._initial_weights()
        # Per-step tensors (BN copies, LSLR rates) exist for the trained steps only, so that the
        # checkpoint does not depend on `test_steps` (an eval-only field, out of its key);
        # test steps past them reuse the last (`_lr`, `_bn_step`).
        n_bn_steps = cfg.inner_steps + 1
        if cfg.per_step_bn:  # BNWB: one copy per step replaces the shared (unadapted) BN
            for k in [k for k in init if ".bn" in k or k.startswith("bn")]:
                for s in range(n_bn_steps):
                    init[f"{k}@{s}"] = init[k].clone()
                del init[k]
        self.n_bn_steps = n_bn_steps if cfg.per_step_bn else 0
        self._register(init)
        self.adapt_keys = [k for k in self.names if "@" not in k and (
            cfg.adapt == "all" or (cfg.adapt == "head") == is_head(k))]
        if not self.adapt_keys:
            raise HarnessError(f"{cfg.NAME}: adapt={cfg.adapt!r} leaves no parameter to adapt")
        n_lr_steps = cfg.inner_steps
        self.lrs = nn.ParameterDict()
        if cfg.learn_lrs:
            for k in self.adapt_keys:
                self.lrs[param_key(k)] = nn.Parameter(torch.full((n_lr_steps,), cfg.inner_lr))
        self.masks = nn.ParameterDict()
        if cfg.mask != "none":
            for k in self.adapt_keys:
                self.masks[param_key(k)] = nn.Parameter(torch.ones_like(init[k]))
        self.to(ctx.device)
        self._adapted: list[Params] | None = None

    # -- pieces --------------------------------------------------------------------------

    def meta_params(self) -> Params:
        """All meta-learned tensors by name: weights, then 'lr:<name>' and 'mask:<name>'."""
        p = super().meta_params()
        p.update({f"lr:{k}": self.lrs[param_key(k)] for k in self.adapt_keys
                  if param_key(k) in self.lrs})
        p.update({f"mask:{k}": self.masks[param_key(k)] for k in self.adapt_keys
                  if param_key(k) in self.masks})
        return p

    def _bases(self) -> list[Params]:
        """The weights an episode adapts from (MAML++'s ensemble: one per member)."""
        return [detach_params(self.meta_params())]

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
              loss_weights: list[float] | None = None) -> tuple[Params, Any]:
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

    def meta_train(self, data: Any, budget: Budget, progress: Progress | None,
                   validate: Validate | None) -> MetaTrainReport:
        """Meta-train on tasks from `data.sample_batch`, resumably (baselines/maml_training.py).
        `validate` is used by MAML++'s checkpoint ensemble only (baselines/maml_pp.py)."""
        return maml_training.meta_train(self, data, budget, progress, validate)

    def _check_validate(self, validate: Validate | None) -> None:
        """Refuse a meta-training that needs validation episodes and has none (MAML++)."""

    def _after_step(self, total: int, validate: Validate | None, progress: Progress | None
                    ) -> Callable[[int], None] | None:
        """What runs after each meta-step (MAML++: the ensemble's validation); None: nothing."""
        return None

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
        return "last"
