"""Streaming Linear Discriminant Analysis on frozen features.

Hayes & Kanan 2020, "Lifelong Machine Learning with Deep Streaming Linear Discriminant
Analysis" (CVPR Workshops). One running mean per class and one shared covariance, updated one
sample at a time as in the paper's code (n = samples seen so far, mu_y = the class mean
before the update):

    cov  <- (n * cov + n / (n + 1) * (x - mu_y)(x - mu_y)^T) / (n + 1)
    mu_y <- mu_y + (x - mu_y) / (count_y + 1)

Prediction: Lambda = A^-1 with A = (1 - eps) * cov + eps * I (shrinkage eps = 1e-4), logits
x^T W_c + b_c with W_c = Lambda mu_c and b_c = -mu_c^T Lambda mu_c / 2. Classes never seen get
UNSEEN_LOGIT (the paper's code scores them with zero means). Statistics are float64.

How the classifier is kept (eps > 0). The harness predicts every stream sample before
observing it (docs/design.md D2), so the classifier is needed after every update, and
factorising A each time costs O(d^3) per sample (d = feature size). Instead the learner keeps
a *base* eigendecomposition C0 = V diag(s) V^T (torch.linalg.eigh) of the covariance at some
sample and writes the covariance since then exactly as

    cov = g * C0 + sum_j g * c_j * d_j d_j^T

with one term per update: an update is cov <- a cov + b d d^T with a = n / (n + 1) and
b = n / (n + 1)^2, so g <- a g and the new term gets c_j = b / g. In the eigenbasis
A = V (diag(D) + Z Z^T) V^T with D = (1 - eps) g s + eps and k columns
Z_j = sqrt((1 - eps) g c_j) V^T d_j, so the Woodbury identity applies A^-1 through the k x k
capacitance matrix I + Z^T diag(1/D) Z. The logits of a batch come from V^T x, the rotated
class means M V and these factors, without forming A^-1 or W. Per stream sample this costs
O(d^2) (the covariance update itself and one rotation V^T x: the sample predicted just before
is not rotated again when observed, and V^T d_j and M V are updated from it) plus
O(d k (k + C)) for the Woodbury terms (C = classes seen so far) and O(k^3). The base is
recomputed from the exact current `cov` (eigh, O(d^3)) every `REBASE_EVERY` = 128 updates (d
when d is smaller; 128 is the fastest of 64..320 measured on omniglot-stream with d = 1024),
and also when the capacitance matrix is badly conditioned, so that cost is spread over that
many samples. `cov` is updated exactly as above; the classifier equals the direct solve up to
float64 rounding (tests/test_slda.py checks 1e-8 relative to the largest weight).

`classifier()` returns the explicit (W [d, C], b [C]) of the current statistics (O(d^2 C)
from the factors, cached until the next update); `predict` uses that W once it exists or once
the samples predicted since the last update outnumber the classes (large evaluation batches),
the factors otherwise. With eps = 0 the matrix may be singular: W is then computed directly,
by a Cholesky solve when A is positive definite and with the pseudo-inverse (as in the paper)
otherwise, O(d^3) at every classifier request. None of this state is in `state_dict()`.
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


@dataclass
class _Factors:
    """A = V (diag(1 / dinv) + Z Z^T) V^T for the current statistics, ready to apply to the
    classes seen so far (`seen`; the others have zero means, so zero weights and biases):
    `dz` = diag(dinv) Z, `chol` = the Cholesky factor of I + Z^T diag(dinv) Z, `dm` =
    (M V) diag(dinv) (one row per seen class), `h` = chol^-1 (M V dz)^T and the biases `b`."""

    v: Tensor
    seen: Tensor
    n_classes: int
    dz: Tensor
    chol: Tensor
    dm: Tensor
    h: Tensor
    b: Tensor

    def logits(self, xp: Tensor) -> Tensor:
        """f W + b for features f [B, d] (float64) given as xp = f V, without forming W."""
        part = torch.addmm(self.b, xp, self.dm.T)
        if self.h.shape[0]:
            j = torch.linalg.solve_triangular(self.chol, (xp @ self.dz).T, upper=False)
            part.sub_(j.T @ self.h)
        out = xp.new_zeros(len(xp), self.n_classes)
        out[:, self.seen] = part
        return out

    def classifier(self) -> tuple[Tensor, Tensor]:
        """W [d, C] = A^-1 M^T and b [C]."""
        wp = self.dm.T.clone()
        if self.h.shape[0]:
            wp.sub_(self.dz @ torch.linalg.solve_triangular(self.chol.T, self.h, upper=True))
        w = self.v.new_zeros(len(self.v), self.n_classes)
        w[:, self.seen] = self.v @ wp
        b = self.b.new_zeros(self.n_classes)
        b[self.seen] = self.b
        return w, b


class _LowRankPrecision:
    """The base eigendecomposition and the updates since it (see the module docstring).

    Update j since the base is kept as the rotated sample V^T f_j, its class c_j and the class
    count before it; when the factors are next needed, the pending updates are replayed in
    order: V^T d_j = V^T f_j - (M V)[c_j] and (M V)[c_j] += V^T d_j / (count + 1), the
    rotated form of the learner's own update. The caller may hand in V^T f_j when it has it
    (the sample was just predicted), so a stream sample is rotated once.
    """

    COND_LIMIT: ClassVar[float] = 1e12
    """Re-base when trace(I + Z^T D^-1 Z), a bound on its condition number, exceeds this."""

    def __init__(self, eps: float, window: int, n_classes: int, dim: int, kw: dict) -> None:
        self.eps, self.window = eps, window
        self.v: Tensor | None = None  # None: re-base at the next request
        self.s = torch.zeros(dim, **kw)
        self.g = 1.0
        self.raw = torch.zeros(window, dim, **kw)  # f_j where V^T f_j was not given
        self.rot = torch.zeros(dim, window, **kw)  # V^T f_j, then V^T d_j once replayed
        self.coef: list[float] = []
        self.given: list[bool] = []
        self.cls: list[int] = []
        self.count: list[float] = []
        self.replayed = 0
        self.mp = torch.zeros(n_classes, dim, **kw)  # M V: class means in the eigenbasis
        self.rebases = 0

    def update(self, a: float, b: float, f: Tensor, fp: Tensor | None, c: int,
               count: float) -> None:
        """Record cov <- a cov + b d d^T with d = f - M[c] (fp = V^T f when known) and the
        update of class c's mean, whose count before it was `count`."""
        if self.v is None:
            return
        k = len(self.coef)
        if k == self.window or a == 0:
            self.v = None
            return
        if fp is None:
            self.raw[k] = f
        else:
            self.rot[:, k] = fp
        self.g *= a
        self.coef.append(b / self.g)
        self.given.append(fp is not None)
        self.cls.append(c)
        self.count.append(count)

    def _rebase(self, cov: Tensor, means: Tensor, n: int) -> None:
        if n <= 1:  # the first update multiplies cov by 0: it is exactly zero
            self.v = torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
            self.s.zero_()
        else:
            self.s, self.v = torch.linalg.eigh(cov)
            self.rebases += 1
        self.g, self.replayed = 1.0, 0
        self.coef, self.given, self.cls, self.count = [], [], [], []
        self.mp = means @ self.v

    def factors(self, cov: Tensor, means: Tensor, counts: Tensor,
                n: int) -> _Factors | None:
        """The factorisation of the current A, or None when it is not positive definite."""
        if self.v is None:
            self._rebase(cov, means, n)
        for _ in range(2):
            f = self._factors(counts)
            if f is not None or not self.coef:
                return f
            self._rebase(cov, means, n)  # badly conditioned capacitance: start afresh
        return None

    def _replay(self) -> None:
        v, k, r = self.v, len(self.coef), self.replayed
        assert v is not None
        todo = [j for j in range(r, k) if not self.given[j]]
        if todo:
            self.rot[:, todo] = v.T @ self.raw[todo].T
        for j in range(r, k):
            col, row = self.rot[:, j], self.mp[self.cls[j]]
            col.sub_(row)
            row.add_(col / (self.count[j] + 1))
        self.replayed = k

    def _factors(self, counts: Tensor) -> _Factors | None:
        v, eps, k = self.v, self.eps, len(self.coef)
        assert v is not None
        self._replay()
        diag = (1 - eps) * self.g * self.s + eps
        if not bool((diag > 0).all()):
            return None
        dinv = 1 / diag
        scale = torch.tensor(self.coef, dtype=v.dtype).mul_((1 - eps) * self.g).sqrt_()
        z = self.rot[:, :k] * scale.to(v.device)
        dz = dinv[:, None] * z
        cap = z.T @ dz
        cap.diagonal().add_(1)
        if k and float(cap.diagonal().sum()) > self.COND_LIMIT:
            return None
        chol, info = torch.linalg.cholesky_ex(cap)
        if int(info):
            return None
        seen = (counts > 0).nonzero()[:, 0]
        mp = self.mp[seen]
        dm = mp * dinv
        h = torch.linalg.solve_triangular(chol, (mp @ dz).T, upper=False)
        b = -0.5 * ((mp * dm).sum(1) - (h * h).sum(0))
        return _Factors(v, seen, len(counts), dz, chol, dm, h, b)


class SLDALearner(FeatureLearner):
    """Class means, shared covariance and the classifier they define (see the module
    docstring); none of it is in state_dict."""

    cfg: SLDAConfig

    REBASE_EVERY: ClassVar[int] = 128
    """Updates between two eigendecompositions of the covariance (at most d)."""

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
        self._factors: _Factors | None = None
        self._predicted = 0  # samples predicted since the last update
        self._rotated: tuple[Tensor, Tensor, Tensor] | None = None  # (V, f, f V), last predict
        self._fast = (_LowRankPrecision(self.cfg.shrinkage, max(1, min(self.REBASE_EVERY, d)),
                                        c, d, kw)
                      if self.cfg.shrinkage > 0 else None)

    @torch.no_grad()
    def observe(self, x: Tensor, y: Tensor) -> None:
        f = self._features(x).to(torch.float64)
        fp = self._rotated_features(f)
        for i, c in enumerate(y.tolist()):
            d = f[i] - self.means[c]
            n = self.n
            # (n cov + n/(n+1) d d^T) / (n+1), in place
            a, b = n / (n + 1), n / (n + 1) ** 2
            self.cov.mul_(a).addr_(d, d, alpha=b)
            if self._fast is not None:
                self._fast.update(a, b, f[i], None if fp is None else fp[i], c,
                                  float(self.counts[c]))
            self.means[c] += d / (self.counts[c] + 1)
            self.counts[c] += 1
            self.n += 1
        self._classifier = self._factors = self._rotated = None
        self._predicted = 0

    def _rotated_features(self, f: Tensor) -> Tensor | None:
        """f V when the last prediction rotated these same features in the current base."""
        if self._rotated is None or self._fast is None:
            return None
        v, f0, fp = self._rotated
        same = v is self._fast.v and f0.shape == f.shape and torch.equal(f0, f)
        return fp if same else None

    def _current_factors(self) -> _Factors | None:
        """The Woodbury factorisation of the current statistics (None: use the direct solve)."""
        if self._fast is None or self.n == 0:
            return None
        if self._factors is None:
            self._factors = self._fast.factors(self.cov, self.means, self.counts, self.n)
        return self._factors

    def _direct_classifier(self) -> tuple[Tensor, Tensor]:
        """(W, b) by one factorisation of A: O(d^3)."""
        eps = self.cfg.shrinkage
        eye = torch.eye(len(self.cov), dtype=self.cov.dtype, device=self.cov.device)
        a = (1 - eps) * self.cov + eps * eye
        # Lambda @ mu by Cholesky: A is SPD for eps > 0, where this equals pinv(A) @ mu
        # up to rounding.
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0:
            w = torch.cholesky_solve(self.means.T, chol)
        else:  # singular (eps = 0): the pseudo-inverse, as in the paper
            w = torch.linalg.pinv(a, hermitian=True) @ self.means.T
        return w, -0.5 * (self.means.T * w).sum(0)

    @torch.no_grad()
    def classifier(self) -> tuple[Tensor, Tensor]:
        """(W [D, C], b [C]) of the current statistics, cached until the next observe."""
        if self._classifier is None:
            if self.n == 0:  # all means are zero: so are W and b
                w = torch.zeros_like(self.means.T)
                self._classifier = (w, torch.zeros_like(self.counts))
            elif (fac := self._current_factors()) is not None:
                self._classifier = fac.classifier()
            else:
                self._classifier = self._direct_classifier()
        return self._classifier

    @torch.no_grad()
    def _logits64(self, f: Tensor) -> Tensor:
        """f W + b (float64, unseen classes not masked) for features f [B, D]."""
        self._predicted += len(f)
        if self._classifier is None and self._predicted <= len(self.counts):
            fac = self._current_factors()
            if fac is not None:
                fp = f @ fac.v
                self._rotated = (fac.v, f, fp)
                return fac.logits(fp)
        w, b = self.classifier()
        return f @ w + b

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        logits = self._logits64(self._features(x).to(torch.float64))
        return logits.masked_fill(self.counts == 0, UNSEEN_LOGIT).float()

    @property
    def rebases(self) -> int:
        """Eigendecompositions of the covariance so far in this stream (0 with eps = 0)."""
        return self._fast.rebases if self._fast is not None else 0

