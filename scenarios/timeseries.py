"""`timeseries-stream`: one-step-ahead online forecasting of real series (docs/design.md D3).

The series ship inside two declared packages, read at run time, never downloaded:
statsmodels' datasets (the `timeseries` extra; checked with statsmodels 0.15.0) and river's
bundled datasets (the `river` extra; checked with river 0.26.1). The values as the package
holds them must match the SHA-256 recorded in `CATALOGUE` (a package version whose data differ
is a `DataError` naming the package); the catalogue's transform (co2: weekly to monthly means,
its 5 empty months interpolated; gdp-growth: 100 x log-difference) comes after.

| name | source | points | season m | notes |
| --- | --- | --- | --- | --- |
| co2 | statsmodels `co2` (Mauna Loa, weekly from 1958-03-29) as monthly means | 526 | 12 | drift |
| airline | river `AirlinePassengers` (monthly, 1949-1960) | 144 | 12 | trend, growing seasonality |
| sunspots | statsmodels `sunspots` (yearly, 1700-2008) | 309 | 11 | ~11-year cycle |
| nile | statsmodels `nile` (annual flow at Aswan, 1871-1970) | 100 | 1 | drop after 1898 |
| elnino | statsmodels `elnino` (monthly sea surface temperature, 1950-2010) | 732 | 12 | |
| unemp | statsmodels `macrodata` unemployment rate (quarterly, 1959-2009) | 203 | 1 | |
| infl | statsmodels `macrodata` inflation (quarterly), without its first value | 202 | 1 | |
| gdp-growth | statsmodels `macrodata` 100 x log-difference of real GDP (quarterly) | 202 | 1 | |
| waterflow | river `WaterFlow` (hourly) | 1268 | 24 | |

The `macrodata` series are seasonally adjusted at the source (unemployment and real GDP
directly, inflation through the adjusted CPI), so they declare no season (m = 1). The first
inflation value is a placeholder 0 (no earlier quarter to difference against) and is dropped.

A sample is x = the `window` previous values (shape [window]) and y = the next value ([1]), in
temporal order, batch 1. `window` = 0 takes max(12, m). Of the targets (the values at index
`window` onward), the first `val_fraction` form the validation stream, the last
`test_fraction` the held-out test segment, and those between the scored stream (one
experience). The parts are consecutive in time: a window may hold values of an earlier part
(the past, which a forecaster knows), never of a later one.

Scale: each series is standardised with the mean and standard deviation of the values the
validation stream reads (its windows and targets), so nothing after the validation stream
enters the stream's scale; a drifting series (co2, airline) leaves that range later, which is
part of the task. Errors are in these standardised units.

Naive forecasts declared in the spec: persistence = the window's last value, seasonal-naive =
the value m steps before the target (x[window - m]; for m = 1 that is persistence, as MASE's
definition takes it for a series without season).

Regime changes (`change_points`): the documented ones that fall inside the scored stream,
as sample indices: the Nile's drop after 1898 (Cobb 1978, Biometrika 65: "apparent
changepoint near 1898"; 1898 is the last year at the old level, 1100 against 774 in 1899, as
strucchange's breakpoint puts it, so the new regime starts with 1899), () for the
other series. With the defaults the Nile's change falls in the validation part, so its
variant uses `val_fraction=0.1`.

Meta-training (`meta_train`, for meta-learners): a `SeriesTaskSampler` over the other series
of the catalogue (`meta_series`, never the scored one), each standardised by its own
validation part: one task is `meta_length` consecutive samples of a random series from a
random start, its test set the max(1, meta_length // 4) samples after them. A series shorter
than window + meta_length + that query is left out (logged, and named in the sampler's
`left_out`); when none is left, `meta_train` is None.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from harness.errors import DataError, HarnessError
from harness.logs import logger
from harness.protocol import Experience, ScenarioSpec
from scenarios.base import BuiltScenario, ScenarioConfig, bounded

CHECKED_WITH = {"statsmodels": "0.15.0", "river": "0.26.1"}
"""The package versions the catalogue's SHA-256 values were recorded from."""


def _statsmodels() -> object:
    try:
        import statsmodels.datasets as datasets  # noqa: PLC0415
    except ImportError:
        raise HarnessError("timeseries-stream reads statsmodels' datasets: "
                           "pip install -e '.[timeseries]'") from None
    return datasets


def _river() -> object:
    try:
        import river.datasets as datasets  # noqa: PLC0415
    except ImportError:
        raise HarnessError("timeseries-stream reads river's bundled datasets: "
                           "pip install -e '.[river]'") from None
    return datasets


def _sm(dataset: str, column: str) -> Callable[[], np.ndarray]:
    """A column of a statsmodels dataset, as float64."""
    return lambda: getattr(_statsmodels(), dataset).load_pandas().data[column].to_numpy(
        dtype=np.float64)


def _river_series(name: str) -> Callable[[], np.ndarray]:
    return lambda: np.array([y for _, y in getattr(_river(), name)()], dtype=np.float64)


def _elnino() -> np.ndarray:
    table = _statsmodels().elnino.load_pandas().data
    return table.iloc[:, 1:].to_numpy(dtype=np.float64).ravel()  # months of 1950, 1951, ...


def _monthly(weekly: np.ndarray) -> np.ndarray:
    """co2: the weekly values (from 1958-03-29) as monthly means, empty months interpolated."""
    import pandas as pd  # noqa: PLC0415

    index = pd.date_range("1958-03-29", periods=len(weekly), freq="W-SAT")
    return pd.Series(weekly, index=index).resample("MS").mean().interpolate().to_numpy()


def _log_growth(values: np.ndarray) -> np.ndarray:
    return 100.0 * np.diff(np.log(values))


@dataclass(frozen=True)
class Series:
    """One catalogue entry: the values as the package holds them (checked by SHA-256), the
    transform into the series, its season and its documented regime changes."""

    raw: Callable[[], np.ndarray]
    season: int
    sha256: str
    package: str
    transform: Callable[[np.ndarray], np.ndarray] = lambda v: v
    first: int = 0
    """Time label (e.g. year) of the series' first value, for `changes`."""
    changes: tuple[int, ...] = ()
    """Time labels where a documented new regime starts."""


CATALOGUE: dict[str, Series] = {
    "co2": Series(_sm("co2", "co2"), 12,
        "ee5afa98318c2069baa753b7b8a327b96b0217017cf94aa8407e914d3cbfaa35", "statsmodels",
        _monthly),
    "airline": Series(_river_series("AirlinePassengers"), 12,
        "8eda0a52744e72ede03825fce5cb979a43af4b3479e2b0216bf907eee5d18056", "river"),
    "sunspots": Series(_sm("sunspots", "SUNACTIVITY"), 11,
        "66c86ecdcd5950f61f6243f924fdfa10a44596e94816291062fdda266a31c86d", "statsmodels"),
    "nile": Series(_sm("nile", "volume"), 1,
        "eb0f1d6ec926d4062aedc93cdd321895a50cc431ac91b3ab2f5a953997426400", "statsmodels",
        first=1871, changes=(1899,)),
    "elnino": Series(_elnino, 12,
        "04cd82503f2284f490eb92e9bf30bfd475d3c12210aca925dc0978f62ce50780", "statsmodels"),
    "unemp": Series(_sm("macrodata", "unemp"), 1,
        "cc5c3042e1bb19bafd510cd8197460ca338d972adf14a348b7dabfe6d38cf7f1", "statsmodels"),
    "infl": Series(_sm("macrodata", "infl"), 1,
        "23411b8f05c9e63c97f54b0c62c6c56b3c96072efbeeabd1be90087d9f9bf0da", "statsmodels",
        lambda v: v[1:]),
    "gdp-growth": Series(_sm("macrodata", "realgdp"), 1,
        "7043a7eb96303fafe597077f18b9e42397ce54172fca9d1563fcbcbcbcc32a8a", "statsmodels",
        _log_growth),
    "waterflow": Series(_river_series("WaterFlow"), 24,
        "5d4e253a73aa3a3e2b61b423662a07ebc07082571975c85a011e7a1dcc361cba", "river"),
}
"""The series, by name (module docstring)."""


def values_sha256(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values, dtype=np.float64).tobytes()).hexdigest()


def _installed(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def load_series(name: str) -> np.ndarray:
    """The float64 values of a catalogue series, checked against its SHA-256."""
    if name not in CATALOGUE:
        raise HarnessError(f"unknown series {name!r}; choose one of {', '.join(CATALOGUE)}")
    entry = CATALOGUE[name]
    raw = np.asarray(entry.raw(), dtype=np.float64)
    if values_sha256(raw) != entry.sha256:
        pkg, checked = entry.package, CHECKED_WITH[entry.package]
        raise DataError(f"series {name!r} from {pkg} {_installed(pkg)} differs from the data "
                        f"recorded from {pkg} {checked} (sha256); install that version: "
                        f"pip install '{pkg}=={checked}'")
    values = entry.transform(raw)
    if not np.isfinite(values).all():
        raise DataError(f"series {name!r} from {entry.package} holds missing values")
    return values


def windows(values: np.ndarray, window: int) -> tuple[Tensor, Tensor]:
    """x [N - window, window] (the previous values) and y [N - window, 1] (the next)."""
    v = torch.as_tensor(values, dtype=torch.float32)
    x = v.unfold(0, window, 1)[:-1]
    return x.contiguous(), v[window:].reshape(-1, 1)


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(validation, scored, test) sample counts of n targets; the scored part gets the rest."""
    n_val = int(round(n * val_fraction))
    n_test = max(1, int(round(n * test_fraction)))
    return n_val, n - n_val - n_test, n_test


def standardise(values: np.ndarray, n_read: int) -> np.ndarray:
    """(values - mean) / std of the first `n_read` values (std 1 when they are constant)."""
    head = values[:n_read]
    sd = float(head.std()) or 1.0
    return (values - float(head.mean())) / sd


@dataclass(frozen=True)
class SeriesTaskSampler:
    """Meta-training tasks: `length` consecutive samples of a random series, then a query."""

    x: tuple[Tensor, ...]
    y: tuple[Tensor, ...]
    length: int
    names: tuple[str, ...]
    left_out: tuple[str, ...] = ()
    """Meta series too short for one task (window + length + query values)."""

    def sample(self, generator: torch.Generator) -> list[Experience]:
        k = int(torch.randint(len(self.x), (1,), generator=generator))
        q = max(1, self.length // 4)
        x, y = self.x[k], self.y[k]
        start = int(torch.randint(len(x) - self.length - q + 1, (1,), generator=generator))
        cut, end = start + self.length, start + self.length + q
        return [Experience(x=x[start:cut], y=y[start:cut], x_test=x[cut:end], y_test=y[cut:end],
                           name=f"{self.names[k]} {start}")]


@dataclass(frozen=True, eq=False)
class TimeSeriesStream(BuiltScenario):
    """A built `timeseries-stream`: also the series' season and its regime changes."""

    season: int = 1
    change_points: tuple[int, ...] = ()
    """Documented regime changes inside the scored stream, as sample indices."""


@dataclass(frozen=True)
class TimeSeriesStreamConfig(ScenarioConfig):
    """One-step-ahead forecasting of a real series, online."""

    series: str = "co2"
    """The scored series (see `CATALOGUE`)."""
    window: int = bounded(0, ge=0, le=512)
    """Past values per input; 0 = max(12, the series' season). At least the season."""
    val_fraction: float = bounded(0.2, gt=0.0, lt=1.0)
    """Leading share of the targets for the validation stream (and the scale)."""
    test_fraction: float = bounded(0.15, gt=0.0, lt=1.0)
    """Trailing share of the targets held out as the test segment."""
    meta_series: str = ""
    """Comma-separated series for meta-training; '' = every other series of the catalogue."""
    meta_length: int = bounded(32, ge=2, le=10_000)
    """Samples per meta-training task."""
    max_length: int = bounded(0, ge=0)
    """Use at most this many leading values of the series (0 = all)."""

    ID = "timeseries-stream"
    VERSION = 2
    VARIANTS = {"co2": {"series": "co2"}, "airline": {"series": "airline"},
                "sunspots": {"series": "sunspots"},
                "nile": {"series": "nile", "val_fraction": 0.1}}
    """The series the published comparison reports side by side."""
    FIXED_STREAM = True
    """The stream is the same for every seed (frames or values in temporal order); seeds vary
    the learners' initialisation and meta-training."""
    SMOKE = {"series": "airline", "meta_series": "unemp,infl"}
    """Small parameters for conformance checks."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.series not in CATALOGUE:
            raise HarnessError(f"unknown series {self.series!r}; choose one of "
                               f"{', '.join(CATALOGUE)}")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise HarnessError("val_fraction + test_fraction must stay below 0.9 so that the "
                               "scored stream keeps a tenth of the series")
        if 0 < self.window < CATALOGUE[self.series].season:
            raise HarnessError(f"window={self.window} is shorter than the season of "
                               f"{self.series!r} ({CATALOGUE[self.series].season}); use at "
                               "least that, or 0 for the default")
        for name in self.meta_names():
            if name not in CATALOGUE:
                raise HarnessError(f"unknown meta series {name!r}; choose from "
                                   f"{', '.join(CATALOGUE)}")
            if name == self.series:
                raise HarnessError(f"meta_series holds the scored series {name!r}; "
                                   "meta-training must never see it")

    def meta_names(self) -> list[str]:
        if not self.meta_series.strip():
            return [n for n in CATALOGUE if n != self.series]
        return [n.strip() for n in self.meta_series.split(",") if n.strip()]

    def input_window(self) -> int:
        """Past values per input (the meta series use the scored series' window)."""
        return self.window or max(12, CATALOGUE[self.series].season)

    def _prepared(self, name: str, window: int) -> tuple[Tensor, Tensor, tuple[int, int, int]]:
        values = load_series(name)
        if self.max_length:
            values = values[: self.max_length]
        n = len(values) - window
        sizes = split_sizes(n, self.val_fraction, self.test_fraction)
        if min(sizes) < 1:
            raise HarnessError(f"series {name!r} ({len(values)} values used) is too short "
                               f"for window={window} and these fractions; use a smaller "
                               "window, or a larger max_length (0 = all)")
        x, y = windows(standardise(values, window + sizes[0]), window)
        return x, y, sizes

    def build(self, seed: int, data_dir: Path | None = None,
              cache_dir: Path | None = None) -> TimeSeriesStream:
        """The stream (the same for every seed: the seed only reaches the learners and the
        meta-training draws); `data_dir` is unused, the series ship with the packages."""
        entry = CATALOGUE[self.series]
        w = self.input_window()
        x, y, (n_val, n_scored, n_test) = self._prepared(self.series, w)
        a, b = n_val, n_val + n_scored
        val = Experience(x=x[:a], y=y[:a], x_test=x[b:], y_test=y[b:], name="validation")
        scored = Experience(x=x[a:b], y=y[a:b], x_test=x[b:], y_test=y[b:], name=self.series)
        # target k is the value at index w + k, labelled first + w + k
        changes = tuple(c - entry.first - w - a for c in entry.changes)
        changes = tuple(c for c in changes if 0 < c < n_scored)
        return self.built(
            TimeSeriesStream, seed,
            spec=ScenarioSpec(input_shape=(w,), n_outputs=1, task="regression",
                              persistence=(w - 1,),
                              seasonal=(w - entry.season,)),
            experiences=[scored], val_experiences=[val],
            meta_train=self._sampler(w), season=entry.season, change_points=changes,
        )

    def _sampler(self, window: int) -> SeriesTaskSampler | None:
        xs, ys, names, short = [], [], [], []
        q = max(1, self.meta_length // 4)
        for name in self.meta_names():
            values = load_series(name)
            n = len(values) - window
            if n < self.meta_length + q:
                short.append(name)
                continue
            n_val = max(1, int(round(n * self.val_fraction)))
            x, y = windows(standardise(values, window + n_val), window)
            xs.append(x)
            ys.append(y)
            names.append(name)
        if short:
            logger.info("timeseries-stream: meta series %s left out of meta-training (fewer "
                        "than window %d + meta_length %d + %d values)%s", ", ".join(short),
                        window, self.meta_length, q, "" if xs else "; none is left")
        if not xs:
            return None
        return SeriesTaskSampler(tuple(xs), tuple(ys), self.meta_length, tuple(names),
                                 tuple(short))

