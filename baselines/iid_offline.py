"""The i.i.d. offline oracle: the same data, shuffled, several epochs (an upper bound).

`observe` only stores the samples. When `predict` is called in eval mode (the runner's
evaluation points) and samples arrived since the last fit, the model is re-trained from its
initial state (the built or pre-trained one) for `epochs` epochs of shuffled minibatches over
ALL stored samples. In train mode `predict` uses the last fitted model, so the oracle's
prequential (online) accuracy is not meaningful: report it only at the evaluation points.
Each evaluation point costs a full re-fit, i.e. O(points x samples x epochs) in all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from baselines.backbone import BackboneConfig, derive_seed
from baselines.finetune import FinetuneLearner, check_optimizer_fields
from harness.config import BuildContext, check_range, eval_field


@dataclass
class IIDOfflineConfig(BackboneConfig):
    """Multi-epoch i.i.d. training on all samples seen so far, re-fitted at evaluation."""

    lr: float = eval_field(1e-3, "learning rate of the offline fit")
    """Learning rate of the offline fit (the only one; tuned by the runner); > 0."""
    optimizer: Literal["sgd", "adam"] = eval_field("adam", "optimizer of the offline fit")
    """Optimizer of the offline fit: 'adam' or 'sgd' (plain, no momentum)."""
    train: Literal["all", "head"] = eval_field("all", "parameters trained")
    """Parameters trained: 'all' or 'head' (features frozen, in eval mode)."""
    pretrain: bool = True
    """Start from the pre-trained backbone shared with ncm/slda/pretrain (an upper bound for
    them: the same features, the same data, i.i.d. and several epochs)."""
    epochs: int = eval_field(10, "epochs of each fit")
    """Epochs over all stored samples at each fit; >= 1."""
    batch_size: int = eval_field(16, "minibatch size of the fit")
    """Minibatch size of the fit; >= 1."""

    PRESETS: ClassVar[dict[str, dict]] = {"quick": {}, "conv4": {"backbone": "conv4"}}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_optimizer_fields(self)
        check_range(self, "epochs", "batch_size", ge=1)

    def build(self, ctx: BuildContext) -> IIDOfflineLearner:
        return IIDOfflineLearner(self, ctx)  # type: ignore[arg-type]


class IIDOfflineLearner(FinetuneLearner):
    """Stores the stream; (re)fits lazily from the reset point when evaluated."""

    cfg: IIDOfflineConfig  # type: ignore[assignment]

    def _reset_stream(self) -> None:
        super()._reset_stream()
        self._xs: list[Tensor] = []
        self._ys: list[Tensor] = []
        self._n_stored = 0
        self._n_fitted = 0

    def observe(self, x: Tensor, y: Tensor) -> None:
        self._xs.append(x.detach())
        self._ys.append(y.detach())
        self._n_stored += len(x)

    def fit(self) -> None:
        """Re-train from the reset point on all stored samples, i.i.d. shuffled."""
        self._xs, self._ys = [torch.cat(self._xs)], [torch.cat(self._ys)]
        x, y = self._xs[0], self._ys[0]
        xs, ys, n = self._xs, self._ys, self._n_stored
        self.reset()  # initial weights and a fresh optimizer; clears the store, so restore it
        self._xs, self._ys, self._n_stored = xs, ys, n
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "iid-offline"))
        was = self.training
        self.train(True)
        try:
            for _ in range(self.cfg.epochs):
                order = torch.randperm(n, generator=gen).to(x.device)
                for i in range(0, n, self.cfg.batch_size):
                    idx = order[i : i + self.cfg.batch_size]
                    self._step(x[idx], y[idx])
        finally:
            self.train(was)
        self._n_fitted = n

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        if not self.training and self._n_stored > self._n_fitted:
            self.fit()
        return super().predict(x)
