"""Forecasting metrics of regression streams: the pure functions against hand-computed values,
and `harness.forecasting` on small hand-made streams."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from harness import metrics
from harness.forecasting import forecast_values, is_forecasting, last_target
from harness.protocol import Experience, ScenarioSpec
from harness.runner import run_stream
from scenarios.base import BuiltScenario


def test_online_mae_skill_mase_by_hand():
    assert metrics.online_mae([0.5, 1.5, 1.0]) == pytest.approx(1.0)
    assert metrics.skill(0.25, 1.0) == pytest.approx(0.75)
    assert metrics.skill(2.0, 1.0) == pytest.approx(-1.0)
    assert math.isnan(metrics.skill(1.0, 0.0))
    assert metrics.mase(0.3, 0.6) == pytest.approx(0.5)
    assert math.isnan(metrics.mase(0.3, 0.0))
    with pytest.raises(ValueError):
        metrics.online_mae([-1.0])
    with pytest.raises(ValueError):
        metrics.skill(-0.1, 1.0)


def test_recovery_by_hand():
    # regime 1: errors 1, 1, 1, 1; change at 4; then 5, 4, 3, 1, 1, 0.5; change at 10; 2, 0.2
    e = [1, 1, 1, 1, 5, 4, 3, 1, 1, 0.5, 2, 0.2]
    out = metrics.recovery(e, [4, 10], window=2)
    # change 1: before = mean(1, 1) = 1; after = mean(5, 4) = 4.5; 2-sample means from 4:
    # 4.5, 3.5, 2, 1, 0.75 -> first <= 1 at s = 3
    assert out[0] == {"before": 1.0, "after": 4.5, "steps": 3.0, "recovered": 1.0}
    # change 2: before = mean(1, 0.5) = 0.75; after = mean(2, 0.2) = 1.1; only one window
    # (1.1 > 0.75): not recovered, steps = the regime's length, 2
    assert out[1]["before"] == pytest.approx(0.75)
    assert out[1]["after"] == pytest.approx(1.1)
    assert out[1]["steps"] == 2.0 and out[1]["recovered"] == 0.0
    with pytest.raises(ValueError):
        metrics.recovery(e, [0], window=2)
    with pytest.raises(ValueError):
        metrics.recovery(e, [5, 4], window=2)


def test_last_target_respects_batches():
    y = torch.arange(1.0, 6.0).reshape(5, 1)
    a = Experience(x=torch.zeros(3, 2), y=y[:3], x_test=torch.zeros(0, 2),
                   y_test=torch.zeros(0, 1), batch_size=2)
    b = Experience(x=torch.zeros(2, 2), y=y[3:], x_test=torch.zeros(0, 2),
                   y_test=torch.zeros(0, 1), batch_size=1)
    # batches: [1, 2] [3] | [4] [5]: predictions 0, 0, 2 | 3, 4
    assert last_target([a, b]).flatten().tolist() == [0.0, 0.0, 2.0, 3.0, 4.0]


@dataclass(frozen=True, eq=False)
class _Changing(BuiltScenario):
    change_points: tuple[int, ...] = ()


class _Const:
    """Predicts a constant vector; learns nothing."""

    def __init__(self, value: list[float]) -> None:
        self.value = torch.tensor([value])

    def predict(self, x):
        return self.value.expand(len(x), -1).clone()

    def observe(self, x, y):
        pass


def _window_scenario() -> _Changing:
    # windows of 3 past values; target = next value; season 2 -> seasonal index 3 - 2 = 1
    series = torch.tensor([0.0, 1.0, 0.0, 2.0, 1.0, 3.0, 2.0, 4.0])
    x = torch.stack([series[i : i + 3] for i in range(5)])
    y = series[3:8].reshape(5, 1)
    exp = Experience(x=x, y=y, x_test=x[:2], y_test=y[:2])
    spec = ScenarioSpec(input_shape=(3,), n_outputs=1, task="regression", persistence=(2,),
                        seasonal=(1,))
    return _Changing(id="toy", version=1, spec=spec, experiences=[exp], val_experiences=[],
                     meta_train=None, params={}, change_points=(2,))


def test_forecast_values_by_hand():
    sc = _window_scenario()
    assert is_forecasting(sc)
    rec = run_stream(_Const([1.0]), sc.experiences, sc.spec)
    v = {k: val for k, (val, _) in forecast_values(rec, sc).items()}
    # targets 2, 1, 3, 2, 4; constant forecast 1: errors 1, 0, 2, 1, 3
    assert rec.prequential.tolist() == [1.0, 0.0, 4.0, 1.0, 9.0]
    assert v["online_mae"] == pytest.approx(7 / 5)
    # persistence (last window value) 0, 2, 1, 3, 2 vs targets: errors 2, -1, 2, -1, 2
    assert v["skill_persistence"] == pytest.approx(1 - (15 / 5) / (14 / 5))
    # seasonal-naive (x[1]) 1, 0, 2, 1, 3 vs targets: |errors| 1, 1, 1, 1, 1
    assert v["mase"] == pytest.approx((7 / 5) / 1.0)
    # test set = first two samples: constant MSE (1 + 0) / 2; persistence (4 + 1) / 2
    assert v["test_skill_persistence"] == pytest.approx(1 - 0.5 / 2.5)
    # change at 2, window 25 clipped: before = mean(1, 0), after = mean(4, 1, 9)
    assert v["mse_before_change"] == pytest.approx(0.5)
    assert v["mse_after_change"] == pytest.approx(14 / 3)
    assert v["recovery_steps"] == 3.0 and v["recovered_fraction"] == 0.0


def test_persistence_itself_has_zero_skill_and_named_dims():
    x = torch.rand(6, 2)
    y = torch.rand(6, 2)
    exp = Experience(x=x, y=y, x_test=x, y_test=y)
    spec = ScenarioSpec(input_shape=(2,), n_outputs=2, task="regression",
                        output_names=("a", "b"))
    sc = _Changing(id="toy", version=1, spec=spec, experiences=[exp], val_experiences=[],
                   meta_train=None, params={})

    class LastTarget(_Const):
        def observe(self, x, y):
            self.value = y[-1:].clone()

    rec = run_stream(LastTarget([0.0, 0.0]), sc.experiences, spec)
    v = forecast_values(rec, sc)
    assert v["skill_persistence"][0] == pytest.approx(0.0, abs=1e-6)
    assert "test_skill_persistence" not in v and "mase" not in v
    prev = torch.cat([torch.zeros(1, 2), y[:-1]])
    for j, name in enumerate("ab"):
        assert v[f"online_mse_{name}"][0] == pytest.approx(
            float(((prev[:, j] - y[:, j]) ** 2).mean()), rel=1e-6)
    assert np.allclose(rec.prequential_abs, (prev - y).abs().mean(dim=1).numpy(), atol=1e-7)
