"""The forecasting metrics of regression streams, from the runner's record and the stream
itself (docs/design.md D3).

Reference forecasts are computed from the scored stream, never run as learners, so every run
of a scenario carries its own skill and MASE:
  - persistence: the input values `spec.persistence` names (the current frame, the last value
    of a window); when the scenario names none, the last target observed before the batch
    (zeros before the first), which is what the `persistence` learner predicts;
  - seasonal-naive: the input values `spec.seasonal` names (one season back).
Values: `online_mae`; `skill_persistence` = 1 - online MSE / persistence's online MSE on the
same samples, and `test_skill_persistence` on the held-out sets after the stream (input-form
persistence only); `mase` against seasonal-naive; `online_mse_<name>` per named output dim;
`mse_before_change`, `mse_after_change`, `recovery_steps` and `recovered_fraction` around the
scenario's regime changes (`harness.metrics.recovery`, window `RECOVERY_WINDOW`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from harness import metrics
from harness.capabilities import RegimeChanges
from harness.protocol import Experience, Scenario, ScenarioSpec
from harness.runner import StreamRecord, residuals

RECOVERY_WINDOW = 25
"""Samples averaged before and after a regime change (`harness.metrics.recovery`)."""

Values = dict[str, tuple[float, int]]


def from_input(x: Tensor, index: tuple[int, ...]) -> Tensor:
    """The forecast that copies the input values `index` names: x.flatten(1)[:, index]."""
    return x.flatten(1)[:, list(index)].float()


def last_target(experiences: Sequence[Experience]) -> Tensor:
    """Per stream sample, the last target observed before its batch (zeros before any)."""
    ys = torch.cat([e.y.reshape(len(e.y), -1) for e in experiences]).float()
    starts = torch.cat([torch.arange(e.n_train) // e.batch_size * e.batch_size + offset
                        for e, offset in zip(experiences, _offsets(experiences), strict=True)])
    prev = torch.cat([torch.zeros(1, ys.shape[1]), ys])
    return prev[starts]  # prev[i] is ys[i - 1]


def _offsets(experiences: Sequence[Experience]) -> list[int]:
    sizes = [e.n_train for e in experiences]
    return [sum(sizes[:k]) for k in range(len(sizes))]


def _errors(pred: Tensor, y: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample squared and absolute errors averaged over dims, as the runner scores them."""
    diff = residuals(pred, y.float())
    return (diff**2).mean(dim=1).numpy(), diff.abs().mean(dim=1).numpy()


def is_forecasting(scenario: Scenario) -> bool:
    """Whether a regression scenario is a forecasting stream: it names a persistence or
    seasonal forecast or its outputs, or declares regime changes."""
    spec = scenario.spec
    return bool(spec.persistence or spec.seasonal or spec.output_names
                or isinstance(scenario, RegimeChanges))


def forecast_values(rec: StreamRecord, scenario: Scenario) -> Values:
    """The forecasting metrics of one regression stream record (module docstring)."""
    spec: ScenarioSpec = scenario.spec
    exps = scenario.experiences
    n = rec.samples
    out: Values = {"online_mae": (metrics.online_mae(rec.prequential_abs), n)}
    x = torch.cat([e.x for e in exps])
    y = torch.cat([e.y for e in exps])
    persist = from_input(x, spec.persistence) if spec.persistence else last_target(exps)
    sq, _ = _errors(persist, y)
    out["skill_persistence"] = (metrics.skill(rec.prequential.mean(), sq.mean()), n)
    if spec.persistence:
        ref = [float(_errors(from_input(e.x_test, spec.persistence), e.y_test)[0].mean())
               for e in exps]
        n_test = int(rec.test_sizes.sum())
        out["test_skill_persistence"] = (metrics.skill(rec.R[-1].mean(), np.mean(ref)), n_test)
    if spec.seasonal:
        _, ab = _errors(from_input(x, spec.seasonal), y)
        out["mase"] = (metrics.mase(rec.prequential_abs.mean(), ab.mean()), n)
    for j, name in enumerate(spec.output_names if len(rec.prequential_dims) else ()):
        out[f"online_mse_{name}"] = (float(rec.prequential_dims[:, j].mean()), n)
    changes = tuple(scenario.change_points) if isinstance(scenario, RegimeChanges) else ()
    if changes:
        per = metrics.recovery(rec.prequential, changes, RECOVERY_WINDOW)
        k = len(per)
        for key, name in (("before", "mse_before_change"), ("after", "mse_after_change"),
                          ("steps", "recovery_steps"), ("recovered", "recovered_fraction")):
            out[name] = (float(np.mean([p[key] for p in per])), k)
    return out
