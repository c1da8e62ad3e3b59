"""Prototypical Networks (Snell, Swersky & Zemel 2017): classify a query by the (negative squared
Euclidean) distance of its embedding to each class's mean support embedding.

The strong non-gradient reference of the few-shot literature: no inner loop, so `observe`
only stores the support set. Meta-training uses episodes with more ways than at test
(`train_ways`: 60 for Omniglot in the paper) and `train_queries` queries per class; Adam with
the learning rate halved every `lr_halve_every` episodes.

The embedding is the functional conv4 without a head (baselines/fewshot_nets.py). Its batch
norm has no running statistics (the paper's code used them at test time): with `bn='support'`
(default, non-transductive) the support set's statistics normalise support and queries alike,
in training and at test; `bn='transductive'` uses support plus queries.

Published (Snell et al. 2017, Table 1, 28x28 Omniglot, trained 60-way): 5-way 1-shot 98.8,
5-shot 99.7, 20-way 1-shot 96.0, 5-shot 98.9; MiniImageNet 5-way 1-shot 49.42 +- 0.78,
5-shot 68.20 +- 0.66.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.fewshot_nets import Params, make_backbone
from baselines.maml import ResumableRun, _key, fill_from_recipe, scenario_kind
from harness.config import BuildContext, Progress, check_choice, check_range, train_config_hash
from harness.errors import DivergedError, HarnessError
from harness.protocol import Budget, ScenarioSpec

RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "omniglot": dict(train_ways=60, train_queries=5, meta_steps=20000),
        "omniglot20": dict(train_ways=60, train_queries=5, meta_steps=20000),
        "miniimagenet": dict(train_ways=30, train_queries=15, meta_steps=20000),
        "vector": dict(train_ways=20, train_queries=5, meta_steps=2000),
    },
    "quick": {
        "omniglot": dict(train_ways=20, train_queries=5, meta_steps=2000),
        "omniglot20": dict(train_ways=20, train_queries=5, meta_steps=2000),
        "miniimagenet": dict(train_ways=20, train_queries=10, meta_steps=2000),
        "vector": dict(meta_steps=500),
    },
}


@dataclass
class ProtoNetConfig:
    """Prototypical Networks. None = the recipe's value for the scenario kind."""

    SEEDED_TRAINING: ClassVar[bool] = True
    """Meta-training draws init and tasks from the run's seed: one checkpoint per seed."""

    recipe: str = "quick"
    """'quick' (CPU) or 'paper'; set by --preset."""
    backbone: str | None = None
    """Embedding net: conv4 (max-pool, 64 channels; images) | resnet12 | mlp (flat inputs)."""
    channels: int = 64
    """Conv channels (ProtoNets used 64 everywhere)."""
    train_ways: int | None = None
    """Classes per meta-training episode."""
    train_queries: int | None = None
    """Queries per class in meta-training episodes."""
    meta_lr: float = 1e-3
    """Adam learning rate."""
    lr_halve_every: int = 2000
    """Halve the learning rate every this many episodes."""
    meta_steps: int | None = None
    """Meta-training episodes."""
    bn: Literal["support", "transductive"] = "support"
    """Batch-norm statistics: support set only (non-transductive) or support + queries."""
    time_limit_s: float = 0.0
    """Stop meta-training after this many seconds of this run (0 = no limit). The stopped run
    keeps a partial checkpoint, and the next run of the same config resumes from it; the rows
    record meta_steps_done."""
    checkpoint_every_s: float = 120.0
    """Partial-checkpoint interval during meta-training."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"recipe": "quick"}, "paper": {"recipe": "paper"}}

    def __post_init__(self) -> None:
        check_choice(self, "recipe", RECIPES)
        check_range(self, "time_limit_s", "checkpoint_every_s", ge=0)

    def checkpoint_key(self) -> list[str]:
        """The learner and its training fields, of the resolved config (see baselines/maml.py)."""
        return ["protonet", train_config_hash(self)]

    def resolved(self, spec: ScenarioSpec) -> ProtoNetConfig:
        """A copy with every None filled from the recipe for this scenario kind."""
        kind = scenario_kind(spec)
        if kind == "sinusoid":
            raise HarnessError("protonet classifies; pick a classification scenario")
        return fill_from_recipe(self, RECIPES, kind,
                                {"backbone": "mlp" if kind == "vector" else "conv4"})

    def build(self, ctx: BuildContext) -> ProtoNet:
        return ProtoNet(self.resolved(ctx.spec), ctx)


def proto_logits(f_support: Tensor, y_support: Tensor, f_query: Tensor, n_way: int) -> Tensor:
    """-||f_q - c_k||^2 for class means c_k of the support embeddings."""
    onehot = F.one_hot(y_support, n_way).to(f_support.dtype)
    protos = onehot.T @ f_support / onehot.sum(0).clamp(min=1)[:, None]
    return -torch.cdist(f_query, protos).pow(2)


class ProtoNet(nn.Module):
    needs_meta_train = True
    resumed_seconds = 0.0
    """Meta-training seconds carried over from a partial checkpoint (see MAMLLearner)."""

    def __init__(self, cfg: ProtoNetConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg, self.spec, self.device, self.seed = cfg, ctx.spec, ctx.device, ctx.seed
        self.resume_path = getattr(ctx, "resume_path", None)
        self.progress = ctx.progress
        self.net = make_backbone(cfg.backbone, ctx.spec.input_shape, 0, cfg.channels)
        init = self.net.init(torch.Generator().manual_seed(int(ctx.seed)))
        self.names = list(init)
        self.params = nn.ParameterDict({_key(k): nn.Parameter(v) for k, v in init.items()})
        self.to(ctx.device)
        self._support: list[tuple[Tensor, Tensor]] = []

    def _p(self) -> Params:
        return {k: self.params[_key(k)] for k in self.names}

    def episode_logits(self, xs: Tensor, ys: Tensor, xq: Tensor, n_way: int) -> Tensor:
        n_ref = len(xs) if self.cfg.bn == "support" else None
        f = self.net.forward(self._p(), torch.cat([xs, xq]), n_ref)
        return proto_logits(f[: len(xs)], ys, f[len(xs):], n_way)

    def meta_train(self, tasks: Any, budget: Budget, progress: Progress | None) -> None:
        cfg = self.cfg
        if not hasattr(tasks, "sample_batch"):
            raise HarnessError("protonet needs an episodic scenario (meta_train.sample_batch)")
        progress = progress or self.progress
        total = min(cfg.meta_steps, budget.steps) if budget.steps else cfg.meta_steps
        limit = min(x for x in (cfg.time_limit_s, budget.seconds, math.inf) if x > 0)
        g = torch.Generator().manual_seed(int(self.seed) + 7919)
        opt = torch.optim.Adam(self.parameters(), lr=cfg.meta_lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, cfg.lr_halve_every, 0.5)
        run = ResumableRun(self, opt, sched, g, self.resume_path, cfg.checkpoint_every_s)
        self.resumed_seconds = run.seconds_before
        ways = min(cfg.train_ways, tasks.n_classes)
        for step in range(run.start, total):
            xs, ys, xq, yq = (t[0].to(self.device) for t in tasks.sample_batch(
                1, g, ways=ways, queries=cfg.train_queries))
            logits = self.episode_logits(xs, ys, xq, ways)
            loss = F.cross_entropy(logits, yq)
            if not torch.isfinite(loss):
                raise DivergedError(f"protonet: loss is {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress is not None and (step % 10 == 0 or step == total - 1):
                acc = (logits.argmax(1) == yq).float().mean()
                progress("meta-train", step + 1, total, {"loss": float(loss), "acc": float(acc)})
            if run.step_done(step + 1) > limit:
                break
        self.meta_steps_done = run.steps
        self.meta_train_complete = run.finish(total)

    def reset(self) -> None:
        self._support.clear()

    def observe(self, x: Tensor, y: Tensor) -> None:
        """Store the support batch (prototypes are computed at predict time)."""
        self._support.append((x, y))

    def predict(self, x: Tensor) -> Tensor:
        n = self.spec.n_outputs
        if not self._support:
            return x.new_zeros(len(x), n)
        xs = torch.cat([s[0] for s in self._support])
        ys = torch.cat([s[1] for s in self._support])
        return self.episode_logits(xs, ys, x, n)

    def describe(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "backbone": f"{c.backbone}-{c.channels}", "train_ways": c.train_ways,
            "train_queries_per_class": c.train_queries, "meta_steps": c.meta_steps,
            "inner_steps_train": 0, "inner_steps_test": 0, "gradient_order": "none (ProtoNet)",
            "transductive_bn": c.bn == "transductive",
            "ci_type": "normal 1.96*sd/sqrt(n) over episodes",
            "checkpoint_selection": "last", "recipe": c.recipe,
        }
