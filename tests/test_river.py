"""`river:<Model>`: the adapter's predictions equal river's own, run directly on the same data
in the same order; its fallbacks, limits and errors."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import need

from baselines.river_adapter import MAX_FEATURE_WEIGHTS, MAX_SERIES, RiverConfig
from harness import api
from harness.config import BuildContext
from harness.errors import DivergedError, HarnessError
from harness.protocol import ScenarioSpec
from harness.registry import get_learner, make_config
from scenarios.sine import SineIncrementalConfig

river = need("river")
from river import linear_model, optim, preprocessing, time_series  # noqa: E402

W, M = 8, 4
SPEC = ScenarioSpec(input_shape=(W,), n_outputs=1, task="regression", persistence=(W - 1,),
                    seasonal=(W - M,))
"""Windows of 8 past values, season 4: persistence x[7], seasonal-naive x[4]."""
BARE = ScenarioSpec(input_shape=(W,), n_outputs=1, task="regression")
"""The same windows with no persistence and no season declared."""


def _stream(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """A noisy season-4 series with a drift, as (window, next value) pairs."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n + W, dtype=torch.float64)
    v = torch.sin(2 * math.pi * t / M) + 0.01 * t + 0.1 * torch.randn(n + W, generator=g,
                                                                      dtype=torch.float64)
    x = v.unfold(0, W, 1)[:-1].float()
    return x, v[W:].reshape(-1, 1).float()


def _build(spec: ScenarioSpec = SPEC, **cfg):
    return RiverConfig(**cfg).build(BuildContext(spec=spec))


def _adapter(x, y, spec: ScenarioSpec = SPEC, **cfg) -> list[float]:
    learner = _build(spec, **cfg)
    out = []
    for i in range(len(x)):
        out.append(learner.predict(x[i : i + 1])[0, 0].item())
        learner.observe(x[i : i + 1], y[i : i + 1])
    return out


def _f32(v: float) -> float:
    return float(torch.tensor(v, dtype=torch.float32))


def _direct_regressor(model, x, y) -> list[float]:
    out = []
    for xi, yi in zip(x.double().tolist(), y[:, 0].double().tolist(), strict=True):
        feats = dict(enumerate(xi))
        out.append(_f32(model.predict_one(feats)))
        model.learn_one(feats, yi)
    return out


def _direct_forecaster(model, x, y) -> list[float]:
    out = []
    for xi, yi in zip(x.tolist(), y[:, 0].double().tolist(), strict=True):
        try:
            value = float(model.forecast(horizon=1)[0])
        except IndexError:
            value = xi[-1]  # the adapter's fallback: persistence
        out.append(_f32(value))
        model.learn_one(yi)
    return out


def test_linear_regression_equals_river_and_its_lr_reaches_the_optimizer() -> None:
    x, y = _stream()
    by_lr = {}
    for lr in (0.01, 0.003):
        by_lr[lr] = _adapter(x, y, model="LinearRegression", lr=lr)
        assert by_lr[lr] == _direct_regressor(
            linear_model.LinearRegression(optimizer=optim.SGD(lr)), x, y)
    assert by_lr[0.01][0] == 0.0  # zero weights before any sample
    assert by_lr[0.01][1:] != by_lr[0.003][1:]
    got = _adapter(x, y, model="LinearRegression", optimizer="adam", lr=0.05, l2=0.001)
    assert got == _direct_regressor(
        linear_model.LinearRegression(optimizer=optim.Adam(0.05), l2=0.001), x, y)


def test_pa_regressor_equals_river() -> None:
    x, y = _stream()
    for mode in (1, 2):
        got = _adapter(x, y, model="PARegressor", C=0.5, mode=mode, eps=0.05)
        assert got == _direct_regressor(linear_model.PARegressor(C=0.5, mode=mode, eps=0.05),
                                        x, y)


def test_holt_winters_equals_river_after_persistence() -> None:
    x, y = _stream()
    got = _adapter(x, y, model="HoltWinters", alpha=0.4, beta=0.1, gamma=0.2)
    hw = time_series.HoltWinters(alpha=0.4, beta=0.1, gamma=0.2, seasonality=M)
    assert got == _direct_forecaster(hw, x, y)
    # river needs max(2, m) = 4 points: until then the window's last value (persistence)
    assert got[:4] == x[:4, -1].tolist()
    assert got[4] != x[4, -1].item()
    # beta = 0 (no trend) without a season: river's level-only model
    got = _adapter(x, y, BARE, model="HoltWinters", alpha=0.4, beta=0.0)
    want = _direct_forecaster(time_series.HoltWinters(alpha=0.4, beta=0.0), x, y)
    assert got[2:] == want[2:]


def test_forecasters_fall_back_to_the_last_target_then_zero() -> None:
    x, y = _stream(6)
    got = _adapter(x, y, BARE, model="HoltWinters", alpha=0.5, beta=0.0)
    # no persistence declared: 0 before any target, then the last target until river has 2
    # points; then the level mean(y0, y1), then 0.5 y2 + 0.5 mean(y0, y1)
    y0, y1, y2 = y[:3, 0].double().tolist()
    assert got[:2] == [0.0, y[0, 0].item()]
    assert got[2] == _f32((y0 + y1) / 2)
    assert got[3] == _f32(0.5 * y2 + 0.5 * (y0 + y1) / 2)


def test_snarimax_equals_river_and_its_lr_reaches_the_regressor() -> None:
    x, y = _stream()
    got = _adapter(x, y, model="SNARIMAX", p=2, d=1, q=1, sp=1)
    assert got == _direct_forecaster(time_series.SNARIMAX(p=2, d=1, q=1, m=M, sp=1), x, y)
    assert got[0] == 0.0  # river forecasts from the start: 0 before any point
    slow = _adapter(x, y, model="SNARIMAX", lr=0.003)
    regressor = preprocessing.StandardScaler() | linear_model.LinearRegression(
        optimizer=optim.SGD(0.003))
    want = _direct_forecaster(time_series.SNARIMAX(p=2, d=1, q=0, m=M, sp=1,
                                                   regressor=regressor), x, y)
    assert slow == want and slow != _adapter(x, y, model="SNARIMAX")


def test_a_batch_is_read_as_consecutive_steps() -> None:
    x, y = _stream(60)
    learner = _build(model="HoltWinters")
    learner.observe(x[:50], y[:50])
    hw = time_series.HoltWinters(alpha=0.5, beta=0.05, gamma=0.3, seasonality=M)
    for v in y[:50, 0].double().tolist():
        hw.learn_one(v)
    want = torch.tensor(hw.forecast(horizon=5), dtype=torch.float64).float()
    assert torch.equal(learner.predict(x[50:55])[:, 0], want)
    learner.reset()  # forgets: back to persistence
    assert torch.equal(learner.predict(x[50:55]), x[50:55, -1:])


def test_batched_regressor_predicts_before_learning_the_rows() -> None:
    x, y = _stream(16)
    learner = _build(model="LinearRegression")
    model = linear_model.LinearRegression()
    for i in range(0, 16, 8):
        got = learner.predict(x[i : i + 8])[:, 0].tolist()
        feats = [dict(enumerate(r)) for r in x[i : i + 8].double().tolist()]
        assert got == [_f32(model.predict_one(f)) for f in feats]
        learner.observe(x[i : i + 8], y[i : i + 8])
        for f, t in zip(feats, y[i : i + 8, 0].double().tolist(), strict=True):
            model.learn_one(f, t)


def test_set_reaches_the_fields_and_bad_values_are_one_line() -> None:
    cfg = make_config(get_learner("river:HoltWinters"), None, {"alpha": "0.3"})
    assert (cfg.model, cfg.alpha) == ("HoltWinters", 0.3)
    with pytest.raises(HarnessError, match=r"alpha must be in \(0, 1\], got 1.5"):
        make_config(get_learner("river:HoltWinters"), None, {"alpha": "1.5"})
    with pytest.raises(HarnessError, match="optimizer"):
        make_config(get_learner("river:LinearRegression"), None, {"optimizer": "lbfgs"})
    with pytest.raises(HarnessError, match="needs beta > 0"):
        _build(model="HoltWinters", beta=0.0)


def test_limits_and_wrong_tasks() -> None:
    def spec(n_in: int, n_out: int) -> ScenarioSpec:
        return ScenarioSpec(input_shape=(n_in,), n_outputs=n_out, task="regression")

    _build(spec(MAX_FEATURE_WEIGHTS // 2, 2), model="LinearRegression")  # at the limit
    with pytest.raises(HarnessError, match=r"= 200,001 weights in pure Python.*\(limit 200,000\)"):
        _build(spec(200_001, 1), model="PARegressor")
    assert len(_build(spec(4, MAX_SERIES), model="SNARIMAX").models) == 64
    with pytest.raises(HarnessError, match="65 pure-Python univariate models.*limit 64"):
        _build(spec(4, 65), model="HoltWinters")
    with pytest.raises(HarnessError, match="regressor; this scenario is classification"):
        _build(ScenarioSpec((4,), 3))


def test_non_finite_predictions_raise_a_helpful_diverged_error() -> None:
    learner = _build(ScenarioSpec(input_shape=(1,), n_outputs=1, task="regression"))
    learner.observe(torch.tensor([[1e30]]), torch.tensor([[1.0]]))
    # the gradient -2e30 is clipped to -1e12 (river's clip_gradient): w = 0.01 * 1e12 = 1e10,
    # and the next prediction 1e10 * 1e30 = 1e40 is beyond float32
    with pytest.raises(DivergedError, match=r"river:LinearRegression .* after 1 samples.*"
                                            r"lower lr \(0.01\)"):
        learner.predict(torch.tensor([[1e30]]))


def test_unknown_model_through_the_cli(tmp_path: Path, usage_error) -> None:
    out = usage_error(["run", "--scenario", "sine-incremental", "--learner",
                       "river:NoSuchModel", "--no-tune", "--threads", "1", "--baselines",
                       "none", "--out", str(tmp_path)])
    assert "unknown river model 'NoSuchModel'" in out
    assert "LinearRegression, PARegressor, HoltWinters, SNARIMAX" in out


def test_runs_through_the_harness(tmp_path: Path) -> None:
    params = dict(n_functions=2, samples_per_function=40, test_points=10)
    res = api.run("sine-incremental", "river:LinearRegression", out_dir=tmp_path, tune_lr=False,
                  progress=False, **params)
    assert res.status == "ok", res.error
    rows = pd.read_csv(res.csv_path)
    online = rows[rows.metric == "online_mse"].iloc[0]
    assert (online.learner, online.n, online.lr) == ("river:LinearRegression", 80, 0.01)
    # the same stream through river directly: batches of 8, each predicted before it is learned
    scenario = SineIncrementalConfig(**params).build(seed=0)
    model, errors = linear_model.LinearRegression(), []
    for e in scenario.experiences:
        for xb, yb in e:
            feats = [dict(enumerate(r)) for r in xb.flatten(1).double().tolist()]
            pred = torch.tensor([model.predict_one(f) for f in feats], dtype=torch.float32)
            errors += ((pred - yb[:, 0]) ** 2).tolist()
            for f, t in zip(feats, yb[:, 0].double().tolist(), strict=True):
                model.learn_one(f, t)
    assert len(errors) == 80
    assert online.value == pytest.approx(sum(errors) / 80, rel=1e-6)


def test_the_lr_search_runs_only_for_models_that_read_lr(tmp_path: Path) -> None:
    small = dict(n_functions=2, samples_per_function=40, test_points=10)
    hw = api.run("sine-incremental", "river:PARegressor", out_dir=tmp_path, progress=False,
                 **small)
    lin = api.run("sine-incremental", "river:LinearRegression", out_dir=tmp_path,
                  progress=False, **small)
    assert hw.status == lin.status == "ok"
    rows = {r.learner: r for r in (hw, lin)}
    import json

    sections = {k: json.loads(r.csv_path.with_suffix(".json").read_text()) for k, r in
                rows.items()}
    assert sections["river:PARegressor"]["lr_selection"]["lr_selected_on"] == "none"
    assert sections["river:LinearRegression"]["lr_selection"]["lr_selected_on"].startswith(
        "val(")
