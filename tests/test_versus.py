"""`harness.leaderboard.versus`: one learner against opponents, paired over seeds, with
hand-computed differences and CIs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness import leaderboard as lb
from harness.leaderboard.versus import head_to_head, head_to_head_markdown, verdict

sys.path.insert(0, str(Path(__file__).parent))
from test_leaderboard import CI_3, write_run  # noqa: E402


def _runs(tmp_path: Path):
    # skill_persistence (higher is better) on one stream per seed:
    #   multistage 0.5/0.6/0.7, persistence 0/0/0, river:A 0.6/0.7/0.8, river:B 0.1/0.1/0.1,
    #   finetune 0.55/0.6/0.65 (differences -0.05/0/0.05: no clear difference)
    table = {"multistage": [0.5, 0.6, 0.7], "persistence": [0.0, 0.0, 0.0],
             "river:A": [0.6, 0.7, 0.8], "river:B": [0.1, 0.1, 0.1],
             "finetune": [0.55, 0.6, 0.65]}
    for learner, values in table.items():
        for seed, v in enumerate(values):
            write_run(tmp_path, f"{learner.replace(':', '-')}-{seed}", learner, seed,
                      {"skill_persistence": v, "online_mse": 1 - v},
                      scenario="timeseries-stream")
    return lb.load_runs(tmp_path)


def test_head_to_head_by_hand(tmp_path: Path) -> None:
    out = head_to_head(_runs(tmp_path), "multistage", ["persistence", "river:*", "finetune",
                                                       "absent"])
    assert list(out["opponent"]) == ["persistence", "river:A", "finetune"]
    assert set(out["metric"]) == {"skill_persistence"}
    p = out.iloc[0]  # differences 0.5, 0.6, 0.7: mean 0.6, CI as in test_leaderboard
    assert p["mean_diff"] == pytest.approx(0.6)
    assert p["ci95"] == pytest.approx(CI_3, abs=1e-6)
    assert p["verdict"] == "wins" and p["n_pairs"] == 3
    r = out.iloc[1]  # the best river model (A, mean 0.7); differences all -0.1
    assert r["mean_diff"] == pytest.approx(-0.1)
    assert r["verdict"] == "loses"
    assert out.iloc[2]["verdict"] == "no clear difference"
    md = head_to_head_markdown(out)
    assert "| river:A |" in md and "loses" in md and "timeseries-stream" in md


def test_verdict_directions() -> None:
    assert verdict(0.1, 0.3, True) == "wins"
    assert verdict(0.1, 0.3, False) == "loses"
    assert verdict(-0.3, -0.1, False) == "wins"
    assert verdict(-0.1, 0.1, True) == "no clear difference"
    assert verdict(float("nan"), float("nan"), True) == "no clear difference"
