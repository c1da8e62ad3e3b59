"""Tests for harness.leaderboard: hand-built run CSVs with known values (DESIGN.md D6)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from harness import leaderboard as lb
from harness.errors import HarnessError

SCEN = "synthetic-stream"

# Hand-computed reference for values 0.5, 0.6, 0.7:
# mean 0.6, sd = sqrt(((-0.1)^2 + 0 + 0.1^2) / 2) = 0.1, t(0.975, 2) = 4.302653,
# ci95 = 4.302653 * 0.1 / sqrt(3) = 0.248414.
CI_3 = 0.248414


def write_run(
    folder: Path,
    run_id: str,
    learner: str,
    seed: int,
    metrics: dict[str, float],
    *,
    scenario: str = SCEN,
    scenario_version: str = "1",
    config_hash: str | None = None,
    preset: str = "quick",
    stream_hash: str | None = None,
    started_at: str = "2025-01-01T00:00:00+00:00",
    extra: dict[str, object] | None = None,
) -> Path:
    """Write results/<scenario>/<run_id>.csv (plus the ignored .json/.npz siblings)."""
    rows = [
        {
            "run_id": run_id,
            "scenario": scenario,
            "scenario_version": scenario_version,
            "stream_hash": stream_hash if stream_hash is not None else f"h{seed}",
            "learner": learner,
            "config_hash": config_hash if config_hash is not None else f"cfg-{learner}",
            "preset": preset,
            "seed": seed,
            "metric": metric,
            "value": value,
            "n": 100,
            "harness_version": "0.1.0",
            "git_sha": "abc1234",
            "torch_version": "2.5.0",
            "device": "cpu",
            "started_at": started_at,
            "wall_s": 1.5,
            **(extra or {}),
        }
        for metric, value in metrics.items()
    ]
    out = folder / scenario
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{run_id}.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    (out / f"{run_id}.json").write_text("{}")
    (out / f"{run_id}.npz").write_bytes(b"not an npz")
    return path


@pytest.fixture
def two_learners(tmp_path: Path) -> Path:
    """anml: acc 0.5/0.6/0.7, wall 30/20/10; finetune: acc 0.2/0.3/0.4, wall 1/2/3."""
    for seed, (a, w) in enumerate([(0.5, 30.0), (0.6, 20.0), (0.7, 10.0)]):
        write_run(tmp_path, f"anml-{seed}", "anml", seed, {"acc_final_macro": a, "wall_s": w})
    for seed, (a, w) in enumerate([(0.2, 1.0), (0.3, 2.0), (0.4, 3.0)]):
        write_run(tmp_path, f"ft-{seed}", "finetune", seed, {"acc_final_macro": a, "wall_s": w})
    return tmp_path


def row(df: pd.DataFrame, **eq: object) -> pd.Series:
    sel = df
    for k, v in eq.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, f"expected one row for {eq}, got {len(sel)}"
    return sel.iloc[0]


# ---------------------------------------------------------------------------- load_runs


def test_load_runs_reads_recursively_and_ignores_other_files(two_learners: Path) -> None:
    (two_learners / "leaderboard.csv").write_text("rank,learner\n1,anml\n")
    (two_learners / "leaderboard.md").write_text("| x |\n")
    (two_learners / SCEN / "leaderboard.csv").write_text("rank,learner\n1,anml\n")
    (two_learners / ".hidden.csv").write_text("junk\n")
    runs = lb.load_runs(two_learners)
    assert len(runs) == 12  # 6 runs x 2 metrics; json/npz/leaderboard/hidden files ignored
    assert set(runs["learner"]) == {"anml", "finetune"}
    assert runs["seed"].dtype == "int64"


def test_load_runs_keeps_identifiers_as_text(tmp_path: Path) -> None:
    write_run(
        tmp_path,
        "r0",
        "anml",
        0,
        {"acc_final_macro": 0.5},
        config_hash="0123",
        stream_hash="1e5",
        extra={"variant": "oml-2019", "lr": 0.01},
    )
    runs = lb.load_runs(tmp_path)
    assert runs.loc[0, "config_hash"] == "0123"
    assert runs.loc[0, "stream_hash"] == "1e5"
    assert runs.loc[0, "variant"] == "oml-2019"


@pytest.mark.parametrize("make", ["missing", "empty", "only_leaderboard", "a_file"])
def test_load_runs_without_run_csvs_raises(tmp_path: Path, make: str) -> None:
    target = tmp_path / "results"
    if make == "empty":
        target.mkdir()
    elif make == "only_leaderboard":
        target.mkdir()
        (target / "leaderboard.csv").write_text("rank\n1\n")
    elif make == "a_file":
        target.write_text("x")
    with pytest.raises(HarnessError) as exc:
        lb.load_runs(target)
    assert str(target) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_load_runs_names_file_and_missing_columns(tmp_path: Path) -> None:
    path = write_run(tmp_path, "r0", "anml", 0, {"acc_final_macro": 0.5})
    pd.read_csv(path).drop(columns=["stream_hash", "wall_s"]).to_csv(path, index=False)
    with pytest.raises(HarnessError, match="stream_hash, wall_s") as exc:
        lb.load_runs(tmp_path)
    assert "r0.csv" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_load_runs_rejects_unreadable_and_non_numeric(tmp_path: Path) -> None:
    (tmp_path / SCEN).mkdir()
    (tmp_path / SCEN / "empty.csv").write_text("")
    with pytest.raises(HarnessError, match="empty.csv"):
        lb.load_runs(tmp_path)
    (tmp_path / SCEN / "empty.csv").unlink()
    path = write_run(tmp_path, "r0", "anml", 0, {"acc_final_macro": 0.5})
    df = pd.read_csv(path)
    df["value"] = "high"
    df.to_csv(path, index=False)
    with pytest.raises(HarnessError, match="r0.csv.*'value'"):
        lb.load_runs(tmp_path)


# ---------------------------------------------------------------------------- aggregate


def test_aggregate_mean_sd_ci(two_learners: Path) -> None:
    runs = lb.load_runs(two_learners)
    agg = lb.aggregate(runs)
    assert len(agg) == 4  # 2 learners x 2 metrics
    a = row(agg, learner="anml", metric="acc_final_macro")
    assert a["mean"] == pytest.approx(0.6)
    assert a["sd"] == pytest.approx(0.1)
    assert a["n_seeds"] == 3
    assert a["ci95"] == pytest.approx(CI_3, abs=1e-6)
    assert a["ci_low"] == pytest.approx(0.6 - CI_3, abs=1e-6)
    assert a["ci_high"] == pytest.approx(0.6 + CI_3, abs=1e-6)
    assert a["failed"] == 0 and a["duplicates_dropped"] == 0
    assert a["preset"] == "quick" and a["config_hash"] == "cfg-anml"
    assert a["harness_version"] == "0.1.0" and a["n"] == 100  # constant -> carried
    f = row(agg, learner="finetune", metric="wall_s")
    # values 1, 2, 3: mean 2, sd 1, ci95 = 4.302653 * 1 / sqrt(3) = 2.484138
    assert f["mean"] == pytest.approx(2.0)
    assert f["ci95"] == pytest.approx(2.484138, abs=1e-6)


def test_aggregate_single_seed_has_nan_ci(tmp_path: Path) -> None:
    write_run(tmp_path, "r0", "anml", 0, {"acc_final_macro": 0.7})
    a = row(lb.aggregate(lb.load_runs(tmp_path)), metric="acc_final_macro")
    assert a["mean"] == pytest.approx(0.7)
    assert a["n_seeds"] == 1
    assert math.isnan(a["sd"]) and math.isnan(a["ci95"])
    assert math.isnan(a["ci_low"]) and math.isnan(a["ci_high"])


def test_aggregate_metric_filter_and_unknown_metric(two_learners: Path) -> None:
    runs = lb.load_runs(two_learners)
    agg = lb.aggregate(runs, ["wall_s"])
    assert set(agg["metric"]) == {"wall_s"}
    with pytest.raises(HarnessError, match="acc_final_macro"):  # suggests the close match
        lb.aggregate(runs, ["acc_final_marco"])


def test_failed_runs_excluded_but_counted(two_learners: Path) -> None:
    # anml seed 3 failed after writing a bogus accuracy; seed 4 diverged.
    write_run(two_learners, "anml-3", "anml", 3, {"acc_final_macro": 0.0, "failed": 1.0})
    write_run(two_learners, "anml-4", "anml", 4, {"diverged": 1.0})
    # every run of ewc failed: it is listed with zero seeds.
    for seed in range(2):
        write_run(two_learners, f"ewc-{seed}", "ewc", seed, {"failed": 1.0})
    agg = lb.aggregate(lb.load_runs(two_learners))
    a = row(agg, learner="anml", metric="acc_final_macro")
    assert a["mean"] == pytest.approx(0.6)
    assert a["n_seeds"] == 3
    assert a["failed"] == 2
    assert a["ci95"] == pytest.approx(CI_3, abs=1e-6)
    assert not set(agg["metric"]) & {"failed", "diverged"}
    e = row(agg, learner="ewc", metric="acc_final_macro")
    assert e["n_seeds"] == 0 and e["failed"] == 2 and math.isnan(e["mean"])
    assert row(agg, learner="finetune", metric="wall_s")["failed"] == 0

    table = lb.leaderboard_table(lb.load_runs(two_learners))
    e = row(table, learner="ewc")
    assert e["n_seeds"] == 0 and e["failed"] == 2 and pd.isna(e["rank"])
    assert table["learner"].tolist() == ["anml", "finetune", "ewc"]  # unranked last


def test_duplicates_keep_latest_started_at(two_learners: Path) -> None:
    # A re-run of anml seed 0: the later run ("a-rerun", alphabetically first) wins.
    write_run(
        two_learners,
        "a-rerun",
        "anml",
        0,
        {"acc_final_macro": 0.8, "wall_s": 30.0},
        started_at="2025-02-01T00:00:00+00:00",
    )
    agg = lb.aggregate(lb.load_runs(two_learners))
    a = row(agg, learner="anml", metric="acc_final_macro")
    # values 0.8, 0.6, 0.7: mean 0.7, sd 0.1, ci95 = 0.248414
    assert a["mean"] == pytest.approx(0.7)
    assert a["n_seeds"] == 3
    assert a["duplicates_dropped"] == 1
    assert a["ci95"] == pytest.approx(CI_3, abs=1e-6)
    assert row(agg, learner="finetune", metric="acc_final_macro")["duplicates_dropped"] == 0


def test_rerun_of_failed_run_replaces_it(two_learners: Path) -> None:
    write_run(
        two_learners, "anml-3", "anml", 3, {"failed": 1.0}, started_at="2025-01-01T00:00:00+00:00"
    )
    write_run(
        two_learners,
        "anml-3b",
        "anml",
        3,
        {"acc_final_macro": 0.6, "wall_s": 20.0},
        started_at="2025-01-02T00:00:00+00:00",
    )
    a = row(lb.aggregate(lb.load_runs(two_learners)), learner="anml", metric="acc_final_macro")
    assert a["n_seeds"] == 4 and a["failed"] == 0 and a["duplicates_dropped"] == 1


def test_extra_columns_carried_when_constant(tmp_path: Path) -> None:
    for seed in range(2):
        write_run(
            tmp_path,
            f"r{seed}",
            "oml",
            seed,
            {"acc_final_macro": 0.5},
            extra={"variant": "oml-2020", "lr": 0.01 * (seed + 1), "note": "x"},
        )
    agg = lb.aggregate(lb.load_runs(tmp_path))
    a = row(agg, metric="acc_final_macro")
    assert a["variant"] == "oml-2020" and a["note"] == "x"
    assert "lr" not in agg.columns  # varies within the only group
    table = lb.leaderboard_table(lb.load_runs(tmp_path))
    assert table.loc[0, "variant"] == "oml-2020"


def test_aggregate_does_not_modify_input(two_learners: Path) -> None:
    runs = lb.load_runs(two_learners)
    before = runs.copy()
    lb.aggregate(runs)
    lb.paired_differences(runs, "acc_final_macro", "finetune")
    lb.leaderboard_table(runs)
    pd.testing.assert_frame_equal(runs, before)


# ---------------------------------------------------------------------------- rank


@pytest.mark.parametrize(
    ("metric", "higher"),
    [
        ("accuracies", True),
        ("acc_final_macro", True),
        ("acc_incremental", True),
        ("learning_acc", True),
        ("online_acc", True),
        ("bwt", True),
        ("fwt", True),
        ("meta_test_test_acc", True),
        ("episode_acc", True),
        ("forgetting_max", False),
        ("mse_final", False),
        ("mse_5shot_10step", False),
        ("wall_s", False),
        ("peak_rss_mb", False),
        ("meta_train_s", False),
    ],
)
def test_metric_directions(metric: str, higher: bool) -> None:
    assert lb.is_higher_better(metric) is higher


def test_unknown_direction_raises() -> None:
    with pytest.raises(HarnessError, match="higher_is_better"):
        lb.is_higher_better("params")


def test_rank_higher_and_lower_is_better(two_learners: Path) -> None:
    agg = lb.aggregate(lb.load_runs(two_learners))
    acc = lb.rank(agg, "acc_final_macro")  # anml 0.6 > finetune 0.3
    assert acc["learner"].tolist() == ["anml", "finetune"]
    assert acc["rank"].tolist() == [1, 2]
    wall = lb.rank(agg, "wall_s")  # lower is better: finetune 2 s < anml 20 s
    assert wall["learner"].tolist() == ["finetune", "anml"]
    assert wall["rank"].tolist() == [1, 2]
    flipped = lb.rank(agg, "acc_final_macro", higher_is_better=False)
    assert flipped["learner"].tolist() == ["finetune", "anml"]
    with pytest.raises(HarnessError, match="wall_s"):
        lb.rank(agg, "wall_ss")


def test_rank_is_per_scenario(two_learners: Path) -> None:
    write_run(two_learners, "x-ft", "finetune", 0, {"acc_final_macro": 0.9}, scenario="other")
    write_run(two_learners, "x-anml", "anml", 0, {"acc_final_macro": 0.1}, scenario="other")
    ranked = lb.rank(lb.aggregate(lb.load_runs(two_learners)), "acc_final_macro")
    other = ranked[ranked["scenario"] == "other"]
    assert other["learner"].tolist() == ["finetune", "anml"]
    assert other["rank"].tolist() == [1, 2]
    assert row(ranked, scenario=SCEN, learner="anml")["rank"] == 1


# ---------------------------------------------------------------------------- paired


def test_paired_differences_only_on_matching_stream_hash(tmp_path: Path) -> None:
    base = [0.5, 0.6, 0.8]
    other = [0.7, 0.9, 0.1]
    for seed in range(3):
        write_run(
            tmp_path,
            f"b{seed}",
            "finetune",
            seed,
            {"acc_final_macro": base[seed]},
            stream_hash=f"h{seed}",
        )
        # seed 2 ran on a different stream: never paired (its diff would be -0.7)
        write_run(
            tmp_path,
            f"a{seed}",
            "anml",
            seed,
            {"acc_final_macro": other[seed]},
            stream_hash="hX" if seed == 2 else f"h{seed}",
        )
    # replay only has seed 0: one pair, no CI, no p-value.
    write_run(tmp_path, "r0", "replay", 0, {"acc_final_macro": 0.55}, stream_hash="h0")
    # slda ran on other streams only: no pair at all.
    write_run(tmp_path, "s0", "slda", 0, {"acc_final_macro": 0.55}, stream_hash="hY")
    diffs = lb.paired_differences(lb.load_runs(tmp_path), "acc_final_macro", "finetune")
    assert set(diffs["learner"]) == {"anml", "replay", "slda"}
    a = row(diffs, learner="anml")
    # pairs (0.7 - 0.5, 0.9 - 0.6) = (0.2, 0.3): mean 0.25, sd 0.0707107, se 0.05,
    # t = 5 with 1 dof: p = (2 / pi) * atan(1 / 5) = 0.125666;
    # ci95 = t(0.975, 1) * 0.05 = 12.706205 * 0.05 = 0.635310.
    assert a["n_pairs"] == 2
    assert a["mean_diff"] == pytest.approx(0.25)
    assert a["p_value"] == pytest.approx(0.125666, abs=1e-6)
    assert a["p_value"] == pytest.approx(2 / math.pi * math.atan(1 / 5))
    assert a["ci95"] == pytest.approx(0.635310, abs=1e-6)
    assert a["baseline"] == "finetune" and a["baseline_config_hash"] == "cfg-finetune"
    r = row(diffs, learner="replay")
    assert r["n_pairs"] == 1 and r["mean_diff"] == pytest.approx(0.05)
    assert math.isnan(r["p_value"]) and math.isnan(r["ci95"])
    s = row(diffs, learner="slda")
    assert s["n_pairs"] == 0 and math.isnan(s["mean_diff"])


def test_paired_differences_matches_scipy_and_skips_failed(tmp_path: Path) -> None:
    base = [0.50, 0.55, 0.61, 0.40]
    other = [0.52, 0.59, 0.60, 0.48]
    for seed in range(4):
        write_run(tmp_path, f"b{seed}", "finetune", seed, {"acc_final_macro": base[seed]})
        write_run(tmp_path, f"a{seed}", "anml", seed, {"acc_final_macro": other[seed]})
    # a failed anml seed on a matching stream is not paired
    write_run(tmp_path, "b4", "finetune", 4, {"acc_final_macro": 0.5})
    write_run(tmp_path, "a4", "anml", 4, {"acc_final_macro": 0.0, "failed": 1.0})
    a = row(
        lb.paired_differences(lb.load_runs(tmp_path), "acc_final_macro", "finetune"), learner="anml"
    )
    assert a["n_pairs"] == 4
    assert a["p_value"] == pytest.approx(stats.ttest_rel(other, base).pvalue)


def test_paired_differences_bad_baseline(two_learners: Path) -> None:
    runs = lb.load_runs(two_learners)
    with pytest.raises(HarnessError, match="finetune"):
        lb.paired_differences(runs, "acc_final_macro", "finetun")
    write_run(
        two_learners,
        "ft-paper",
        "finetune",
        0,
        {"acc_final_macro": 0.3},
        preset="paper",
        config_hash="cfg-paper",
    )
    with pytest.raises(HarnessError, match="several configurations"):
        lb.paired_differences(lb.load_runs(two_learners), "acc_final_macro", "finetune")


# ---------------------------------------------------------------------------- table


def test_leaderboard_table(two_learners: Path) -> None:
    table = lb.leaderboard_table(lb.load_runs(two_learners))
    assert table["learner"].tolist() == ["anml", "finetune"]
    assert table["rank"].tolist() == [1, 2]
    assert set(table["rank_by"]) == {"acc_final_macro"}
    assert table["n_seeds"].tolist() == [3, 3]
    for col in ["acc_final_macro_mean", "acc_final_macro_ci95", "wall_s_mean", "wall_s_ci95"]:
        assert col in table.columns
    assert table.loc[0, "acc_final_macro_mean"] == pytest.approx(0.6)
    assert table.loc[0, "acc_final_macro_ci95"] == pytest.approx(CI_3, abs=1e-6)
    assert table.columns[:6].tolist() == [*lb.CONFIG_KEYS, "rank"]

    by_wall = lb.leaderboard_table(lb.load_runs(two_learners), primary_metric="wall_s")
    assert by_wall["learner"].tolist() == ["finetune", "anml"]
    only = lb.leaderboard_table(lb.load_runs(two_learners), metrics=["wall_s"])
    assert "acc_final_macro_mean" not in only.columns
    assert only["rank_by"].tolist() == ["wall_s", "wall_s"]


def test_leaderboard_table_default_primary_lower_is_better(tmp_path: Path) -> None:
    for seed in range(2):
        write_run(tmp_path, f"a{seed}", "oml", seed, {"mse_final": 0.5, "online_acc": 0.1})
        write_run(tmp_path, f"b{seed}", "finetune", seed, {"mse_final": 2.0, "online_acc": 0.9})
    table = lb.leaderboard_table(lb.load_runs(tmp_path))
    assert table["rank_by"].tolist() == ["mse_final", "mse_final"]
    assert table["learner"].tolist() == ["oml", "finetune"]


def test_leaderboard_table_without_primary_metric_raises(tmp_path: Path) -> None:
    write_run(tmp_path, "a0", "oml", 0, {"online_acc": 0.1})
    with pytest.raises(HarnessError, match="primary_metric"):
        lb.leaderboard_table(lb.load_runs(tmp_path))
    table = lb.leaderboard_table(lb.load_runs(tmp_path), primary_metric="online_acc")
    assert table.loc[0, "rank"] == 1


# ---------------------------------------------------------------------------- markdown


def test_to_markdown(two_learners: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tabulate", None)  # importing tabulate would now fail
    write_run(
        two_learners, "solo", "slda", 0, {"acc_final_macro": 0.25, "wall_s": 1.0}, preset="a|b"
    )
    table = lb.leaderboard_table(lb.load_runs(two_learners))
    md = lb.to_markdown(table)
    lines = md.splitlines()
    assert md.endswith("\n")
    assert len(lines) == 2 + 3
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    assert header[:6] == [*lb.CONFIG_KEYS, "rank"]
    assert "acc_final_macro" in header and "wall_s" in header
    assert "acc_final_macro_mean" not in header and "acc_final_macro_ci95" not in header
    assert set(lines[1].replace("|", " ").split()) <= {"---", "---:"}
    assert "| anml |" in lines[2] and "| 0.600 ± 0.248 |" in lines[2]
    assert "| 20.000 ± 24.841 |" in lines[2]  # wall 30/20/10: ci95 = 4.302653*10/sqrt(3)
    assert "| 0.300 ± 0.248 |" in lines[3]
    assert "| 0.250 |" in lines[4]  # one seed: no CI
    assert "a\\|b" in lines[4]  # pipes escaped
    assert all(line.count(" | ") == lines[0].count(" | ") for line in lines[2:])


def test_to_markdown_empty_cells() -> None:
    table = pd.DataFrame(
        {
            "learner": ["x"],
            "rank": pd.array([pd.NA], dtype="Int64"),
            "acc_mean": [math.nan],
            "acc_ci95": [math.nan],
            "lr": [1e-5],
        }
    )
    assert lb.to_markdown(table).splitlines()[2] == "| x |  |  | 1e-05 |"


# ---------------------------------------------------------------------------- write


def test_write_leaderboard_atomic(two_learners: Path) -> None:
    folder = two_learners / SCEN
    before = set(os.listdir(folder))
    csv_path, md_path = lb.write_leaderboard(folder)
    assert (csv_path, md_path) == (folder / "leaderboard.csv", folder / "leaderboard.md")
    assert set(os.listdir(folder)) == before | {"leaderboard.csv", "leaderboard.md"}
    written = pd.read_csv(csv_path)
    assert written["learner"].tolist() == ["anml", "finetune"]
    assert written.loc[0, "acc_final_macro_mean"] == pytest.approx(0.6)
    assert "0.600 ± 0.248" in md_path.read_text(encoding="utf-8")
    # Writing again reads the folder without tripping on its own leaderboard files.
    lb.write_leaderboard(folder)
    assert set(os.listdir(folder)) == before | {"leaderboard.csv", "leaderboard.md"}


def test_write_leaderboard_failure_leaves_no_temp_file(
    two_learners: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = two_learners / SCEN
    (folder / "leaderboard.csv").write_text("old\n")
    before = set(os.listdir(folder))

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(lb.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        lb.write_leaderboard(folder)
    assert set(os.listdir(folder)) == before
    assert (folder / "leaderboard.csv").read_text() == "old\n"


def test_write_leaderboard_from_given_runs(two_learners: Path, tmp_path: Path) -> None:
    runs = lb.load_runs(two_learners)
    out = tmp_path / "new" / "board"
    csv_path, md_path = lb.write_leaderboard(out, runs)
    assert csv_path.exists() and md_path.exists()
    assert sorted(os.listdir(out)) == ["leaderboard.csv", "leaderboard.md"]
    lb.write_leaderboard(out, runs, primary_metric="wall_s")
    assert pd.read_csv(csv_path)["learner"].tolist() == ["finetune", "anml"]


# ---------------------------------------------------------------------------- i.i.d. oracle


@pytest.fixture
def with_oracle(tmp_path: Path) -> Path:
    """anml and its oracle anml-iid on streams h0, h1, h3 (paired) and seed 2 on different
    streams (not paired); finetune without an oracle; an oracle without its learner."""
    test = {0: (0.6, 0.8), 1: (0.45, 0.9), 2: (0.5, 0.7), 3: (0.3, 0.4)}  # (anml, anml-iid)
    train = {0: (0.9, 1.0), 1: (0.6, 0.8), 2: (0.7, 0.7), 3: (0.99, 0.9)}
    for seed in test:
        for side, learner in enumerate(("anml", "anml-iid")):
            write_run(
                tmp_path,
                f"{learner}-{seed}",
                learner,
                seed,
                {
                    "meta_test_test_acc": test[seed][side],
                    "meta_test_train_acc": train[seed][side],
                    "wall_s": 1.0,
                },
                stream_hash="hX" if (seed, learner) == (2, "anml-iid") else f"h{seed}",
                extra={
                    "scenario_params": '{"n_classes": 10}',
                    "eval_order": "iid" if side else "stream",
                },
            )
        write_run(tmp_path, f"ft-{seed}", "finetune", seed, {"meta_test_test_acc": 0.1})
    write_run(tmp_path, "o19-0", "oml-2019-iid", 0, {"meta_test_test_acc": 0.9})
    return tmp_path


def test_oracle_drops_hand_computed(with_oracle: Path) -> None:
    drops = lb.oracle_drops(lb.load_runs(with_oracle))
    # finetune has no finetune-iid and oml-2019-iid no oml-2019: left out.
    assert set(drops["learner"]) == {"anml"} and set(drops["oracle"]) == {"anml-iid"}
    assert sorted(drops["metric"]) == ["meta_test_test_acc", "meta_test_train_acc"]
    t = row(drops, metric="meta_test_test_acc")
    # Seed 2 ran on different streams (h2 vs hX): not paired. Pairs (stream, oracle):
    # (0.6, 0.8) -> 0.2/0.8 = 0.25; (0.45, 0.9) -> 0.45/0.9 = 0.5; (0.3, 0.4) -> 0.1/0.4 = 0.25.
    # mean 1/3; deviations -1/12, 1/6, -1/12; sum of squares 1/144 + 4/144 + 1/144 = 1/24;
    # sd = sqrt(1/48) = 0.1443376; se = sd/sqrt(3) = 1/12; ci95 = 4.302653 / 12 = 0.358554.
    assert t["n_pairs"] == 3
    assert t["mean_drop"] == pytest.approx(1 / 3)
    assert t["sd_drop"] == pytest.approx(0.1443376, abs=1e-6)
    assert t["ci95"] == pytest.approx(0.358554, abs=1e-6)
    assert t["ci_low"] == pytest.approx(1 / 3 - 0.358554, abs=1e-6)
    # mean_stream (0.6 + 0.45 + 0.3) / 3 = 0.45; mean_oracle (0.8 + 0.9 + 0.4) / 3 = 0.7
    assert (t["mean_stream"], t["mean_oracle"]) == (pytest.approx(0.45), pytest.approx(0.7))
    assert t["oracle_config_hash"] == "cfg-anml-iid" and t["config_hash"] == "cfg-anml"
    assert t["scenario_params"] == '{"n_classes": 10}'  # constant over both sides: carried
    assert "eval_order" not in drops.columns  # differs between the sides: not carried
    r = row(drops, metric="meta_test_train_acc")
    # (0.9, 1.0) -> 0.1; (0.6, 0.8) -> 0.25; (0.99, 0.9) -> -0.09/0.9 = -0.1 (stream above
    # the oracle: negative). mean 0.25/3 = 0.0833333; deviations 1/60, 1/6, -11/60; sum of
    # squares (1 + 100 + 121)/3600 = 222/3600; sd = sqrt(111/3600) = 0.1755942;
    # se = sd/sqrt(3) = 0.1013794; ci95 = 4.302653 * 0.1013794 = 0.4362003.
    assert r["n_pairs"] == 3
    assert r["mean_drop"] == pytest.approx(0.25 / 3)
    assert r["sd_drop"] == pytest.approx(0.1755942, abs=1e-6)
    assert r["ci95"] == pytest.approx(0.4362003, abs=1e-6)


def test_oracle_drops_pairing_rules(tmp_path: Path) -> None:
    def run(run_id: str, learner: str, seed: int, acc: float, **kw: object) -> None:
        write_run(tmp_path, run_id, learner, seed, {"meta_test_test_acc": acc}, **kw)

    # Oracle 0 on seed 0: no drop (NaN), left out; seed 1: (0.5 - 0.4) / 0.5 = 0.2.
    run("x0", "x", 0, 0.3)
    run("xi0", "x-iid", 0, 0.0)
    run("x1", "x", 1, 0.4)
    run("xi1", "x-iid", 1, 0.5)
    # A failed oracle run and an oracle of another preset never pair.
    run("y0", "y", 0, 0.3)
    write_run(tmp_path, "yi0", "y-iid", 0, {"meta_test_test_acc": 0.5, "failed": 1.0})
    run("yi0p", "y-iid", 0, 0.5, preset="paper", config_hash="cfg-paper")
    # Only undefined drops: no row either.
    run("z0", "z", 0, 0.3)
    run("zi0", "z-iid", 0, 0.0)
    drops = lb.oracle_drops(lb.load_runs(tmp_path))
    assert drops["learner"].tolist() == ["x"]
    x = drops.iloc[0]
    assert x["n_pairs"] == 1 and x["mean_drop"] == pytest.approx(0.2)
    assert (x["mean_stream"], x["mean_oracle"]) == (pytest.approx(0.4), pytest.approx(0.5))
    assert math.isnan(x["sd_drop"]) and math.isnan(x["ci95"])
    # Nothing pairs: an empty table with the columns.
    none = lb.oracle_drops(lb.load_runs(tmp_path), metrics=["acc_final_macro"])
    assert none.empty and {"learner", "oracle", "mean_drop", "n_pairs"} <= set(none.columns)


def test_oracle_drops_rejects_values_that_are_not_accuracies(tmp_path: Path) -> None:
    write_run(tmp_path, "a0", "anml", 0, {"meta_test_test_acc": 64.0})
    write_run(tmp_path, "b0", "anml-iid", 0, {"meta_test_test_acc": 80.0})
    with pytest.raises(HarnessError, match="a0 and b0.*percentages"):
        lb.oracle_drops(lb.load_runs(tmp_path))


def test_write_leaderboard_adds_the_oracle_drop(
    with_oracle: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = with_oracle / SCEN
    (folder / "oracle_drop.csv").write_text("stale\n")  # from earlier runs: replaced
    lb.write_leaderboard(folder)
    drop_csv = pd.read_csv(folder / "oracle_drop.csv")
    assert drop_csv["learner"].tolist() == ["anml", "anml"]
    assert drop_csv["mean_drop"].tolist() == pytest.approx([1 / 3, 0.25 / 3])
    md = (folder / "leaderboard.md").read_text(encoding="utf-8")
    table = md[md.index("## Relative drop below the i.i.d. oracle") :]
    assert "| anml | quick | cfg-anml | anml-iid | cfg-anml-iid |" in table
    assert "| 0.450 | 0.700 | 0.333 ± 0.359 |" in table
    assert "| 0.083 ± 0.436 |" in table
    assert not list(folder.glob(".*.tmp"))
    # Writing again reads the folder without tripping on oracle_drop.csv.
    lb.write_leaderboard(folder)
    assert pd.read_csv(folder / "oracle_drop.csv").equals(drop_csv)
    # No oracle pairs: no drop table, and a stale oracle_drop.csv is removed.
    other = tmp_path_factory.mktemp("no_oracle")
    write_run(other, "a0", "anml", 0, {"meta_test_test_acc": 0.5})
    (other / "oracle_drop.csv").write_text("stale\n")
    lb.write_leaderboard(other)
    assert not (other / "oracle_drop.csv").exists()
    assert "Relative drop" not in (other / "leaderboard.md").read_text(encoding="utf-8")


def test_leaderboard_ranks_within_the_same_scenario_parameters(tmp_path: Path) -> None:
    """5-way and 20-way episodes of one scenario are different benchmarks: each set of
    scenario parameters gets its own ranking (a 20-way 0.8 is not 'behind' a 5-way 0.9)."""
    runs = {("maml", "5"): 0.94, ("protonet", "5"): 0.97, ("maml", "20"): 0.82,
            ("protonet", "20"): 0.80}
    for (learner, ways), acc in runs.items():
        write_run(tmp_path, f"{learner}-{ways}", learner, 0, {"episode_acc": acc},
                  scenario="omniglot-fewshot", config_hash=f"{learner}-{ways}",
                  extra={"scenario_params": f'{{"ways": {ways}}}'})
    t = lb.leaderboard_table(lb.load_runs(tmp_path))
    ranks = {(r.learner, r.config_hash.split("-")[1]): r.rank for r in t.itertuples()}
    assert ranks == {("protonet", "5"): 1, ("maml", "5"): 2, ("maml", "20"): 1,
                     ("protonet", "20"): 2}
    assert list(t["scenario_params"]) == ['{"ways": 20}'] * 2 + ['{"ways": 5}'] * 2
