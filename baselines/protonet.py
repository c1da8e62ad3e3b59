"""Prototypical Networks (Snell, Swersky & Zemel 2017): classify a query by the (negative squared
Euclidean) distance of its embedding to each class's mean support embedding.

The strong non-gradient reference of the few-shot literature: no inner loop, so `observe`
only stores the support set. Meta-training uses episodes with more ways than at test
(`train_ways`: 60 for Omniglot in the paper) and `train_queries` queries per class; Adam with
the learning rate halved every `lr_halve_every` episodes.

The embedding is the functional conv4 without a head (baselines/networks/functional.py). Its batch
norm has no running statistics (the paper's code used them at test time): with `bn='support'`
(default, non-transductive) the support set's statistics normalise support and queries alike,
in training and at test; `bn='transductive'` uses support plus queries.

Published (Snell et al. 2017, Table 1, 28x28 Omniglot, trained 60-way): 5-way 1-shot 98.8,
5-shot 99.7, 20-way 1-shot 96.0, 5-shot 98.9; MiniImageNet 5-way 1-shot 49.42 +- 0.78,
5-shot 68.20 +- 0.66.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.metakit.configs import RecipeConfig
from baselines.metakit.learner import ClassEpisodeSource, FunctionalMetaLearner
from baselines.metakit.recipes import PROTONET_RECIPES, Recipes, fill_from_recipe, scenario_kind
from baselines.metakit.resumable import Info, step_target, stop_after, time_limit, train_steps
from harness.capabilities import MetaTrainReport, Validate
from harness.config import BuildContext, Progress
from harness.errors import DivergedError, HarnessError
from harness.protocol import Budget, ScenarioSpec


@dataclass
class ProtoNetConfig(RecipeConfig):
    """Prototypical Networks. None = the recipe's value for the scenario kind
    (`PROTONET_RECIPES`). The backbone is the embedding net: conv4 (max-pool, 64 channels;
    images, the default) | resnet12 | mlp (flat inputs, the default for them)."""

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

    NAME: ClassVar[str] = "protonet"
    RECIPES: ClassVar[Recipes] = PROTONET_RECIPES

    def resolved(self, spec: ScenarioSpec) -> ProtoNetConfig:
        """A copy with every None filled from the recipe for this scenario kind."""
        kind = scenario_kind(spec)
        if kind == "sinusoid":
            raise HarnessError("protonet classifies; pick a classification scenario")
        return fill_from_recipe(self, self.RECIPES, kind,
                                {"backbone": "mlp" if kind == "vector" else "conv4"})

    def build(self, ctx: BuildContext) -> ProtoNet:
        return ProtoNet(self.resolved(ctx.spec), ctx)


def proto_logits(f_support: Tensor, y_support: Tensor, f_query: Tensor, n_way: int) -> Tensor:
    """-||f_q - c_k||^2 for class means c_k of the support embeddings."""
    onehot = F.one_hot(y_support, n_way).to(f_support.dtype)
    protos = onehot.T @ f_support / onehot.sum(0).clamp(min=1)[:, None]
    return -torch.cdist(f_query, protos).pow(2)


class ProtoNet(FunctionalMetaLearner):
    cfg: ProtoNetConfig

    def __init__(self, cfg: ProtoNetConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx, 0)
        self._register(self._initial_weights())
        self.to(ctx.device)

    def episode_logits(self, xs: Tensor, ys: Tensor, xq: Tensor, n_way: int) -> Tensor:
        n_ref = len(xs) if self.cfg.bn == "support" else None
        f = self.net.forward(self.meta_params(), torch.cat([xs, xq]), n_ref)
        return proto_logits(f[: len(xs)], ys, f[len(xs):], n_way)

    def meta_train(self, data: Any, budget: Budget, progress: Progress | None,
                   validate: Validate | None) -> MetaTrainReport:
        """Meta-train on episodes of `train_ways` classes, resumably from a partial checkpoint
        (baselines.metakit.resumable); `validate` is not used."""
        cfg = self.cfg
        tasks = self._episodes(data, ClassEpisodeSource)
        progress = progress or self.progress
        total = step_target(cfg.meta_steps, budget)
        limit = time_limit(cfg.time_limit_s, budget)
        g = self._task_generator()
        opt = torch.optim.Adam(self.parameters(), lr=cfg.meta_lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, cfg.lr_halve_every, 0.5)
        run = self._resumable(opt, sched, g)
        ways = min(cfg.train_ways, tasks.n_classes)

        def step(i: int) -> Info:
            xs, ys, xq, yq = (t[0].to(self.device) for t in tasks.sample_batch(
                1, g, ways=ways, queries=cfg.train_queries))
            logits = self.episode_logits(xs, ys, xq, ways)
            loss = F.cross_entropy(logits, yq)
            if not torch.isfinite(loss):
                raise DivergedError(f"protonet: loss is {loss.item()} at step {i}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            return lambda: {"loss": float(loss),
                            "acc": float((logits.argmax(1) == yq).float().mean())}

        return train_steps(run, total, step, stop_after(run, limit), progress, every=10)

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
