"""SLDA's classifier kept by a base eigendecomposition and Woodbury updates (baselines/slda.py)
equals the direct solve of the same statistics.

Exactness criterion used throughout (`_assert_close`): for the float64 weights W, biases b and
logits, max|new - ref| <= 1e-8 * max(1, max|ref|), where ref is computed here from the
definition, as the learner computed it before the Woodbury path: A = (1 - eps) cov + eps I,
W = A^-1 M^T by a Cholesky solve (the pseudo-inverse when A is singular, eps = 0),
b = -diag(M W) / 2. The float32 logits of `predict` are held to 1e-6 of the same scale. The
features are kept at a scale where cond(A) <= ~1e6: two exact methods differ by about
cond(A) * 1e-16 (for cond(A) ~ 1e8 even the direct solve is only good to ~1e-8).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.backbone import UNSEEN_LOGIT
from baselines.slda import SLDAConfig, SLDALearner
from harness.config import BuildContext
from harness.experiment import build_scenario
from harness.protocol import ScenarioSpec
from harness.runner import run_stream

TOL = 1e-8

pytestmark = pytest.mark.usefixtures("one_thread")



def _reference(learner: SLDALearner) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of the learner's statistics by one direct factorisation of A."""
    eps, cov, means = learner.cfg.shrinkage, learner.cov, learner.means
    a = (1 - eps) * cov + eps * torch.eye(len(cov), dtype=torch.float64)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        w = torch.cholesky_solve(means.T, chol)
    else:
        w = torch.linalg.pinv(a, hermitian=True) @ means.T
    return w, -0.5 * (means.T * w).sum(0)


def _assert_close(new: torch.Tensor, ref: torch.Tensor, tol: float = TOL, what: str = "") -> None:
    new, ref = new.double(), ref.double()
    err, scale = float((new - ref).abs().max()), max(1.0, float(ref.abs().max()))
    assert err <= tol * scale, f"{what}: max|new - ref| = {err:.3g} > {tol:g} * {scale:.3g}"


def _assert_close_outputs(new: torch.Tensor, ref: torch.Tensor, tol: float = 1e-6,
                          what: str = "") -> None:
    """float32 predict outputs: the same classes at UNSEEN_LOGIT, the others within `tol` of
    the scale of the seen classes' logits."""
    unseen = ref == UNSEEN_LOGIT
    assert torch.equal(new == UNSEEN_LOGIT, unseen), what
    if not unseen.all():
        _assert_close(new[~unseen], ref[~unseen], tol=tol, what=what)


def _stream(n: int, d: int, n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` samples of `n_classes` Gaussian classes in `d` dimensions, class-incremental order
    (classes arrive one after another, shuffled within halves of the stream)."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(n_classes, d, generator=g)
    y = torch.arange(n) * n_classes // n
    y[n // 2:] = y[n // 2:][torch.randperm(n - n // 2, generator=g)]
    x = protos[y] + 0.7 * torch.randn(n, d, generator=g)
    return x, y


def _identity_learner(d: int, n_classes: int, eps: float) -> SLDALearner:
    spec = ScenarioSpec(input_shape=(d,), n_outputs=n_classes)
    return SLDAConfig(backbone="identity", pretrain=False, shrinkage=eps).build(
        BuildContext(spec=spec))


@pytest.mark.parametrize(("eps", "d", "n", "batch", "every"), [
    (1e-4, 64, 420, 1, 1),   # ~6 re-bases (window 64), checked after every sample
    (1e-4, 160, 400, 1, 5),  # window 128: 3 re-bases, rank-deficient cov throughout
    (1e-4, 48, 300, 7, 1),   # batches of 7: several updates between two requests
    (0.5, 64, 200, 1, 1),    # large shrinkage
    (1.0, 32, 60, 1, 1),     # A = I
    (0.0, 16, 60, 1, 1),     # no shrinkage: the direct (Cholesky / pinv) path
])
def test_prequential_classifier_equals_the_direct_solve(eps, d, n, batch, every) -> None:
    n_classes = 10
    learner = _identity_learner(d, n_classes, eps)
    x, y = _stream(n, d, n_classes, seed=d + n)
    probe = x[:4].double()
    for k, i in enumerate(range(0, n, batch)):
        xb, yb = x[i:i + batch], y[i:i + batch]
        if k % every == 0:
            w_ref, b_ref = _reference(learner)
            # The factored logits (4 + len(xb) samples < 10 classes: no explicit W yet).
            _assert_close(learner._logits64(probe), probe @ w_ref + b_ref, what=f"logits@{i}")
            out = learner.predict(xb)
            ref = (xb.double() @ w_ref + b_ref).masked_fill(learner.counts == 0, UNSEEN_LOGIT)
            assert out.dtype == torch.float32
            _assert_close_outputs(out, ref.float(), what=f"predict@{i}")
            w, b = learner.classifier()
            assert w.shape == (d, n_classes) and b.shape == (n_classes,)
            _assert_close(w, w_ref, what=f"W@{i}")
            _assert_close(b, b_ref, what=f"b@{i}")
        elif k % 2:  # also steps whose sample was not predicted before it is observed
            learner.predict(xb)
        learner.observe(xb, yb)
    w_ref, b_ref = _reference(learner)
    w, b = learner.classifier()
    _assert_close(w, w_ref, what="final W")
    _assert_close(b, b_ref, what="final b")
    if eps == 0:
        assert learner.rebases == 0
    elif eps < 1:
        assert learner.rebases >= (n - 1) // min(d, SLDALearner.REBASE_EVERY) - 1


def test_large_batches_use_the_explicit_classifier_and_agree() -> None:
    d, n_classes = 40, 10
    learner = _identity_learner(d, n_classes, 1e-4)
    x, y = _stream(200, d, n_classes, seed=1)
    learner.observe(x[:150], y[:150])  # one batch: more updates than the window (40)
    xt = x[150:].double()
    w_ref, b_ref = _reference(learner)
    small = learner._logits64(xt[:5])  # factored
    assert learner._classifier is None
    big = learner._logits64(xt)  # 5 + 50 samples > 10 classes: W is built and cached
    assert learner._classifier is not None
    _assert_close(small, xt[:5] @ w_ref + b_ref)
    _assert_close(big, xt @ w_ref + b_ref)


def test_reset_restarts_the_statistics_and_the_factorisation() -> None:
    d, n_classes = 32, 10
    x, y = _stream(150, d, n_classes, seed=2)
    learner, fresh = _identity_learner(d, n_classes, 1e-4), _identity_learner(d, n_classes, 1e-4)

    def feed(lrn: SLDALearner, stop: int) -> None:
        for i in range(stop):
            lrn.predict(x[i:i + 1])
            lrn.observe(x[i:i + 1], y[i:i + 1])

    feed(learner, 150)
    assert learner.rebases >= 3
    learner.reset()
    assert learner.n == 0 and learner.rebases == 0
    for lrn in (learner, fresh):
        w, b = lrn.classifier()
        assert not w.any() and not b.any()
        assert (lrn.predict(x[:3]) == UNSEEN_LOGIT).all()
    feed(learner, 100)
    feed(fresh, 100)
    assert torch.equal(learner.cov, fresh.cov) and torch.equal(learner.means, fresh.means)
    for got, want in zip(learner.classifier(), fresh.classifier(), strict=True):
        assert torch.equal(got, want)
    assert torch.equal(learner.predict(x[100:120]), fresh.predict(x[100:120]))
    assert not learner.state_dict().keys() - {k for k in learner.state_dict()
                                              if k.startswith("features.")}


class _Recording(SLDALearner):
    """Keeps every predict output."""

    def _reset_stream(self) -> None:
        super()._reset_stream()
        self.outputs: list[torch.Tensor] = []

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        out = super().predict(x)
        self.outputs.append(out)
        return out


class _DirectSLDA(_Recording):
    """The learner as it was: the direct solve at every classifier request (no factors)."""

    def _current_factors(self) -> None:
        return None


def test_synthetic_stream_run_matches_the_direct_solve() -> None:
    scenario = build_scenario("synthetic-stream", 0, None,
                              {"n_classes": "10", "train_per_class": "40"})
    exps, spec = scenario.experiences, scenario.spec
    cfg = SLDAConfig(pretrain=False, width=32)  # convnet-small, 128 features
    new, ref = _Recording(cfg, BuildContext(spec=spec)), _DirectSLDA(cfg, BuildContext(spec=spec))
    rec_new, rec_ref = run_stream(new, exps, spec), run_stream(ref, exps, spec)
    assert new.features.out_dim == 128 and new.n == 400 and new.rebases >= 2
    for field in ("R", "R0", "R_train", "prequential", "final_test_scores"):
        assert np.array_equal(getattr(rec_new, field), getattr(rec_ref, field)), field
    assert len(new.outputs) == len(ref.outputs) > 400
    for a, b in zip(new.outputs, ref.outputs, strict=True):
        assert torch.equal(a.argmax(1), b.argmax(1))
        _assert_close_outputs(a, b)
    for got, want in zip(new.classifier(), ref.classifier(), strict=True):
        _assert_close(got, want)
