"""Baselines on tiny hand-made streams: learning, forgetting, closed forms, checkpoints.

The predict-then-observe loop is written out here (not harness.runner) so these tests check
the learners alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from baselines.backbone import UNSEEN_LOGIT, BackboneConfig, pretrain
from baselines.finetune import FinetuneConfig, PretrainConfig
from baselines.iid_offline import IIDOfflineConfig
from baselines.ncm import NCMConfig
from baselines.networks.modules import BACKBONES, make_backbone
from baselines.replay import ReplayConfig, ReservoirBuffer
from baselines.slda import SLDAConfig
from harness.capabilities import MetaTrainReport
from harness.config import BuildContext, check_choice, check_range, train_config_hash
from harness.errors import HarnessError
from harness.protocol import Budget, Experience, LabeledPool, ScenarioSpec
from harness.registry import get_learner, make_config

SHAPE = (1, 8, 8)

pytestmark = pytest.mark.usefixtures("one_thread")




SPEC = ScenarioSpec(input_shape=SHAPE, n_outputs=4)
SMALL = {"width": 16}


def _gaussian(n_classes: int, n_per_class: int, seed: int, noise: float = 0.8,
              shape: tuple[int, ...] = SHAPE) -> tuple[torch.Tensor, torch.Tensor]:
    """`n_per_class` noisy copies of one random prototype per class, classes in order."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(n_classes, *shape, generator=g)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    return protos[y] + noise * torch.randn(len(y), *shape, generator=g), y


def _experiences(classes_per_exp: int, batch_size: int = 1, seed: int = 0) -> list[Experience]:
    """4 classes x (30 train, 20 test), `classes_per_exp` classes per experience, each
    experience's stream shuffled (4 per experience = one i.i.d. experience)."""
    x, y = _gaussian(4, 50, seed)
    g = torch.Generator().manual_seed(seed + 1)
    exps = []
    for k in range(0, 4, classes_per_exp):
        cls = tuple(range(k, k + classes_per_exp))
        train = torch.cat([torch.nonzero(y == c)[:30, 0] for c in cls])
        test = torch.cat([torch.nonzero(y == c)[30:, 0] for c in cls])
        train = train[torch.randperm(len(train), generator=g)]
        exps.append(Experience(x[train], y[train], x[test], y[test], batch_size=batch_size,
                               classes=cls, name=f"exp{k}"))
    return exps


def _pool(n_classes: int = 5, seed: int = 10) -> LabeledPool:
    x, y = _gaussian(n_classes, 20, seed)
    return LabeledPool(x, y, n_classes, name="toy-pool")


def _run(learner: torch.nn.Module, exps: list[Experience]) -> None:
    """The runner's loop: predict (no grad), then observe, batch after batch."""
    learner.train(True)
    for exp in exps:
        for x, y in exp:
            with torch.no_grad():
                learner.predict(x)
            learner.observe(x, y)


def _predict(learner: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Evaluation as the runner does it: eval mode, no grad."""
    learner.train(False)
    try:
        with torch.no_grad():
            return learner.predict(x)
    finally:
        learner.train(True)


def _acc(learner: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((_predict(learner, x).argmax(1) == y).float().mean())


def _build(cfg, spec: ScenarioSpec = SPEC, seed: int = 0):
    return cfg.build(BuildContext(spec=spec, seed=seed))


ALL_CONFIGS = {
    "finetune": FinetuneConfig(lr=0.05, **SMALL),
    "pretrain": PretrainConfig(lr=0.05, pretrain_epochs=2, **SMALL),
    "replay": ReplayConfig(lr=0.05, **SMALL),
    "iid-offline": IIDOfflineConfig(epochs=1, **SMALL),
    "ncm": NCMConfig(pretrain_epochs=2, **SMALL),
    "slda": SLDAConfig(pretrain_epochs=2, **SMALL),
}


# -- learning ----------------------------------------------------------------------------------


def test_finetune_learns_above_chance() -> None:
    exps = _experiences(classes_per_exp=4)
    learner = _build(FinetuneConfig(lr=0.05, **SMALL))
    before = _acc(learner, exps[0].x_test, exps[0].y_test)
    _run(learner, exps)
    after = _acc(learner, exps[0].x_test, exps[0].y_test)
    assert after >= 0.8 > before + 0.3, (before, after)  # chance is 0.25


def test_replay_forgets_less_than_finetune_on_class_incremental_stream() -> None:
    exps = _experiences(classes_per_exp=2)
    first = exps[0]
    accs = {}
    for name, cfg in [("finetune", FinetuneConfig(lr=0.05, **SMALL)),
                      ("replay", ReplayConfig(lr=0.05, **SMALL))]:
        learner = _build(cfg)
        _run(learner, exps[:1])
        learned = _acc(learner, first.x_test, first.y_test)
        _run(learner, exps[1:])
        accs[name] = (learned, _acc(learner, first.x_test, first.y_test))
    (ft_learned, ft_final), (rp_learned, rp_final) = accs["finetune"], accs["replay"]
    assert ft_learned >= 0.8 and rp_learned >= 0.8, accs
    assert ft_final <= ft_learned - 0.3, accs  # finetune forgets the first classes
    assert rp_final > ft_final + 0.2, accs


def test_iid_offline_fits_lazily_at_evaluation_and_is_an_upper_bound() -> None:
    exps = _experiences(classes_per_exp=2)
    learner = _build(IIDOfflineConfig(lr=3e-3, **SMALL))
    x_test = torch.cat([e.x_test for e in exps])
    y_test = torch.cat([e.y_test for e in exps])
    initial = learner.predict(x_test)
    _run(learner, exps)
    # Train mode: the last fitted model (here the initial one), no fitting.
    assert torch.equal(learner.predict(x_test), initial)
    assert learner._n_fitted == 0
    assert _acc(learner, x_test, y_test) >= 0.9  # eval mode: fitted on all 120 samples
    assert learner._n_fitted == 120
    out = _predict(learner, x_test)
    assert torch.equal(_predict(learner, x_test), out)  # no new samples: no re-fit


def test_finetune_regression_reduces_mse() -> None:
    spec = ScenarioSpec(input_shape=(3,), n_outputs=1, task="regression")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(440, 3, generator=g)
    y = x @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.3
    exp = Experience(x[:400], y[:400], x[400:], y[400:], batch_size=8)
    for cfg in [FinetuneConfig(lr=0.05, width=32), ReplayConfig(lr=0.05, width=32)]:
        learner = _build(cfg, spec)
        before = float(((_predict(learner, exp.x_test) - exp.y_test) ** 2).mean())
        _run(learner, [exp])
        out = _predict(learner, exp.x_test)
        assert out.shape == (40, 1)
        assert float(((out - exp.y_test) ** 2).mean()) < 0.2 * before


# -- closed forms ------------------------------------------------------------------------------


def _toy_2d(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """3 Gaussian classes in 2-D with a shared, correlated covariance, shuffled."""
    rng = np.random.default_rng(seed)
    means = np.array([[2.0, 0.0], [-1.0, 2.0], [-1.0, -2.0]])
    chol = np.array([[1.0, 0.0], [0.6, 0.8]])
    y = rng.permutation(np.repeat(np.arange(3), n))
    return means[y] + rng.standard_normal((len(y), 2)) @ chol.T, y


def _feed(learner, x: np.ndarray, y: np.ndarray, batch: int) -> None:
    for i in range(0, len(x), batch):
        learner.observe(torch.tensor(x[i:i + batch], dtype=torch.float32),
                        torch.tensor(y[i:i + batch]))


def test_ncm_means_and_logits_match_numpy() -> None:
    spec = ScenarioSpec(input_shape=(2,), n_outputs=4)  # class 3 never appears
    learner = _build(NCMConfig(backbone="identity", pretrain=False), spec)
    x, y = _toy_2d(0, 20)
    x = x.astype(np.float32)
    _feed(learner, x, y, batch=7)
    means = np.stack([x[y == c].astype(np.float64).mean(0) for c in range(3)])
    np.testing.assert_allclose(learner.means[:3].numpy(), means, rtol=1e-12, atol=1e-12)
    q = np.array([[0.5, 0.5], [3.0, -1.0], [-2.0, -2.0]], dtype=np.float32)
    logits = _predict(learner, torch.tensor(q))
    expected = -((q[:, None, :].astype(np.float64) - means[None]) ** 2).sum(-1)
    np.testing.assert_allclose(logits[:, :3].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(logits).all() and (logits[:, 3] == UNSEEN_LOGIT).all()
    assert logits.argmax(1).tolist() == expected.argmax(1).tolist()


def test_slda_matches_the_streaming_recurrence_and_closed_form_lda() -> None:
    spec = ScenarioSpec(input_shape=(2,), n_outputs=4)
    learner = _build(SLDAConfig(backbone="identity", pretrain=False), spec)
    x, y = _toy_2d(1, 100)
    x = x.astype(np.float32).astype(np.float64)
    _feed(learner, x, y, batch=5)
    # The paper's per-sample updates, by hand.
    mu, cnt, cov = np.zeros((4, 2)), np.zeros(4), np.zeros((2, 2))
    for n, (xi, c) in enumerate(zip(x, y, strict=True)):
        d = xi - mu[c]
        cov = (n * cov + n / (n + 1) * np.outer(d, d)) / (n + 1)
        mu[c] += d / (cnt[c] + 1)
        cnt[c] += 1
    np.testing.assert_allclose(learner.cov.numpy(), cov, rtol=1e-10)
    np.testing.assert_allclose(learner.means.numpy(), mu, rtol=1e-10, atol=1e-12)
    lam = np.linalg.pinv((1 - 1e-4) * cov + 1e-4 * np.eye(2))
    w = lam @ mu[:3].T
    b = -0.5 * (mu[:3].T * w).sum(0)
    xt, yt = _toy_2d(2, 100)
    logits = _predict(learner, torch.tensor(xt, dtype=torch.float32))
    np.testing.assert_allclose(logits[:, :3].numpy(), xt.astype(np.float32) @ w + b,
                               rtol=1e-4, atol=1e-4)
    assert (logits[:, 3] == UNSEEN_LOGIT).all()
    # Closed-form LDA (pooled within-class covariance) predicts the same classes.
    pooled = sum(np.cov(x[y == c].T, bias=True) * (y == c).sum() for c in range(3)) / len(y)
    means = np.stack([x[y == c].mean(0) for c in range(3)])
    lam_cf = np.linalg.inv(pooled)
    lda = (xt @ lam_cf @ means.T - 0.5 * ((means @ lam_cf) * means).sum(1)).argmax(1)
    assert (logits.argmax(1).numpy() == lda).mean() >= 0.97
    assert (lda == yt).mean() >= 0.8
    # The classifier is cached until new data arrives.
    cached = learner.classifier()
    assert learner.classifier() is cached
    _feed(learner, x[:1], y[:1], batch=1)
    assert learner.classifier() is not cached


def test_slda_without_shrinkage_uses_the_pseudo_inverse() -> None:
    spec = ScenarioSpec(input_shape=(3,), n_outputs=3)
    learner = _build(SLDAConfig(backbone="identity", pretrain=False, shrinkage=0.0), spec)
    x, y = _toy_2d(3, 30)
    x = np.concatenate([x, np.zeros((len(x), 1))], 1).astype(np.float32)  # singular cov
    _feed(learner, x, y, batch=4)
    cov, mu = learner.cov.numpy(), learner.means.numpy()
    w = np.linalg.pinv(cov, hermitian=True) @ mu.T
    logits = _predict(learner, torch.tensor(x[:10]))
    assert torch.isfinite(logits).all()
    np.testing.assert_allclose(logits.numpy(), x[:10] @ w - 0.5 * (mu.T * w).sum(0),
                               rtol=1e-4, atol=1e-4)


def test_reservoir_buffer_is_uniform_and_bounded() -> None:
    n_items, size, runs = 20, 5, 2000
    kept = np.zeros(n_items)
    chunks = [3, 1, 7, 9]
    for seed in range(runs):
        buf = ReservoirBuffer(size, seed)
        start = 0
        for k in chunks:
            ids = torch.arange(start, start + k)
            buf.add(ids.float()[:, None], ids)
            start += k
            assert len(buf) == min(start, size) and len(buf.x) == size
        kept[buf.y.numpy()] += 1
    freq = kept / runs
    assert np.abs(freq - size / n_items).max() < 0.05, freq  # 5 standard deviations
    bx, by = buf.sample(3, torch.Generator().manual_seed(0))
    assert len(set(by.tolist())) == 3 and torch.equal(bx[:, 0].long(), by)
    assert len(buf.sample(50, torch.Generator())[1]) == size


# -- pre-training and checkpoints --------------------------------------------------------------


def test_pretrain_reduces_pool_loss_and_respects_budget() -> None:
    pool = _pool()
    cfg = BackboneConfig(pretrain=True, pretrain_epochs=6, pretrain_lr=3e-3, pretrain_batch=16,
                         **SMALL)
    features = make_backbone("convnet-small", SPEC, 16)
    calls = []
    losses = pretrain(features, pool, cfg, "cpu", lambda *a: calls.append(a))
    assert losses[-1] < 0.5 * losses[0], losses
    assert [c[:3] for c in calls] == [("pretrain", e, 6) for e in range(7)]  # 0: the start
    assert all("loss" in c[3] for c in calls[1:])
    assert len(pretrain(features, pool, cfg, "cpu", budget=Budget(steps=3))) == 1


@pytest.mark.parametrize("name", ["pretrain", "replay", "iid-offline", "ncm", "slda"])
def test_checkpoint_roundtrip_gives_identical_predictions(name: str, tmp_path) -> None:
    cfg = dataclasses.replace(ALL_CONFIGS[name], pretrain=True)
    exps = _experiences(classes_per_exp=2, batch_size=3)
    a = _build(cfg, seed=0)
    assert a.needs_meta_train
    assert a.meta_train(_pool(), Budget(), None, None) == MetaTrainReport(steps_done=None)
    sd = a.state_dict()
    assert sd and all(k.startswith("features.") and isinstance(v, torch.Tensor)
                      for k, v in sd.items())
    save_file(sd, tmp_path / "ckpt.safetensors")
    loaded = load_file(tmp_path / "ckpt.safetensors")
    x = torch.cat([e.x_test for e in exps])
    other_seed = _build(cfg, seed=5)  # the checkpoint is the whole start state, for any seed
    other_seed.load_state_dict(loaded)
    assert torch.equal(_predict(a, x), _predict(other_seed, x))
    b = _build(cfg, seed=0)
    b.load_state_dict(loaded)
    _run(a, exps)
    _run(b, exps)
    assert torch.equal(_predict(a, x), _predict(b, x))
    a.reset()  # back to the pre-trained state
    fresh = _build(cfg, seed=0)
    fresh.load_state_dict(sd)
    assert torch.equal(_predict(a, x), _predict(fresh, x))


@pytest.mark.parametrize("name", ["pretrain", "ncm", "slda"])
def test_checkpoint_does_not_depend_on_n_outputs(name: str) -> None:
    cfg, pool = ALL_CONFIGS[name], _pool()
    sds = []
    for n_outputs in (4, 7):
        learner = _build(cfg, dataclasses.replace(SPEC, n_outputs=n_outputs))
        learner.meta_train(pool, Budget(), None, None)
        sds.append(learner.state_dict())
    assert sds[0].keys() == sds[1].keys()
    assert all(torch.equal(sds[0][k], sds[1][k]) for k in sds[0])
    other = _build(cfg, dataclasses.replace(SPEC, n_outputs=9))
    other.load_state_dict(sds[0])
    assert _predict(other, torch.zeros(2, *SHAPE)).shape == (2, 9)


def test_meta_train_needs_a_labelled_pool() -> None:
    learner = _build(ALL_CONFIGS["ncm"])
    with pytest.raises(HarnessError, match="pretrain=false"):
        learner.meta_train(None, Budget(), None, None)


# -- determinism, shapes, configs --------------------------------------------------------------


@pytest.mark.parametrize("name", ["finetune", "replay", "iid-offline"])
def test_same_seed_same_predictions(name: str) -> None:
    exps = _experiences(classes_per_exp=2, batch_size=2)
    x = torch.cat([e.x_test for e in exps])
    outs = []
    for seed in (0, 0, 1):
        learner = _build(ALL_CONFIGS[name], seed=seed)
        _run(learner, exps)
        outs.append(_predict(learner, x))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


@pytest.mark.parametrize("name", list(ALL_CONFIGS))
def test_output_shapes_and_predict_does_not_learn(name: str) -> None:
    cfg = dataclasses.replace(ALL_CONFIGS[name], pretrain=False)
    learner = _build(cfg, dataclasses.replace(SPEC, n_outputs=6))
    x, y = _gaussian(4, 2, seed=3)
    learner.observe(x, y)
    for b in (1, 5):
        xb = torch.randn(b, *SHAPE)
        state = {k: v.clone() for k, v in torch.nn.Module.state_dict(learner).items()}
        with torch.no_grad():
            out = learner.predict(xb)
        assert out.shape == (b, 6) and torch.isfinite(out).all()
        after = torch.nn.Module.state_dict(learner)
        assert all(torch.equal(state[k], after[k]) for k in state), "predict changed the state"
        assert _predict(learner, xb).shape == (b, 6)


def test_conv4_trains_on_batch_one_and_keeps_running_stats() -> None:
    assert make_backbone("conv4", ScenarioSpec((1, 28, 28), 5), 64).out_dim == 64
    learner = _build(FinetuneConfig(backbone="conv4", lr=0.01, width=8))
    _run(learner, _experiences(classes_per_exp=4)[:1])  # 8x8 -> 1x1 maps at batch 1
    bn = learner.features.net[1]
    assert bn.track_running_stats and int(bn.num_batches_tracked) == 120
    assert torch.isfinite(_predict(learner, torch.randn(3, *SHAPE))).all()


def test_check_range_and_check_choice_say_what_is_allowed() -> None:
    cfg = FinetuneConfig(width=8)
    check_range(cfg, "width", "steps_per_batch", ge=1)  # attributes of a config: pass
    check_range({"x": None}, "x", gt=0)  # None: an optional field left unset, not checked
    for kwargs, message in [
        (dict(ge=9), "width must be >= 9, got 8"), (dict(gt=8), "width must be > 8, got 8"),
        (dict(le=7), "width must be <= 7, got 8"), (dict(ge=0, lt=8), r"in \[0, 8\), got 8"),
        (dict(gt=8, le=9), r"in \(8, 9\], got 8"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_range(cfg, "width", **kwargs)
    with pytest.raises(ValueError, match="b must be > 0, got nan"):
        check_range({"a": 1.0, "b": float("nan")}, "a", "b", gt=0)
    check_choice(cfg, "optimizer", ("sgd", "adam"))
    with pytest.raises(ValueError, match="optimizer must be 'adam', 'lbfgs' or 'rprop', got 'sgd'"):
        check_choice(cfg, "optimizer", ("adam", "lbfgs", "rprop"))


def test_configs_validate_and_lr_is_eval_only() -> None:
    for bad in [lambda: FinetuneConfig(lr=0), lambda: ReplayConfig(buffer_size=0),
                lambda: SLDAConfig(shrinkage=2.0), lambda: BackboneConfig(width=0),
                lambda: IIDOfflineConfig(epochs=0), lambda: FinetuneConfig(optimizer="rmsprop")]:
        with pytest.raises(ValueError, match="must be"):
            bad()
    assert train_config_hash(FinetuneConfig(lr=0.1)) == train_config_hash(FinetuneConfig(lr=1.0))
    assert train_config_hash(FinetuneConfig(width=8)) != train_config_hash(FinetuneConfig())
    p = PretrainConfig()
    assert p.pretrain and p.train == "head"
    cfg = make_config(get_learner("replay"), "quick", {"lr": "0.01", "buffer_size": "50"})
    assert cfg.lr == 0.01 and cfg.buffer_size == 50
    with pytest.raises(HarnessError, match="conv4"):
        make_backbone("conv5", SPEC, 8)
    with pytest.raises(HarnessError, match="mlp"):
        make_backbone("conv4", ScenarioSpec((11,), 1), 8)
    assert {"conv4", "convnet-small", "mlp"} <= set(BACKBONES)
    with pytest.raises(HarnessError, match="classification"):
        _build(SLDAConfig(pretrain=False), ScenarioSpec((3,), 1, task="regression"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(ALL_CONFIGS))
def test_learners_run_on_cuda(name: str) -> None:
    exps = _experiences(classes_per_exp=2, batch_size=3)
    cfg = ALL_CONFIGS[name]
    outs = {}
    for device in ("cpu", "cuda"):
        learner = cfg.build(BuildContext(spec=SPEC, seed=0, device=device))
        if learner.needs_meta_train:
            learner.meta_train(_pool(), Budget(), None, None)
        learner.train(True)
        for exp in exps:
            for x, y in exp:
                with torch.no_grad():
                    learner.predict(x.to(device))
                learner.observe(x.to(device), y.to(device))
        out = _predict(learner, torch.cat([e.x_test for e in exps]).to(device))
        assert out.device.type == device and torch.isfinite(out).all()
        outs[device] = out.cpu()
    agree = (outs["cpu"].argmax(1) == outs["cuda"].argmax(1)).float().mean()
    assert agree >= 0.9, f"cpu and cuda disagree on {1 - agree:.0%} of the test samples"
