"""The naive forecasts every forecasting learner must beat (docs/design.md D5).

  - `persistence` ("no change"): the input values the scenario names in `spec.persistence`
    (the current frame of `video-nextframe`, the last value of a `timeseries-stream` window);
    where it names none (e.g. `video-egomotion`), the last target observed before the batch,
    zeros before any.
  - `seasonal-naive`: the input values `spec.seasonal` names, the value one season back
    (`timeseries-stream` declares the series' season).
Neither learns anything from the stream beyond the last target, and neither has a learning
rate, so the harness runs no lr search for them. The harness computes the same forecasts from
the stream for the skill and MASE rows (`harness/forecasting.py`), so `persistence` scores a
skill of exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from harness.config import BuildContext
from harness.errors import HarnessError
from harness.forecasting import from_input
from harness.protocol import ScenarioSpec


class NaiveForecaster:
    """Predicts the input values `index` names, or the last observed target when `index` is
    empty."""

    def __init__(self, spec: ScenarioSpec, index: tuple[int, ...], name: str) -> None:
        if spec.task != "regression":
            raise HarnessError(f"{name} forecasts regression streams only; this scenario is "
                               f"{spec.task} (choose a regression scenario)")
        self.spec, self.index, self.name = spec, index, name
        self.reset()

    def reset(self) -> None:
        self.last = torch.zeros(1, self.spec.n_outputs)

    def predict(self, x: Tensor) -> Tensor:
        if self.index:
            return from_input(x, self.index)
        return self.last.to(x.device).expand(len(x), -1).clone()

    def observe(self, x: Tensor, y: Tensor) -> None:
        self.last = y[-1:].reshape(1, -1).float().cpu()

    def describe(self) -> dict[str, str | float]:
        how = "input values" if self.index else "last observed target"
        return {"variant": self.name, "forecast": how}


@dataclass
class PersistenceConfig:
    """The no-change forecast; no parameters."""

    PRESETS: ClassVar[dict[str, dict]] = {"quick": {}}

    def build(self, ctx: BuildContext) -> NaiveForecaster:
        return NaiveForecaster(ctx.spec, tuple(ctx.spec.persistence), "persistence")


@dataclass
class SeasonalNaiveConfig:
    """The value one season back; needs a scenario that declares its season."""

    PRESETS: ClassVar[dict[str, dict]] = {"quick": {}}

    def build(self, ctx: BuildContext) -> NaiveForecaster:
        if not ctx.spec.seasonal:
            raise HarnessError("seasonal-naive needs a scenario that declares a season "
                               "(timeseries-stream does); this one declares none")
        return NaiveForecaster(ctx.spec, tuple(ctx.spec.seasonal), "seasonal-naive")
