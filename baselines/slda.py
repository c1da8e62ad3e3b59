"""Streaming Linear Discriminant Analysis on frozen features.

Hayes & Kanan 2020, "Lifelong Machine Learning with Deep Streaming Linear Discriminant
Analysis" (CVPR Workshops). One running mean per class and one shared covariance, updated one
sample at a time as in the paper's code (n = samples seen so far, mu_y = the class mean
before the update):

    cov  <- (n * cov + n / (n + 1) * (x - mu_y)(x - mu_y)^T) / (n + 1)
    mu_y <- mu_y + (x - mu_y) / (count_y + 1)

Prediction: Lambda = pinv((1 - eps) * cov + eps * I) (shrinkage eps = 1e-4), logits
x^T W_c + b_c with W_c = Lambda mu_c and b_c = -mu_c^T Lambda mu_c / 2. Lambda, W and b are
cached and recomputed only after the statistics changed (W by a Cholesky solve when the matrix
is positive definite, i.e. eps > 0; pinv otherwise). Classes never seen get UNSEEN_LOGIT
(the paper's code scores them with zero means). Statistics are float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from baselines.backbone import UNSEEN_LOGIT, BackboneConfig, FeatureLearner
from harness.config import BuildContext, check_range, eval_field


@dataclass
class SLDAConfig(BackboneConfig):
    """Streaming LDA; has no learning rate (no `lr` to tune)."""

    pretrain: bool = True
    """Pre-train the (frozen) features on the meta-train pool first."""
    shrinkage: float = eval_field(1e-4, "covariance shrinkage eps")
    """Shrinkage eps of the precision matrix pinv((1 - eps) cov + eps I); in [0, 1]."""

    PRESETS: ClassVar[dict[str, dict]] = {"quick": {}, "conv4": {"backbone": "conv4"}}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "shrinkage", ge=0, le=1)

    def build(self, ctx: BuildContext) -> SLDALearner:
        return SLDALearner(self, ctx)


class SLDALearner(FeatureLearner):
    """Class means, shared covariance and a cached linear classifier (not in state_dict)."""

    cfg: SLDAConfig

    _linear_head = False
    _classification_only = "slda"

    def _reset_stream(self) -> None:
        c, d = self.spec.n_outputs, self.features.out_dim
        kw = {"dtype": torch.float64, "device": self.device}
        self.means = torch.zeros(c, d, **kw)
        self.counts = torch.zeros(c, **kw)
        self.cov = torch.zeros(d, d, **kw)
        self.n = 0
        self._classifier: tuple[Tensor, Tensor] | None = None

    @torch.no_grad()
    def observe(self, x: Tensor, y: Tensor) -> None:
        f = self._features(x).to(torch.float64)
        for i, c in enumerate(y.tolist()):
            d = f[i] - self.means[c]
            n = self.n
            # (n cov + n/(n+1) d d^T) / (n+1), in place
            self.cov.mul_(n / (n + 1)).addr_(d, d, alpha=n / (n + 1) ** 2)
            self.means[c] += d / (self.counts[c] + 1)
            self.counts[c] += 1
            self.n += 1
        self._classifier = None

    def classifier(self) -> tuple[Tensor, Tensor]:
        """(W [D, C], b [C]) of the current statistics, cached until the next observe."""
        if self._classifier is None:
            eps = self.cfg.shrinkage
            eye = torch.eye(len(self.cov), dtype=self.cov.dtype, device=self.cov.device)
            a = (1 - eps) * self.cov + eps * eye
            # Lambda @ mu by Cholesky: A is SPD for eps > 0, where this equals pinv(A) @ mu
            # up to rounding and is ~5x faster (it runs after every observe in a stream).
            chol, info = torch.linalg.cholesky_ex(a)
            if int(info) == 0:
                w = torch.cholesky_solve(self.means.T, chol)
            else:  # singular (eps = 0): the pseudo-inverse, as in the paper
                w = torch.linalg.pinv(a, hermitian=True) @ self.means.T
            b = -0.5 * (self.means.T * w).sum(0)
            self._classifier = (w, b)
        return self._classifier

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        w, b = self.classifier()
        logits = self._features(x).to(torch.float64) @ w + b
        return logits.masked_fill(self.counts == 0, UNSEEN_LOGIT).float()
