"""Online fine-tuning: the 'Scratch' lower bound and the 'Pretrain & Transfer' baseline.

`finetune` trains features + linear head by plain online SGD on every incoming batch: with no
protection against forgetting it is the lower bound of continual learning. `pretrain` is the
"Pretrain & Transfer" baseline of OML (Javed & White 2019) and ANML (Beaulieu et al. 2020):
the features are pre-trained on the meta-train classes and only the head learns on the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.backbone import BackboneConfig, FeatureLearner
from harness.config import BuildContext, check_choice, check_range, eval_field
from harness.errors import DivergedError


def check_optimizer_fields(cfg: Any) -> None:
    """The checks of the fields FinetuneConfig and IIDOfflineConfig share."""
    check_range(cfg, "lr", gt=0)
    check_choice(cfg, "optimizer", ("sgd", "adam"))
    check_choice(cfg, "train", ("all", "head"))


@dataclass
class FinetuneConfig(BackboneConfig):
    """Online SGD of the whole network (train='all') or of the head only (train='head')."""

    lr: float = eval_field(1e-3, "learning rate on the stream")
    """Learning rate on the stream (the only one; tuned by the runner); > 0."""
    optimizer: Literal["sgd", "adam"] = eval_field("sgd", "optimizer on the stream")
    """Optimizer on the stream: 'sgd' (plain, no momentum) or 'adam'."""
    train: Literal["all", "head"] = eval_field("all", "parameters trained on the stream")
    """Parameters trained on the stream: 'all' or 'head' (features frozen, in eval mode)."""
    steps_per_batch: int = eval_field(1, "optimizer steps per incoming batch")
    """Optimizer steps on each incoming batch; >= 1."""

    PRESETS: ClassVar[dict[str, dict]] = {"quick": {}, "conv4": {"backbone": "conv4"}}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_optimizer_fields(self)
        check_range(self, "steps_per_batch", ge=1)

    def build(self, ctx: BuildContext) -> FinetuneLearner:
        return FinetuneLearner(self, ctx)


@dataclass
class PretrainConfig(FinetuneConfig):
    """Pretrain & Transfer (OML/ANML papers): pre-trained features, only the head learns."""

    pretrain: bool = True
    """Pre-train the features on the meta-train pool (supervised, all pool classes) first."""
    train: Literal["all", "head"] = eval_field("head", "parameters trained on the stream")
    """Parameters trained on the stream: 'head' (features frozen, in eval mode) or 'all'."""


class FinetuneLearner(FeatureLearner):
    """Features + linear head trained online; cross-entropy (classification) or MSE.

    `predict` runs the network in eval mode (BatchNorm uses running statistics and nothing is
    updated); `observe` runs it in the mode the runner set (train) unless train='head', in
    which case the frozen features stay in eval mode.
    """

    cfg: FinetuneConfig

    def _reset_stream(self) -> None:
        params = [*self.head.parameters()]
        if self.cfg.train == "all":
            params = [*self.features.parameters(), *params]
        opt = torch.optim.SGD if self.cfg.optimizer == "sgd" else torch.optim.Adam
        self.opt = opt(params, lr=self.cfg.lr)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.head(self._features(x))

    def _loss(self, out: Tensor, y: Tensor) -> Tensor:
        if self.spec.task == "classification":
            return F.cross_entropy(out, y)
        return F.mse_loss(out, y.reshape(out.shape).to(out.dtype))

    def _step(self, x: Tensor, y: Tensor) -> float:
        """One optimizer step on (x, y); returns the loss."""
        with torch.enable_grad():
            if self.cfg.train == "head":
                with torch.no_grad():
                    f = self._features(x)
            else:
                f = self.features(x)
            loss = self._loss(self.head(f), y)
            value = loss.item()
            if value != value or abs(value) == float("inf"):
                raise DivergedError(f"training loss is {value}; lower lr (now {self.cfg.lr})")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return value

    def observe(self, x: Tensor, y: Tensor) -> None:
        for _ in range(self.cfg.steps_per_batch):
            self._step(x, y)
