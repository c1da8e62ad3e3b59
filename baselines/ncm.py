"""Nearest class mean on frozen features (Mensink et al. 2013; an online baseline in
Hayes & Kanan 2020).

A running mean of the features is kept per class; a sample is predicted as the class whose
mean is nearest in squared Euclidean distance. The features are frozen (pre-trained on the
meta-train pool by default) and always run in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from baselines.backbone import UNSEEN_LOGIT, BackboneConfig, FeatureLearner
from harness.config import BuildContext


@dataclass
class NCMConfig(BackboneConfig):
    """Nearest class mean; has no learning rate (no `lr` to tune)."""

    pretrain: bool = True
    """Pre-train the (frozen) features on the meta-train pool first."""

    PRESETS: ClassVar[dict[str, dict]] = {"quick": {}, "conv4": {"backbone": "conv4"}}

    def build(self, ctx: BuildContext) -> NCMLearner:
        return NCMLearner(self, ctx)


class NCMLearner(FeatureLearner):
    """Logits are minus the squared distance to each class mean (UNSEEN_LOGIT if unseen).

    Means and counts are float64 tensors on the learner's device (not part of state_dict).
    """

    _linear_head = False
    _classification_only = "ncm"

    def _reset_stream(self) -> None:
        c, d = self.spec.n_outputs, self.features.out_dim
        self.means = torch.zeros(c, d, dtype=torch.float64, device=self.device)
        self.counts = torch.zeros(c, dtype=torch.float64, device=self.device)

    @torch.no_grad()
    def observe(self, x: Tensor, y: Tensor) -> None:
        f = self._features(x).to(torch.float64)
        sums = torch.zeros_like(self.means).index_add_(0, y, f)
        k = torch.bincount(y, minlength=len(self.counts)).to(self.counts.dtype)
        total = self.counts + k
        seen = total > 0
        self.means[seen] = (self.means[seen] * self.counts[seen, None] + sums[seen]) / total[
            seen, None]
        self.counts = total

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        f64 = self._features(x).to(torch.float64)
        d2 = ((f64 * f64).sum(1, keepdim=True) - 2 * f64 @ self.means.T
              + (self.means * self.means).sum(1))
        logits = (-d2).masked_fill(self.counts == 0, UNSEEN_LOGIT)
        return logits.float()
