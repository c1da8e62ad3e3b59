"""`river:<Model>`: the adapter's predictions equal river's own, run directly on the same data
in the same order; its limits and errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import need

from baselines.river_adapter import RiverConfig
from harness import api
from harness.errors import HarnessError
from harness.protocol import ScenarioSpec

river = need("river")
from river import linear_model, optim, time_series  # noqa: E402

W, M = 8, 4
SPEC = ScenarioSpec(input_shape=(W,), n_outputs=1, task="regression", persistence=(W - 1,),
                    seasonal=(W - M,))


def _stream(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n + W, dtype=torch.float64)
    v = torch.sin(2 * math.pi * t / M) + 0.01 * t + 0.1 * torch.randn(n + W, generator=g,
                                                                      dtype=torch.float64)
    x = v.unfold(0, W, 1)[:-1].float()
    return x, v[W:].reshape(-1, 1).float()


def _adapter(x, y, **cfg):
    learner = RiverConfig(**cfg).build(type("Ctx", (), {"spec": SPEC})())
    out = []
    for i in range(len(x)):
        out.append(learner.predict(x[i : i + 1])[0, 0].item())
        learner.observe(x[i : i + 1], y[i : i + 1])
    return out


def _direct_regressor(model, x, y):
    out = []
    for xi, yi in zip(x.double().tolist(), y[:, 0].double().tolist(), strict=True):
        feats = dict(enumerate(xi))
        out.append(float(torch.tensor(model.predict_one(feats), dtype=torch.float32)))
        model.learn_one(feats, yi)
    return out


def _direct_forecaster(model, x, y):
    out = []
    for xi, yi in zip(x.tolist(), y[:, 0].double().tolist(), strict=True):
        try:
            value = float(model.forecast(horizon=1)[0])
        except IndexError:
            value = xi[-1]  # the adapter's fallback: persistence
        out.append(float(torch.tensor(value, dtype=torch.float32)))
        model.learn_one(yi)
    return out


@pytest.mark.parametrize("lr", [0.01, 0.003])
def test_linear_regression_equals_river(lr) -> None:
    x, y = _stream()
    got = _adapter(x, y, model="LinearRegression", lr=lr)
    want = _direct_regressor(linear_model.LinearRegression(optimizer=optim.SGD(lr)), x, y)
    assert got == want


def test_the_lr_reaches_the_optimizer() -> None:
    x, y = _stream(50)
    assert _adapter(x, y, model="LinearRegression", lr=0.01) != _adapter(
        x, y, model="LinearRegression", lr=0.003)
    got = _adapter(x, y, model="LinearRegression", optimizer="adam", lr=0.05)
    assert got == _direct_regressor(linear_model.LinearRegression(optimizer=optim.Adam(0.05)),
                                    x, y)


def test_pa_regressor_equals_river() -> None:
    x, y = _stream()
    got = _adapter(x, y, model="PARegressor", C=0.5)
    assert got == _direct_regressor(linear_model.PARegressor(C=0.5, mode=1, eps=0.1), x, y)


def test_holt_winters_and_snarimax_equal_river() -> None:
    x, y = _stream()
    got = _adapter(x, y, model="HoltWinters", alpha=0.4, beta=0.1, gamma=0.2)
    hw = time_series.HoltWinters(alpha=0.4, beta=0.1, gamma=0.2, seasonality=M)
    want = _direct_forecaster(hw, x, y)
    assert got == want
    assert got[0] == x[0, -1].item()  # before a season of points: the persistence forecast
    got = _adapter(x, y, model="SNARIMAX", p=2, d=1, q=0, sp=1)
    want = _direct_forecaster(time_series.SNARIMAX(p=2, d=1, q=0, m=M, sp=1), x, y)
    assert got == want


def test_a_batch_is_read_as_consecutive_steps() -> None:
    x, y = _stream(60)
    learner = RiverConfig(model="HoltWinters").build(type("Ctx", (), {"spec": SPEC})())
    learner.observe(x[:50], y[:50])
    hw = time_series.HoltWinters(alpha=0.5, beta=0.05, gamma=0.3, seasonality=M)
    for v in y[:50, 0].double().tolist():
        hw.learn_one(v)
    want = torch.tensor(hw.forecast(horizon=5), dtype=torch.float64).float()
    assert torch.equal(learner.predict(x[50:55])[:, 0], want)


def test_limits_and_wrong_tasks() -> None:
    big = ScenarioSpec(input_shape=(1, 32, 32), n_outputs=1024, task="regression")
    ctx = type("Ctx", (), {"spec": big})()
    with pytest.raises(HarnessError, match="limit"):
        RiverConfig(model="LinearRegression").build(ctx)
    with pytest.raises(HarnessError, match="one per output"):
        RiverConfig(model="HoltWinters").build(ctx)
    with pytest.raises(HarnessError, match="regressor"):
        RiverConfig().build(type("Ctx", (), {"spec": ScenarioSpec((4,), 3)})())
    with pytest.raises(ValueError, match="alpha"):
        RiverConfig(model="HoltWinters", alpha=1.5)


def test_unknown_model_through_the_cli(tmp_path: Path, usage_error) -> None:
    out = usage_error(["run", "--scenario", "sine-incremental", "--learner",
                       "river:NoSuchModel", "--baselines", "none", "--out", str(tmp_path)])
    assert "unknown river model" in out and "LinearRegression" in out


def test_runs_through_the_harness(tmp_path: Path) -> None:
    res = api.run("sine-incremental", "river:LinearRegression", out_dir=tmp_path, tune_lr=False,
                  progress=False, n_functions=2, samples_per_function=40, test_points=10)
    assert res.status == "ok", res.error
    assert math.isfinite(res.metrics["online_mse"]) and res.csv_path.is_file()
