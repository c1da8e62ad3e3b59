"""The i.i.d. offline oracle cannot collapse, learns only from its stored training samples, and
(slow tier, real data) is above the published online learners on its network, stream by stream."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from baselines.iid_offline import IIDOfflineConfig, lr_factor
from harness.config import BuildContext
from harness.errors import DivergedError
from harness.experiment import RunConfig, execute
from harness.protocol import Experience, ScenarioSpec
from harness.runner import run_stream
from scenarios.synthetic import SyntheticStreamConfig

PUBLISHED = Path(__file__).resolve().parent.parent / "published" / "omniglot-stream"
SMALL = {"pretrain": False, "width": 16}


def _oracle(spec: ScenarioSpec, seed: int = 0, **kw):
    return IIDOfflineConfig(**{**SMALL, **kw}).build(BuildContext(spec=spec, seed=seed))


def _final_acc(learner, experiences: list[Experience], spec: ScenarioSpec) -> float:
    """Mean test accuracy over all experiences after the stream (chance = 1 / classes)."""
    return float(run_stream(learner, experiences, spec).R[-1].mean())


def test_lr_factor_warms_up_linearly_then_decays_along_a_cosine() -> None:
    # 100 steps: warm-up over the first 10; the peak is reached at step 9.
    assert lr_factor(0, 100) == pytest.approx(0.1)
    assert lr_factor(4, 100) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.04)))
    assert lr_factor(50, 100) == pytest.approx(0.5)
    assert lr_factor(99, 100) == pytest.approx(0.5 * (1 - math.cos(math.pi / 100)))
    assert lr_factor(0, 1) == 1.0  # a one-step fit runs at the peak rate


@pytest.mark.parametrize("lr, fitted", [(3.0, 0.3), (10.0, 0.1)])
def test_a_rate_that_collapses_the_plain_fit_does_not_collapse_the_oracle(
        lr: float, fitted: float) -> None:
    scenario = SyntheticStreamConfig(classes_per_exp=5).build(0)  # 10 classes: chance is 0.1
    exps, spec = scenario.experiences, scenario.spec
    plain = _oracle(spec, lr=lr, fallbacks=0)
    assert _final_acc(plain, exps, spec) <= 0.15  # the fit at lr alone ends at chance
    oracle = _oracle(spec, lr=lr)
    assert _final_acc(oracle, exps, spec) >= 0.95
    assert oracle.fitted_lr == pytest.approx(fitted)  # the first of lr/10, lr/100 that learns


def test_a_healthy_fit_keeps_the_configured_rate() -> None:
    scenario = SyntheticStreamConfig(classes_per_exp=5).build(0)
    oracle = _oracle(scenario.spec, lr=0.1)
    assert _final_acc(oracle, scenario.experiences, scenario.spec) >= 0.95
    assert oracle.fitted_lr == 0.1


def test_the_fit_never_looks_at_test_data() -> None:
    """Same training stream, test sets of other inputs and labels: the same fitted model."""
    scenario = SyntheticStreamConfig(classes_per_exp=5).build(0)
    exps, spec = scenario.experiences, scenario.spec
    g = torch.Generator().manual_seed(1)
    other = [dataclasses.replace(e, x_test=torch.randn(e.x_test.shape, generator=g) * 5,
                                 y_test=torch.randint(0, 10, e.y_test.shape, generator=g))
             for e in exps]
    probe = torch.randn(50, *spec.input_shape, generator=g)
    outs, rates, train_accs = [], [], []
    for stream in (exps, other):
        oracle = _oracle(spec, lr=3.0)  # takes the fallback path: its choice is checked too
        rec = run_stream(oracle, stream, spec)
        oracle.train(False)
        outs.append(oracle.predict(probe))
        rates.append(oracle.fitted_lr)
        train_accs.append(rec.R_train)
    assert torch.equal(outs[0], outs[1])
    assert rates == [pytest.approx(0.3)] * 2
    assert (train_accs[0] == train_accs[1]).all()


def _regression_stream() -> tuple[list[Experience], ScenarioSpec]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(440, 3, generator=g)
    y = x @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.3
    spec = ScenarioSpec(input_shape=(3,), n_outputs=1, task="regression")
    return [Experience(x[:400], y[:400], x[400:], y[400:], batch_size=8)], spec


def test_a_diverging_regression_fit_falls_back_and_all_diverging_fits_raise() -> None:
    exps, spec = _regression_stream()
    kw = {"width": 32, "optimizer": "sgd", "clip_norm": 0.0}
    with pytest.raises(DivergedError, match="lower lr"):
        run_stream(_oracle(spec, lr=1.0, fallbacks=0, **kw), exps, spec)
    oracle = _oracle(spec, lr=1.0, **kw)
    mse = float(run_stream(oracle, exps, spec).R[-1][0])
    assert mse < 0.01 * float(exps[0].y_test.var())  # the targets are a linear function
    assert oracle.fitted_lr == pytest.approx(0.1)
    with pytest.raises(DivergedError, match=r"at peak lr 1; lower lr \(now 100.0\) or raise "
                                            "fallbacks"):
        run_stream(_oracle(spec, lr=100.0, **kw), exps, spec)


def test_new_fields_are_checked() -> None:
    for bad in ({"clip_norm": -1.0}, {"fallbacks": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            IIDOfflineConfig(**bad)


# -- real data --------------------------------------------------------------------------------


NETWORK = ("backbone", "width")
PRETRAINING = ("pretrain_epochs", "pretrain_lr", "pretrain_batch", "meta_seed")


def _bounded_by_the_oracle(theirs: dict, ours: dict) -> bool:
    """An online learner on the oracle's network, started from the same pre-trained features or
    from scratch. ANML and OML run their own networks; their bounds are the `<name>-iid` runs."""
    if any(k not in theirs or theirs[k] != ours[k] for k in NETWORK):
        return False
    return not theirs.get("pretrain") or all(theirs.get(k) == ours[k] for k in PRETRAINING)


def _published_online(stream_hash: str, ours: dict) -> pd.DataFrame:
    """Complete published runs on one stream of the online learners the oracle bounds (not the
    i.i.d. oracles: iid-offline and the *-iid variants). Old files have no status column."""
    frames = []
    for path in sorted(PUBLISHED.glob("*.csv")):
        meta = path.with_suffix(".json")
        if not meta.exists():  # a table (leaderboard.csv), not a run
            continue
        if _bounded_by_the_oracle(json.loads(meta.read_text()).get("learner_config", {}), ours):
            frames.append(pd.read_csv(path))
    if not frames:
        return pd.DataFrame(columns=["run_id", "learner", "metric", "value"])
    rows = pd.concat(frames, ignore_index=True)
    status = rows["status"].fillna("ok") if "status" in rows else "ok"
    keep = ((rows["stream_hash"] == stream_hash) & (status == "ok")
            & (rows["learner"] != "iid-offline") & ~rows["learner"].str.endswith("-iid"))
    return rows[keep]


def _published_oracle(seed: int) -> tuple[dict, dict[str, float]]:
    """The published iid-offline run of a seed at 100 classes: its JSON and its metrics."""
    for path in sorted(PUBLISHED.glob("iid-offline-*.json")):
        config = json.loads(path.read_text())
        if config["seed"] == seed and config["scenario_params"]["n_classes"] == 100:
            rows = pd.read_csv(path.with_suffix(".csv"))
            return config, dict(zip(rows["metric"], rows["value"], strict=True))
    raise AssertionError(f"no published iid-offline run of seed {seed} at 100 classes")


def _assert_bounds(config: dict, metrics: dict[str, float]) -> None:
    online = _published_online(config["stream_hash"], config["learner_config"])
    for metric in ("meta_test_test_acc", "acc_final_macro"):
        theirs = online[online["metric"] == metric]
        assert len(theirs) > 0, f"no published run on {config['stream_hash']} to compare with"
        above = theirs[theirs["value"] >= metrics[metric]]
        assert above.empty, (metric, metrics[metric],
                             above[["run_id", "value"]].to_dict("records"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_published_oracle_is_above_every_online_learner_on_its_network(seed: int) -> None:
    """On every seed of the published quick comparison (read, not re-run)."""
    _assert_bounds(*_published_oracle(seed))


@pytest.mark.slow
def test_the_oracle_reproduces_its_published_row_and_bound(tmp_path: Path) -> None:
    """Seed 0 re-run from scratch (pre-training included, one thread, as published) gives the
    published row's accuracies, so the bound above is the code's, not a stale file's."""
    config, published = _published_oracle(0)
    result = execute(RunConfig(scenario="omniglot-stream", learner="iid-offline", seed=0,
                               out_dir=tmp_path, cache_dir=tmp_path / "cache",
                               overrides={"n_classes": "100"}))
    assert result.status == "ok", result.error
    for metric in ("meta_test_test_acc", "acc_final_macro"):
        assert result.metrics[metric] == pytest.approx(published[metric], abs=0.02), metric
    _assert_bounds(config, result.metrics)
