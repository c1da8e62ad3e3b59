"""`river:<Model>`: online regressors and forecasters of the `river` library inside the harness
loop (the `river` extra; `river` is imported only when such a learner is built).

Models (`MODELS`):
  - `LinearRegression` (`river.linear_model.LinearRegression`): the flattened input as
    features {i: x_i}; `optimizer` sgd | adam | adagrad | rmsprop (`river.optim`) at rate `lr`,
    which the harness tunes like every learner's (docs/design.md D4), and `l2`;
  - `PARegressor` (`river.linear_model.PARegressor`): passive-aggressive, `C`, `mode`, `eps`;
  - `HoltWinters` (`river.time_series.HoltWinters`): `alpha`, `beta`, `gamma`, the season m
    from the scenario (m = input length - `spec.seasonal[0]`, additive), no season when the
    scenario declares none or m = 1;
  - `SNARIMAX` (`river.time_series.SNARIMAX`): orders `p`, `d`, `q`, and with the scenario's
    season m > 1 the seasonal orders `sp`, `sd`, `sq`.
Each output dim has its own model. Regressors learn (x, y_d) pairs; the time-series models
(HoltWinters, SNARIMAX) are univariate: they learn the targets of the stream in order and
forecast ahead from their own history: row i of a batch gets the (i+1)-step forecast (the
stream's batches of 1 get one step; a held-out segment that follows the stream in time, as in
`timeseries-stream`, gets the multi-step forecast from the stream's end); until a model can
forecast (HoltWinters needs a season of points) the
prediction is the persistence forecast where the scenario declares one, else the last target,
else 0. Rows of a batch are learned in order.

river models are pure Python: a scenario needing more than `MAX_FEATURE_WEIGHTS` input x
output weights (regressors) or more than `MAX_SERIES` output dims (time-series models) is
refused with a one-line error.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from harness.config import BuildContext, check_choice, check_range
from harness.errors import HarnessError
from harness.forecasting import from_input
from harness.protocol import ScenarioSpec

REGRESSORS = ("LinearRegression", "PARegressor")
FORECASTERS = ("HoltWinters", "SNARIMAX")
MODELS = REGRESSORS + FORECASTERS
MAX_FEATURE_WEIGHTS = 200_000
"""Most inputs x outputs a regressor may face (one pure-Python model per output dim)."""
MAX_SERIES = 64
"""Most output dims a time-series model may face (one model per dim)."""
OPTIMIZERS = ("sgd", "adam", "adagrad", "rmsprop")


def _river() -> Any:
    try:
        import river  # noqa: PLC0415
        import river.linear_model  # noqa: F401, PLC0415
        import river.optim  # noqa: F401, PLC0415
        import river.time_series  # noqa: F401, PLC0415
    except ImportError:
        raise HarnessError("river:<Model> learners need river: pip install -e '.[river]'") from None
    return river


@dataclass
class RiverConfig:
    """A river model and its hyper-parameters (each used by the models named)."""

    model: str = "LinearRegression"
    """One of `MODELS`."""
    optimizer: Literal["sgd", "adam", "adagrad", "rmsprop"] = "sgd"
    """LinearRegression: river.optim optimizer."""
    lr: float = 0.01
    """LinearRegression: the optimizer's learning rate (tuned by the harness); > 0."""
    l2: float = 0.0
    """LinearRegression: L2 penalty; >= 0."""
    C: float = 1.0  # noqa: N815 (river's name)
    """PARegressor: aggressiveness; > 0."""
    mode: int = 1
    """PARegressor: 1 (PA-I) or 2 (PA-II)."""
    eps: float = 0.1
    """PARegressor: insensitivity of the epsilon-insensitive loss; >= 0."""
    alpha: float = 0.5
    """HoltWinters: level smoothing, in (0, 1]."""
    beta: float = 0.05
    """HoltWinters: trend smoothing, in [0, 1] (0: no trend)."""
    gamma: float = 0.3
    """HoltWinters: seasonal smoothing, in [0, 1] (used with a season)."""
    p: int = 2
    """SNARIMAX: autoregressive order; >= 0."""
    d: int = 1
    """SNARIMAX: differencing order; >= 0."""
    q: int = 0
    """SNARIMAX: moving-average order; >= 0."""
    sp: int = 1
    """SNARIMAX: seasonal autoregressive order (with a season); >= 0."""
    sd: int = 0
    """SNARIMAX: seasonal differencing order (with a season); >= 0."""
    sq: int = 0
    """SNARIMAX: seasonal moving-average order (with a season); >= 0."""

    PRESETS: ClassVar[dict[str, dict]] = {"quick": {}}

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise HarnessError(f"unknown river model {self.model!r}; the adapter supports "
                               f"{', '.join(MODELS)} (river:<Model>)")
        check_choice(self, "optimizer", OPTIMIZERS)
        check_choice(self, "mode", (1, 2))
        check_range(self, "lr", "C", gt=0)
        check_range(self, "l2", "eps", "beta", "gamma", ge=0)
        check_range(self, "beta", "gamma", "alpha", le=1)
        check_range(self, "alpha", gt=0)
        check_range(self, "p", "d", "q", "sp", "sd", "sq", ge=0)

    def build(self, ctx: BuildContext) -> RiverLearner:
        return RiverLearner(self, ctx.spec)

    def season(self, spec: ScenarioSpec) -> int:
        """The scenario's season m (1 when it declares none)."""
        n_in = int(torch.Size(spec.input_shape).numel())
        return n_in - spec.seasonal[0] if spec.seasonal else 1

    def make(self, spec: ScenarioSpec) -> Any:
        """One fresh river model."""
        river = _river()
        m = self.season(spec)
        if self.model == "LinearRegression":
            opt = {"sgd": river.optim.SGD, "adam": river.optim.Adam,
                   "adagrad": river.optim.AdaGrad, "rmsprop": river.optim.RMSProp}
            return river.linear_model.LinearRegression(optimizer=opt[self.optimizer](self.lr),
                                                       l2=self.l2)
        if self.model == "PARegressor":
            return river.linear_model.PARegressor(C=self.C, mode=self.mode, eps=self.eps)
        if self.model == "HoltWinters":
            seasonal = m > 1
            return river.time_series.HoltWinters(
                alpha=self.alpha, beta=self.beta or None,
                gamma=self.gamma if seasonal else None, seasonality=m if seasonal else 0)
        if m > 1:
            return river.time_series.SNARIMAX(p=self.p, d=self.d, q=self.q, m=m, sp=self.sp,
                                               sd=self.sd, sq=self.sq)
        return river.time_series.SNARIMAX(p=self.p, d=self.d, q=self.q)


class RiverLearner:
    """One river model per output dim, fed one row at a time."""

    def __init__(self, cfg: RiverConfig, spec: ScenarioSpec) -> None:
        if spec.task != "regression":
            raise HarnessError(f"river:{cfg.model} is a regressor; this scenario is "
                               f"{spec.task}")
        n_in = int(torch.Size(spec.input_shape).numel())
        if cfg.model in REGRESSORS and n_in * spec.n_outputs > MAX_FEATURE_WEIGHTS:
            raise HarnessError(
                f"river:{cfg.model} would need {n_in} inputs x {spec.n_outputs} outputs = "
                f"{n_in * spec.n_outputs:,} weights in pure Python (limit "
                f"{MAX_FEATURE_WEIGHTS:,}); use a smaller input or another learner")
        if cfg.model in FORECASTERS and spec.n_outputs > MAX_SERIES:
            raise HarnessError(
                f"river:{cfg.model} would run {spec.n_outputs} univariate models, one per "
                f"output (limit {MAX_SERIES}); use it on scenarios with fewer outputs")
        self.cfg, self.spec = cfg, spec
        self.forecaster = cfg.model in FORECASTERS
        self.reset()

    def reset(self) -> None:
        first = self.cfg.make(self.spec)
        self.models = [first] + [copy.deepcopy(first) for _ in range(self.spec.n_outputs - 1)]
        self.last = torch.zeros(self.spec.n_outputs, dtype=torch.float64)

    def _fallback(self, x: Tensor) -> Tensor:
        if self.spec.persistence:
            return from_input(x, self.spec.persistence).double()
        return self.last.expand(len(x), -1).clone()

    def predict(self, x: Tensor) -> Tensor:
        if self.forecaster:
            out = self._fallback(x.cpu())
            for d, model in enumerate(self.models):
                try:
                    values = model.forecast(horizon=len(x))
                except (IndexError, ValueError, ZeroDivisionError):
                    continue  # too few points yet: keep the fallback
                out[:, d] = torch.tensor([float(v) for v in values], dtype=torch.float64)
            return out.float().to(x.device)
        rows = x.flatten(1).double().cpu().tolist()
        out = [[m.predict_one(dict(enumerate(r))) for m in self.models] for r in rows]
        return torch.tensor(out, dtype=torch.float32, device=x.device)

    def observe(self, x: Tensor, y: Tensor) -> None:
        targets = y.reshape(len(y), -1).double().cpu().tolist()
        rows = x.flatten(1).double().cpu().tolist()
        for r, t in zip(rows, targets, strict=True):
            for model, value in zip(self.models, t, strict=True):
                if self.forecaster:
                    model.learn_one(value)
                else:
                    model.learn_one(dict(enumerate(r)), value)
        self.last = torch.tensor(targets[-1], dtype=torch.float64)

    def describe(self) -> dict[str, str | float]:
        return {"variant": f"river:{self.cfg.model}", "river_models": float(len(self.models)),
                "season": float(self.cfg.season(self.spec))}
