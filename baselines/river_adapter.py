"""`river:<Model>`: online regressors and forecasters of the `river` library inside the harness
loop (the `river` extra; `river` is imported only when such a learner is built).

Models (`MODELS`) and the fields each uses:
  - `LinearRegression` (`river.linear_model.LinearRegression`): the flattened input as
    features {i: x_i}; `optimizer` sgd | adam | adagrad | rmsprop (`river.optim`) at rate `lr`,
    which the harness tunes like every learner's (docs/design.md D4), `l2`, `intercept_lr`;
  - `PARegressor` (`river.linear_model.PARegressor`): passive-aggressive, `C`, `mode`, `eps`;
  - `HoltWinters` (`river.time_series.HoltWinters`): `alpha`, `beta`, `gamma`, additive, the
    season m from the scenario (m = input length - `spec.seasonal[0]`); no season when the
    scenario declares none or m = 1. As river 0.26 does, the seasonal components start as
    y / level over the first m points (its multiplicative formula, also for the additive
    model), which is large when the first season's mean is near 0 (standardised series) and
    decays at rate 1 - gamma per season; the adapter keeps river's model as it is;
  - `SNARIMAX` (`river.time_series.SNARIMAX`): orders `p`, `d`, `q`, and with the scenario's
    season m > 1 the seasonal orders `sp`, `sd`, `sq`; its regressor is river's default
    (StandardScaler | LinearRegression) with `optimizer`, `lr`, `l2` and `intercept_lr`, so
    the defaults give river's default SNARIMAX and the harness tunes its rate.
Each output dim has its own model. Regressors learn (x, y_d) pairs. The time-series models
are univariate: they learn the targets of the stream in order and forecast from their own
history, ignoring the input; row i of a predicted batch gets the (i+1)-step forecast (the
stream's batches of 1 get one step; a held-out segment that follows the stream in time, as in
`timeseries-stream`, gets the multi-step forecast from the stream's end, per `predict` call).
Until river can forecast (HoltWinters needs max(2, m) points; SNARIMAX forecasts from the
start, 0 before any point) the prediction is the persistence forecast where the scenario
declares one, else the last target, else 0. Rows of a batch are learned in order.

river models are pure Python: a scenario needing more than `MAX_FEATURE_WEIGHTS` input x
output weights (regressors) or more than `MAX_SERIES` output dims (time-series models) is
refused with a one-line error. A prediction that is not finite in float32 raises
`DivergedError` naming the model and what to lower.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from harness.config import BuildContext, check_choice, check_range
from harness.errors import DivergedError, HarnessError
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
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _river() -> Any:
    try:
        import river  # noqa: PLC0415
        import river.linear_model  # noqa: F401, PLC0415
        import river.optim  # noqa: F401, PLC0415
        import river.preprocessing  # noqa: F401, PLC0415
        import river.time_series  # noqa: F401, PLC0415
    except ImportError:
        raise HarnessError("river:<Model> learners need river: pip install -e '.[river]'") from None
    return river


@dataclass
class RiverConfig:
    """A river model and its hyper-parameters (each used by the models its docstring names)."""

    model: str = "LinearRegression"
    """One of `MODELS` (set by the learner name river:<Model>)."""
    optimizer: Literal["sgd", "adam", "adagrad", "rmsprop"] = "sgd"
    """LinearRegression, SNARIMAX's regressor: the river.optim optimizer of the weights."""
    lr: float = 0.01
    """LinearRegression, SNARIMAX's regressor: the optimizer's learning rate (tuned by the
    harness); > 0."""
    l2: float = 0.0
    """LinearRegression, SNARIMAX's regressor: L2 penalty; >= 0."""
    intercept_lr: float = 0.01
    """LinearRegression, SNARIMAX's regressor: the intercept's own SGD rate (river's default
    0.01, not tuned); >= 0."""
    C: float = 1.0  # noqa: N815 (river's name)
    """PARegressor: aggressiveness; > 0."""
    mode: int = 1
    """PARegressor: 1 (PA-I) or 2 (PA-II)."""
    eps: float = 0.1
    """PARegressor: insensitivity of the epsilon-insensitive loss; >= 0."""
    alpha: float = 0.5
    """HoltWinters: level smoothing, in (0, 1]."""
    beta: float = 0.05
    """HoltWinters: trend smoothing, in [0, 1] (0: no trend, only without a season)."""
    gamma: float = 0.3
    """HoltWinters: seasonal smoothing, in [0, 1] (used with a season)."""
    p: int = 2
    """SNARIMAX: autoregressive order; 0 to 64."""
    d: int = 1
    """SNARIMAX: differencing order; 0 to 2."""
    q: int = 0
    """SNARIMAX: moving-average order; 0 to 64."""
    sp: int = 1
    """SNARIMAX: seasonal autoregressive order (with a season); 0 to 8."""
    sd: int = 0
    """SNARIMAX: seasonal differencing order (with a season); 0 to 2."""
    sq: int = 0
    """SNARIMAX: seasonal moving-average order (with a season); 0 to 8."""

    PRESETS: ClassVar[dict[str, dict]] = {"quick": {}}

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise HarnessError(f"unknown river model {self.model!r}; the adapter supports "
                               f"{', '.join(MODELS)} (write river:<Model>)")
        check_choice(self, "optimizer", OPTIMIZERS)
        check_choice(self, "mode", (1, 2))
        check_range(self, "lr", "C", gt=0)
        check_range(self, "l2", "intercept_lr", "eps", ge=0)
        check_range(self, "alpha", gt=0, le=1)
        check_range(self, "beta", "gamma", ge=0, le=1)
        check_range(self, "p", "q", ge=0, le=64)
        check_range(self, "d", "sd", ge=0, le=2)
        check_range(self, "sp", "sq", ge=0, le=8)

    def uses_lr(self) -> bool:
        """Only LinearRegression and SNARIMAX's regressor read `lr` (harness.capabilities
        UsesLR): the harness searches it for them alone."""
        return self.model in ("LinearRegression", "SNARIMAX")

    def build(self, ctx: BuildContext) -> RiverLearner:
        return RiverLearner(self, ctx.spec)

    def season(self, spec: ScenarioSpec) -> int:
        """The scenario's season m (1 when it declares none)."""
        n_in = int(torch.Size(spec.input_shape).numel())
        return n_in - spec.seasonal[0] if spec.seasonal else 1

    def _linear(self, river: Any) -> Any:
        opt = {"sgd": river.optim.SGD, "adam": river.optim.Adam,
               "adagrad": river.optim.AdaGrad, "rmsprop": river.optim.RMSProp}
        return river.linear_model.LinearRegression(
            optimizer=opt[self.optimizer](self.lr), l2=self.l2, intercept_lr=self.intercept_lr)

    def make(self, spec: ScenarioSpec) -> Any:
        """One fresh river model."""
        river = _river()
        m = self.season(spec)
        if self.model == "LinearRegression":
            return self._linear(river)
        if self.model == "PARegressor":
            return river.linear_model.PARegressor(C=self.C, mode=self.mode, eps=self.eps)
        if self.model == "HoltWinters":
            # river: beta = 0 means no trend (refused with a season); gamma only with a season
            if m > 1:
                return river.time_series.HoltWinters(alpha=self.alpha, beta=self.beta,
                                                     gamma=self.gamma, seasonality=m)
            return river.time_series.HoltWinters(alpha=self.alpha, beta=self.beta)
        regressor = river.preprocessing.StandardScaler() | self._linear(river)
        if m > 1:
            return river.time_series.SNARIMAX(p=self.p, d=self.d, q=self.q, m=m, sp=self.sp,
                                               sd=self.sd, sq=self.sq, regressor=regressor)
        return river.time_series.SNARIMAX(p=self.p, d=self.d, q=self.q, regressor=regressor)


class RiverLearner:
    """One river model per output dim, fed one row at a time."""

    def __init__(self, cfg: RiverConfig, spec: ScenarioSpec) -> None:
        if spec.task != "regression":
            raise HarnessError(f"river:{cfg.model} is a regressor; this scenario is "
                               f"{spec.task} (choose a regression scenario)")
        n_in = int(torch.Size(spec.input_shape).numel())
        if cfg.model in REGRESSORS and n_in * spec.n_outputs > MAX_FEATURE_WEIGHTS:
            raise HarnessError(
                f"river:{cfg.model} would need {n_in} inputs x {spec.n_outputs} outputs = "
                f"{n_in * spec.n_outputs:,} weights in pure Python, one model per output "
                f"(limit {MAX_FEATURE_WEIGHTS:,}); use a smaller input or another learner")
        if cfg.model in FORECASTERS and spec.n_outputs > MAX_SERIES:
            raise HarnessError(
                f"river:{cfg.model} would run {spec.n_outputs} pure-Python univariate models, "
                f"one per output (limit {MAX_SERIES}); use it on scenarios with fewer outputs")
        if cfg.model == "HoltWinters" and cfg.season(spec) > 1 and cfg.beta == 0:
            raise HarnessError(
                f"river:HoltWinters with this scenario's season (m = {cfg.season(spec)}) needs "
                "beta > 0: river's seasonal update reads the trend; set learner.beta=0.01")
        self.cfg, self.spec = cfg, spec
        self.forecaster = cfg.model in FORECASTERS
        self.reset()

    def reset(self) -> None:
        first = self.cfg.make(self.spec)
        self.models = [first] + [copy.deepcopy(first) for _ in range(self.spec.n_outputs - 1)]
        self.last = torch.zeros(self.spec.n_outputs, dtype=torch.float64)
        self.seen = 0

    def _fallback(self, x: Tensor) -> Tensor:
        if self.spec.persistence:
            return from_input(x, self.spec.persistence).double()
        return self.last.expand(len(x), -1).clone()

    def _forecasts(self, x: Tensor) -> list[list[float]]:
        out = self._fallback(x.cpu())
        for d, model in enumerate(self.models):
            try:
                values = model.forecast(horizon=len(x))
            except (IndexError, ValueError, ZeroDivisionError):
                continue  # too few points yet: keep the fallback
            out[:, d] = torch.tensor([float(v) for v in values], dtype=torch.float64)
        return out.tolist()

    def predict(self, x: Tensor) -> Tensor:
        if self.forecaster:
            out = self._forecasts(x)
        else:
            rows = x.flatten(1).double().cpu().tolist()
            out = [[m.predict_one(dict(enumerate(r))) for m in self.models] for r in rows]
        if not all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for r in out for v in r):
            raise DivergedError(self._diverged("predicted a non-finite value"))
        return torch.tensor(out, dtype=torch.float32, device=x.device)

    def _diverged(self, what: str) -> str:
        c = self.cfg
        lower = {"LinearRegression": f"lr ({c.lr:g})", "SNARIMAX": f"lr ({c.lr:g}) or p/q",
                 "PARegressor": f"C ({c.C:g})", "HoltWinters": "alpha/beta/gamma"}
        return (f"river:{c.model} {what} after {self.seen} samples (NaN, inf or beyond "
                f"float32); lower {lower[c.model]}, or check the inputs are finite and scaled")

    def observe(self, x: Tensor, y: Tensor) -> None:
        targets = y.reshape(len(y), -1).double().cpu().tolist()
        rows = x.flatten(1).double().cpu().tolist()
        try:
            for r, t in zip(rows, targets, strict=True):
                for model, value in zip(self.models, t, strict=True):
                    if self.forecaster:
                        model.learn_one(value)
                    else:
                        model.learn_one(dict(enumerate(r)), value)
                self.seen += 1
        except (OverflowError, ZeroDivisionError) as e:
            raise DivergedError(self._diverged(f"failed to learn ({e})")) from None
        self.last = torch.tensor(targets[-1], dtype=torch.float64)

    def describe(self) -> dict[str, str | float]:
        return {"variant": f"river:{self.cfg.model}", "river_models": float(len(self.models)),
                "season": float(self.cfg.season(self.spec))}
