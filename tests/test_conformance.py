"""The conformance checker over the whole registry: registering a learner or scenario tests it
(Gymnasium's tests/envs/test_envs.py, for continual learners)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.check import check_learner, scenario_checks
from harness.registry import list_learners, list_scenarios


def _scenario_args(entry, tmp_path: Path) -> tuple[dict, Path | None]:
    """Small parameters a config declares for checks (SMOKE), and fake data if it needs some."""
    cls = entry.config_class()
    data_dir = cls.fake_data(tmp_path) if hasattr(cls, "fake_data") else None
    return dict(getattr(cls, "SMOKE", {})), data_dir


@pytest.mark.parametrize("entry", list_scenarios(), ids=lambda e: e.id)
def test_every_scenario_conforms(entry, tmp_path: Path) -> None:
    from harness.experiment import build_scenario

    params, data_dir = _scenario_args(entry, tmp_path)
    scenario = build_scenario(entry.id, 0, data_dir, params)
    assert scenario.id == entry.id
    results = scenario_checks(scenario, lambda: build_scenario(entry.id, 0, data_dir, params))
    failed = [f"{r.name}: {r.detail}" for r in results if not r.ok]
    assert not failed, failed
    other = build_scenario(entry.id, 1, data_dir, params)
    if getattr(entry.config_class(), "FIXED_STREAM", False):
        # real data in its temporal order: seeds vary the learners and meta-training only
        assert other.stream_hash == scenario.stream_hash
    else:
        assert other.stream_hash != scenario.stream_hash, "the seed must change the stream"


NEEDS_SCENARIO = {"seasonal-naive": "timeseries-stream"}
"""Learners checked on another scenario than the default (they need what it declares)."""

SLOW_CHECKS = {"reptile", "sparse-maml", "sparse-relu-maml", "maml", "fomaml", "boil"}
"""Learners whose checks take over 5 s on 2 cores (many inner steps per prediction): slow tier."""


@pytest.mark.parametrize("entry", [pytest.param(e, marks=pytest.mark.slow)
                                   if e.id in SLOW_CHECKS else e for e in list_learners()],
                         ids=lambda e: e.id)
def test_every_learner_conforms(entry) -> None:
    scenario = "synthetic-stream" if "classification" in entry.tasks else "sine-incremental"
    scenario = NEEDS_SCENARIO.get(entry.id, scenario)
    results = check_learner(entry.id, scenario)
    failed = [f"{r.name}: {r.detail}" for r in results if not r.ok]
    assert not failed, failed
