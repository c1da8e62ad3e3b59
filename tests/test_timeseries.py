"""`timeseries-stream`: the series are the packages' data, the windows are exact, the scale
reads only the validation part, and the naive forecasts score what they should."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import need

from harness import api
from harness.errors import DataError, HarnessError
from scenarios import timeseries as ts
from scenarios.timeseries import TimeSeriesStreamConfig

need("statsmodels")
need("river")


@pytest.fixture(scope="module")
def airline():
    return TimeSeriesStreamConfig(series="airline", meta_series="unemp,infl").build(0)


def test_every_series_matches_its_checksum() -> None:
    for name, entry in ts.CATALOGUE.items():
        values = ts.load_series(name)
        assert np.isfinite(values).all() and len(values) >= 100, name
        assert ts.values_sha256(np.asarray(entry.raw(), dtype=np.float64)) == entry.sha256


def test_changed_package_data_is_a_data_error(monkeypatch) -> None:
    entry = ts.CATALOGUE["airline"]
    bad = ts.Series(lambda: np.asarray(entry.raw()) + 1.0, entry.season, entry.sha256, "river")
    monkeypatch.setitem(ts.CATALOGUE, "airline", bad)
    with pytest.raises(DataError, match=r"install that version: pip install 'river==0\.26\.1'"):
        ts.load_series("airline")


def test_missing_package_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "statsmodels.datasets", None)
    with pytest.raises(HarnessError, match=r"pip install -e '\.\[timeseries\]'"):
        ts.load_series("nile")


def test_transforms_by_hand() -> None:
    co2 = ts.load_series("co2")
    # weekly from Saturday 1958-03-29: March holds that one week, April the weeks of the 5th,
    # 12th, 19th and 26th (317.3, 317.6, 317.5, 316.4)
    assert co2[0] == 316.1 and co2[1] == pytest.approx((317.3 + 317.6 + 317.5 + 316.4) / 4)
    assert len(co2) == 526  # March 1958 to December 2001
    elnino = ts.load_series("elnino")
    assert (elnino[0], elnino[11], elnino[12]) == (23.11, 21.80, 24.19)  # Jan, Dec 1950, Jan 1951
    gdp = ts.load_series("gdp-growth")  # real GDP 2710.349 (1959q1), 2778.801 (1959q2)
    assert gdp[0] == pytest.approx(100 * np.log(2778.801 / 2710.349)) and len(gdp) == 202
    nile = ts.load_series("nile")
    assert (nile[0], nile[27], nile[28]) == (1120.0, 1100.0, 774.0)  # 1871, 1898, 1899


def test_windows_are_the_raw_values_scaled_by_the_validation_part(airline) -> None:
    import river.datasets

    raw = np.array([y for _, y in river.datasets.AirlinePassengers()], dtype=np.float64)
    w = 12  # max(12, season 12)
    n = len(raw) - w  # 132 targets: validation 26, test 20, scored 86
    assert (len(airline.val_experiences[0].x), len(airline.experiences[0].x),
            len(airline.experiences[0].x_test)) == (26, 86, 20)
    head = raw[: w + 26]  # what the validation stream reads
    scale = (raw - head.mean()) / head.std()
    exp = airline.experiences[0]
    # scored sample k has target index w + 26 + k and its window the 12 values before it
    for k in (0, 7, 85):
        t = w + 26 + k
        assert exp.y[k, 0].item() == pytest.approx(scale[t], rel=1e-6)
        assert np.allclose(exp.x[k].numpy(), scale[t - w : t], rtol=1e-6)
    test = exp.x_test
    assert test[-1, -1].item() == pytest.approx(scale[n + w - 2], rel=1e-6)
    # nothing after the validation part enters the scale
    changed = raw.copy()
    changed[w + 26 :] *= 10.0
    assert np.array_equal(ts.standardise(changed, w + 26)[: w + 26],
                          ts.standardise(raw, w + 26)[: w + 26])
    assert airline.spec.persistence == (11,) and airline.spec.seasonal == (0,)


def test_seasonal_index_is_one_season_back(airline) -> None:
    exp = airline.experiences[0]
    # x[window - m] of sample k is the value m = 12 steps before its target; that value is
    # the target of sample k - 12
    k = 30
    assert exp.x[k, 0].item() == exp.y[k - 12, 0].item()
    assert exp.x[k, 11].item() == exp.y[k - 1, 0].item()


def test_nile_change_point_and_parts() -> None:
    sc = TimeSeriesStreamConfig(series="nile", val_fraction=0.1).build(0)
    # 100 values, window 12: 88 targets, 9 validation; the new level starts in 1899, target
    # 1899 - 1871 - 12 = 16, scored sample 16 - 9 = 7
    assert sc.change_points == (7,)
    raw = ts.load_series("nile")
    scale = (raw - raw[:21].mean()) / raw[:21].std()
    assert sc.experiences[0].y[7, 0].item() == pytest.approx(scale[28], rel=1e-6)  # 774 (1899)
    assert sc.spec.seasonal == (11,)  # no season: seasonal-naive is persistence
    default = TimeSeriesStreamConfig(series="nile").build(0)
    assert default.change_points == ()  # the change falls in the validation part


def test_meta_training_never_holds_the_scored_series(airline) -> None:
    sampler = airline.meta_train
    assert sampler.names == ("unemp", "infl")
    g = torch.Generator().manual_seed(0)
    task = sampler.sample(g)
    assert len(task) == 1 and task[0].x.shape == (32, 12) and task[0].x_test.shape == (8, 12)
    every = TimeSeriesStreamConfig(series="co2").build(0).meta_train
    assert "co2" not in every.names and len(every.names) == len(ts.CATALOGUE) - 1
    with pytest.raises(HarnessError, match="never see it"):
        TimeSeriesStreamConfig(series="co2", meta_series="co2,nile")


def test_parts_tile_the_targets_in_order() -> None:
    sc = TimeSeriesStreamConfig(series="sunspots", meta_series="nile").build(0)
    raw = ts.load_series("sunspots")
    w = 12  # 297 targets: validation round(59.4) = 59, test round(44.55) = 45, scored 193
    val, exp = sc.val_experiences[0], sc.experiences[0]
    assert (val.n_train, exp.n_train, exp.n_test) == (59, 193, 45)
    scale = (raw - raw[: w + 59].mean()) / raw[: w + 59].std()
    every = torch.cat([val.y, exp.y, exp.y_test])[:, 0].double().numpy()
    assert np.allclose(every, scale[w:], rtol=1e-6, atol=1e-6)  # each target once, in order
    assert sc.spec.seasonal == (1,)  # season 11 in a window of 12
    k = 40  # x[1] is the value 11 steps before the target: the target of sample k - 11
    assert exp.x[k, 1].item() == exp.y[k - 11, 0].item()


def test_seasonally_adjusted_series_declare_no_season() -> None:
    sc = TimeSeriesStreamConfig(series="unemp", meta_series="nile").build(0)
    assert sc.spec.persistence == sc.spec.seasonal == (11,)


def test_max_length_cuts_the_series() -> None:
    sc = TimeSeriesStreamConfig(series="airline", max_length=100, meta_series="nile").build(0)
    # 100 values, 88 targets: validation round(17.6) = 18, test round(13.2) = 13, scored 57
    sizes = (sc.val_experiences[0].n_train, sc.experiences[0].n_train, sc.experiences[0].n_test)
    assert sizes == (18, 57, 13)
    with pytest.raises(HarnessError, match="larger max_length"):
        TimeSeriesStreamConfig(series="airline", max_length=14, meta_series="nile").build(0)


def test_meta_series_too_short_are_left_out() -> None:
    # nile has 100 values: fewer than window 12 + 90 + 22; co2 has 526
    sc = TimeSeriesStreamConfig(series="airline", meta_length=90, meta_series="nile,co2").build(0)
    assert sc.meta_train.names == ("co2",) and sc.meta_train.left_out == ("nile",)
    none = TimeSeriesStreamConfig(series="airline", meta_length=500, meta_series="nile").build(0)
    assert none.meta_train is None


def test_published_variants() -> None:
    sizes = {}
    for name, params in TimeSeriesStreamConfig.VARIANTS.items():
        built = TimeSeriesStreamConfig(**params, meta_series="co2" if name == "nile" else "nile"
                                       ).build(0)
        e = built.experiences[0]
        sizes[name] = (built.val_experiences[0].n_train, e.n_train, e.n_test, built.change_points)
    assert sizes == {"co2": (103, 334, 77, ()), "airline": (26, 86, 20, ()),
                     "sunspots": (59, 193, 45, ()), "nile": (9, 66, 13, (7,))}


def test_stream_is_deterministic(airline) -> None:
    again = TimeSeriesStreamConfig(series="airline", meta_series="unemp,infl").build(5)
    assert again.stream_hash == airline.stream_hash


@pytest.mark.parametrize("sets, needle", [
    (["series=nosuch"], "unknown series"),
    (["series=co2", "window=4"], "season"),
    (["val_fraction=0.5", "test_fraction=0.5"], "below 0.9"),
    (["meta_series=airline,bogus"], "unknown meta series"),
])
def test_bad_parameters_exit_2_with_one_line(tmp_path: Path, sets, needle, usage_error) -> None:
    args = ["run", "--scenario", "timeseries-stream", "--learner", "persistence",
            "--baselines", "none", "--out", str(tmp_path)]
    for s in sets:
        args += ["--set", s]
    assert needle in usage_error(args)


def test_persistence_and_seasonal_naive_through_the_harness(tmp_path: Path, airline) -> None:
    exp = airline.experiences[0]
    for learner, col in (("persistence", 11), ("seasonal-naive", 0)):
        res = api.run("timeseries-stream", learner, out_dir=tmp_path, progress=False,
                      series="airline", meta_series="unemp,infl")
        assert res.status == "ok", res.error
        m = res.metrics
        mse = float(((exp.x[:, col] - exp.y[:, 0]) ** 2).mean())
        mae = float((exp.x[:, col] - exp.y[:, 0]).abs().mean())
        test_mse = float(((exp.x_test[:, col] - exp.y_test[:, 0]) ** 2).mean())
        assert m["online_mse"] == pytest.approx(mse, rel=1e-5)
        assert m["online_mae"] == pytest.approx(mae, rel=1e-5)
        assert m["mse_final"] == pytest.approx(test_mse, rel=1e-5)
        naive_mae = float((exp.x[:, 0] - exp.y[:, 0]).abs().mean())
        assert m["mase"] == pytest.approx(mae / naive_mae, rel=1e-5)
    assert m["mase"] == pytest.approx(1.0, abs=1e-6)  # seasonal-naive against itself
