"""Tests for harness.leaderboard: hand-built run CSVs with known values (docs/design.md D6)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from harness import leaderboard as lb
from harness import results
from harness.errors import HarnessError
from harness.fileio import sha256_bytes

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
    status: str | None = None,
    representation: str = "",
) -> Path:
    """Write <folder>/<scenario>/<run_id>.csv, .npz and .json (with its manifest) with
    `harness.results.write_run`. `status` defaults to what the harness writes for these
    metrics; "" leaves the column empty, as in files written before it existed."""
    if status is None:
        failure = [m for m in lb.STATUS_METRICS if metrics.get(m, 0.0) != 0.0]
        stopped = metrics.get("meta_train_complete") == 0.0
        status = failure[0] if failure else "partial" if stopped else "ok"
    base = {
        "scenario": scenario,
        "scenario_version": scenario_version,
        "stream_hash": stream_hash if stream_hash is not None else f"h{seed}",
        "learner": learner,
        "config_hash": config_hash if config_hash is not None else f"cfg-{learner}",
        "preset": preset,
        "seed": seed,
        "harness_version": "0.1.0",
        "git_sha": "abc1234",
        "torch_version": "2.5.0",
        "device": "cpu",
        "started_at": started_at,
        "wall_s": 1.5,
        "status": status,
    }
    extra = {"representation": representation, **(extra or {})}
    rows = {m: (v, 100) for m, v in metrics.items()}
    path, _ = results.write_run(folder, scenario, run_id, base, rows, extra, {}, {})
    return path


def rewrite_csv(path: Path, text: str) -> None:
    """Replace a run's CSV and its manifest with matching ones: a file that passes the
    checksum, so that only the checks on its content can reject it."""
    data = text.encode()
    path.write_bytes(data)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["files"]["csv"] = {"sha256": sha256_bytes(data), "rows": max(text.count("\n") - 1, 0)}
    path.with_suffix(".json").write_text(json.dumps(meta))


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


def anml_accuracy(agg: pd.DataFrame, mean: float) -> pd.Series:
    """anml's acc_final_macro row of `agg`, checked: 3 seeds averaging `mean`, with the 95 %
    CI half-width CI_3 (their sd is 0.1)."""
    a = row(agg, learner="anml", metric="acc_final_macro")
    assert a["mean"] == pytest.approx(mean)
    assert a["n_seeds"] == 3
    assert a["ci95"] == pytest.approx(CI_3, abs=1e-6)
    return a


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
    edited = pd.read_csv(path).drop(columns=["stream_hash", "wall_s"])
    rewrite_csv(path, edited.to_csv(index=False))
    with pytest.warns(lb.ResultFileWarning, match="r0.csv: lacks required"):
        with pytest.raises(HarnessError, match="stream_hash, wall_s") as exc:
            lb.load_runs(tmp_path)
    assert "r0.csv" in str(exc.value) and "no valid run file" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_load_runs_rejects_unreadable_and_non_numeric(tmp_path: Path) -> None:
    empty = write_run(tmp_path, "empty", "anml", 0, {"acc_final_macro": 0.5})
    rewrite_csv(empty, "")
    with (
        pytest.warns(lb.ResultFileWarning),
        pytest.raises(HarnessError, match="empty.csv: cannot be read as CSV: No columns to parse"),
    ):
        lb.load_runs(tmp_path)
    empty.unlink()
    empty.with_suffix(".json").unlink()
    path = write_run(tmp_path, "r0", "anml", 0, {"acc_final_macro": 0.5})
    df = pd.read_csv(path)
    df["value"] = "high"
    rewrite_csv(path, df.to_csv(index=False))
    with pytest.warns(lb.ResultFileWarning), pytest.raises(HarnessError, match="r0.csv.*'value'"):
        lb.load_runs(tmp_path)
    df["value"] = 0.5
    df["status"] = "finished"
    rewrite_csv(path, df.to_csv(index=False))
    with (
        pytest.warns(lb.ResultFileWarning),
        pytest.raises(HarnessError, match="r0.csv: column 'status' holds unknown 'finished'"),
    ):
        lb.load_runs(tmp_path)


# ---------------------------------------------------------------------------- aggregate


def test_aggregate_mean_sd_ci(two_learners: Path) -> None:
    runs = lb.load_runs(two_learners)
    agg = lb.aggregate(runs)
    assert len(agg) == 4  # 2 learners x 2 metrics
    a = anml_accuracy(agg, 0.6)
    assert a["sd"] == pytest.approx(0.1)
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
    assert anml_accuracy(agg, 0.6)["failed"] == 2
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
    # values 0.8, 0.6, 0.7: mean 0.7, sd 0.1, ci95 = 0.248414
    assert anml_accuracy(agg, 0.7)["duplicates_dropped"] == 1
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

    from harness import fileio

    monkeypatch.setattr(fileio.os, "replace", broken_replace)
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
    """anml and its oracle anml-iid on streams h0, h1, h3 (paired: same meta-trained network)
    and seed 2 on different streams (not paired); finetune without an oracle; an oracle
    without its learner."""
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
                representation="anml-net",
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
        kw.setdefault("representation", "net")
        write_run(tmp_path, run_id, learner, seed, {"meta_test_test_acc": acc}, **kw)

    # Oracle 0 on seed 0: no drop (NaN), left out; seed 1: (0.5 - 0.4) / 0.5 = 0.2.
    run("x0", "x", 0, 0.3)
    run("xi0", "x-iid", 0, 0.0)
    run("x1", "x", 1, 0.4)
    run("xi1", "x-iid", 1, 0.5)
    # A failed oracle run and an oracle of another preset never pair.
    run("y0", "y", 0, 0.3)
    write_run(
        tmp_path,
        "yi0",
        "y-iid",
        0,
        {"meta_test_test_acc": 0.5, "failed": 1.0},
        representation="net",
    )
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
    write_run(tmp_path, "a0", "anml", 0, {"meta_test_test_acc": 64.0}, representation="net")
    write_run(tmp_path, "b0", "anml-iid", 0, {"meta_test_test_acc": 80.0}, representation="net")
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
    runs = {
        ("maml", "5"): 0.94,
        ("protonet", "5"): 0.97,
        ("maml", "20"): 0.82,
        ("protonet", "20"): 0.80,
    }
    for (learner, ways), acc in runs.items():
        write_run(
            tmp_path,
            f"{learner}-{ways}",
            learner,
            0,
            {"episode_acc": acc},
            scenario="omniglot-fewshot",
            config_hash=f"{learner}-{ways}",
            extra={"scenario_params": f'{{"ways": {ways}}}'},
        )
    t = lb.leaderboard_table(lb.load_runs(tmp_path))
    ranks = {(r.learner, r.config_hash.split("-")[1]): r.rank for r in t.itertuples()}
    assert ranks == {
        ("protonet", "5"): 1,
        ("maml", "5"): 2,
        ("maml", "20"): 1,
        ("protonet", "20"): 2,
    }
    # Parameters sort as numbers: 5-way before 20-way.
    assert list(t["scenario_params"]) == ['{"ways": 5}'] * 2 + ['{"ways": 20}'] * 2


# ---------------------------------------------------------------------------- damaged run files

# A run with 7 metric rows, peak_rss_mb last; its accuracy 0.99 would move anml's mean
# (0.5, 0.6, 0.7 -> 0.6975) and its n_seeds (3 -> 4) if it were read.
DAMAGED = {
    "acc_final_macro": 0.99,
    "wall_s": 99.0,
    "online_acc": 0.9,
    "bwt": 0.0,
    "fwt": 0.0,
    "samples_per_s": 10.0,
    "peak_rss_mb": 774.88,
}
MISMATCH = "the CSV does not match its manifest"
DAMAGES = {
    # the file ends inside its last value: pandas alone would read 774 for 774.88
    "cut_in_last_value": f"{MISMATCH} (6 data lines, 7 written)",
    "short_row": f"{MISMATCH} (7 data lines, 7 written)",
    "header_only": f"{MISMATCH} (0 data lines, 7 written)",
    "five_lines_dropped": f"{MISMATCH} (2 data lines, 7 written)",
    "json_without_manifest": "its .json has no manifest (written by harness < 0.2); re-run it",
    "csv_without_json": "its .json (with the manifest) is missing",
}


def damage(kind: str, path: Path) -> None:
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if kind == "cut_in_last_value":
        path.write_text(text[: text.rindex("774.88") + len("774")])
        assert pd.read_csv(path)["value"].iloc[-1] == 774.0  # what a plain reader would take
    elif kind == "short_row":
        lines[3] = ",".join(lines[3].split(",")[:10]) + "\n"
        path.write_text("".join(lines))
    elif kind == "header_only":
        path.write_text(lines[0])
    elif kind == "five_lines_dropped":
        path.write_text("".join(lines[:2] + lines[7:]))
    elif kind == "json_without_manifest":
        path.with_suffix(".json").write_text(json.dumps({"run_id": path.stem, "seed": 3}))
    elif kind == "csv_without_json":
        path.with_suffix(".json").unlink()


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_a_damaged_run_file_is_named_and_left_out(two_learners: Path, kind: str) -> None:
    bad = write_run(two_learners, "anml-3", "anml", 3, DAMAGED)
    assert (
        row(lb.aggregate(lb.load_runs(two_learners)), learner="anml", metric="wall_s")["n_seeds"]
        == 4
    )  # read while intact
    damage(kind, bad)
    problems: list[tuple[Path, str]] = []
    with pytest.warns(lb.ResultFileWarning) as caught:
        runs = lb.load_runs(two_learners, problems)
    assert len(problems) == 1 and problems[0][0] == bad
    reason = problems[0][1]
    assert reason.startswith(DAMAGES[kind])
    messages = [str(w.message) for w in caught if w.category is lb.ResultFileWarning]
    assert messages == [f"{bad}: {reason}; left out"]
    assert "anml-3" not in set(runs["run_id"])
    agg = lb.aggregate(runs)
    anml_accuracy(agg, 0.6)
    assert row(agg, learner="finetune", metric="acc_final_macro")["mean"] == pytest.approx(0.3)
    assert "peak_rss_mb" not in set(agg["metric"])


def test_every_damaged_file_is_reported_and_an_all_damaged_folder_raises(tmp_path: Path) -> None:
    paths = {}
    for seed, kind in enumerate(sorted(DAMAGES)):
        paths[kind] = write_run(tmp_path, f"r{seed}", "anml", seed, DAMAGED)
        damage(kind, paths[kind])
    problems: list[tuple[Path, str]] = []
    with pytest.warns(lb.ResultFileWarning), pytest.raises(HarnessError) as exc:
        lb.load_runs(tmp_path, problems)
    assert [p for p, _ in problems] == sorted(paths.values())
    for kind, path in paths.items():
        assert dict(problems)[path].startswith(DAMAGES[kind])
    first, why = problems[0]
    assert str(exc.value) == (
        f"no valid run file under {tmp_path} (6 left out); first: {first}: {why}"
    )
    # One intact run is enough to read the folder.
    write_run(tmp_path, "ok", "anml", 9, {"acc_final_macro": 0.5})
    with pytest.warns(lb.ResultFileWarning):
        assert set(lb.load_runs(tmp_path)["run_id"]) == {"ok"}


def test_a_malformed_manifest_is_reported_not_raised(two_learners: Path) -> None:
    bad = write_run(two_learners, "anml-3", "anml", 3, DAMAGED)
    bad.with_suffix(".json").write_text(json.dumps({"files": {"csv": "not a dict"}}))
    problems: list[tuple[Path, str]] = []
    with pytest.warns(lb.ResultFileWarning, match="anml-3.csv: its .json holds a malformed"):
        runs = lb.load_runs(two_learners, problems)
    assert problems == [(bad, "its .json holds a malformed manifest (AttributeError)")]
    assert row(lb.aggregate(runs), learner="anml", metric="acc_final_macro")["n_seeds"] == 3


# ---------------------------------------------------------------------------- partial runs


def write_partial_fixture(folder: Path, status_column: bool) -> None:
    """anml complete on seeds 0, 1 (acc 0.5, 0.7; 100 of 100 meta-steps) and partial on seed 2
    (acc 0.9 after 30 of 100); finetune complete on seeds 0, 1 (acc 0.3, 0.5). Without the
    status column (files from before it), the status comes from meta_train_complete."""

    def meta(acc: float, done: float) -> dict[str, float]:
        return {
            "acc_final_macro": acc,
            "meta_steps_done": done,
            "meta_steps_asked": 100.0,
            "meta_train_complete": float(done == 100.0),
        }

    status = None if status_column else ""
    for seed, (acc, done) in enumerate([(0.5, 100.0), (0.7, 100.0), (0.9, 30.0)]):
        write_run(folder, f"anml-{seed}", "anml", seed, meta(acc, done), status=status)
    for seed, acc in enumerate([0.3, 0.5]):
        write_run(folder, f"ft-{seed}", "finetune", seed, {"acc_final_macro": acc}, status=status)


@pytest.mark.parametrize("status_column", [True, False], ids=["status", "derived"])
def test_partial_runs_are_never_averaged_or_ranked_with_complete_ones(
    tmp_path: Path, status_column: bool
) -> None:
    write_partial_fixture(tmp_path, status_column)
    runs = lb.load_runs(tmp_path)
    if status_column:
        assert set(runs.loc[runs["run_id"] == "anml-2", "status"]) == {"partial"}
    else:
        assert runs["status"].isna().all()
    agg = lb.aggregate(runs)
    done = row(agg, learner="anml", status="complete", metric="acc_final_macro")
    # (0.5, 0.7): mean 0.6, sd 0.1414214, ci95 = t(0.975, 1) * sd / sqrt(2) = 12.706205 * 0.1
    assert done["mean"] == pytest.approx(0.6) and done["n_seeds"] == 2
    assert done["ci95"] == pytest.approx(1.2706205, abs=1e-6)
    cut = row(agg, learner="anml", status="partial", metric="acc_final_macro")
    assert cut["mean"] == pytest.approx(0.9) and cut["n_seeds"] == 1
    assert row(agg, learner="anml", status="partial", metric="meta_steps_done")["mean"] == 30

    table = lb.leaderboard_table(runs)
    got = [
        (r.learner, r.status, None if pd.isna(r.rank) else int(r.rank)) for r in table.itertuples()
    ]
    # The partial anml (0.9) would be first if it were ranked.
    assert got == [("anml", "complete", 1), ("finetune", "complete", 2), ("anml", "partial", None)]
    assert table.columns[:7].tolist() == [*lb.CONFIG_KEYS, "rank", "status"]
    ranked = lb.rank(agg, "acc_final_macro")
    assert pd.isna(row(ranked, learner="anml", status="partial")["rank"])
    assert row(ranked, learner="finetune")["rank"] == 2

    folder = tmp_path / SCEN
    csv_path, md_path = lb.write_leaderboard(folder)
    written = pd.read_csv(csv_path)
    assert written["status"].tolist() == ["complete", "complete", "partial"]
    assert written["rank"].isna().tolist() == [False, False, True]
    md = md_path.read_text(encoding="utf-8")
    top, partial = md.split(f"## {lb.PARTIAL_TITLE}\n\n")
    assert "| 1 | anml | quick | 2 | 0.600 ± 1.271 |" in top and "0.900" not in top
    lines = partial.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    cells = [c.strip() for c in lines[2].strip("|").split(" | ")]
    assert "rank" not in header and len(lines) == 3
    assert cells[header.index("learner")] == "anml"
    assert cells[header.index("steps done of asked")] == "30 of 100"
    assert cells[header.index("acc_final_macro")] == "0.900"


def test_a_partial_run_re_run_to_the_end_leaves_one_complete_seed(tmp_path: Path) -> None:
    write_partial_fixture(tmp_path, status_column=True)
    write_run(
        tmp_path,
        "anml-2b",
        "anml",
        2,
        {"acc_final_macro": 0.6, "meta_steps_done": 100.0, "meta_train_complete": 1.0},
        started_at="2025-01-02T00:00:00+00:00",
    )
    table = lb.leaderboard_table(lb.load_runs(tmp_path))
    assert table["status"].tolist() == ["complete", "complete"]
    a = row(table, learner="anml")
    # (0.5, 0.7, 0.6): mean 0.6, sd 0.1, ci95 0.248414; the partial seed 2 was superseded
    assert a["n_seeds"] == 3 and a["duplicates_dropped"] == 1
    assert a["acc_final_macro_mean"] == pytest.approx(0.6)
    assert a["acc_final_macro_ci95"] == pytest.approx(CI_3, abs=1e-6)


@pytest.mark.parametrize("status", [None, ""], ids=["status", "derived"])
def test_timed_out_runs_are_counted_as_failed(two_learners: Path, status: str | None) -> None:
    assert "timed_out" in lb.STATUS_METRICS
    write_run(two_learners, "anml-3", "anml", 3, {"timed_out": 1.0, "wall_s": 60.0}, status=status)
    agg = lb.aggregate(lb.load_runs(two_learners))
    a = row(agg, learner="anml", metric="wall_s")
    assert a["failed"] == 1 and a["n_seeds"] == 3 and a["mean"] == pytest.approx(20.0)
    assert "timed_out" not in set(agg["metric"])


# ---------------------------------------------------------------------------- oracle pairing


def test_oracle_pairs_only_runs_on_the_same_representation(tmp_path: Path) -> None:
    def pair(seed: int, acc: float, oracle: float, rep: str, oracle_rep: str) -> None:
        for learner, value, r in (("anml", acc, rep), ("anml-iid", oracle, oracle_rep)):
            write_run(
                tmp_path,
                f"{learner}-{seed}",
                learner,
                seed,
                {"meta_test_test_acc": value},
                representation=r,
            )

    # Seed 0: two different meta-trained networks on the same stream: never paired (its drop
    # would be (0.8 - 0.2) / 0.8 = 0.75). Seed 2: rows without a representation: never paired.
    pair(0, 0.2, 0.8, "anml-aaa", "anml-bbb")
    pair(2, 0.2, 0.8, "", "")
    runs = lb.load_runs(tmp_path)
    assert lb.oracle_drops(runs).empty
    # Seed 1: the same network: (0.8 - 0.6) / 0.8 = 0.25.
    pair(1, 0.6, 0.8, "anml-ccc", "anml-ccc")
    runs = lb.load_runs(tmp_path)
    drops = lb.oracle_drops(runs)
    d = row(drops, metric="meta_test_test_acc")
    assert d["n_pairs"] == 1 and d["mean_drop"] == pytest.approx(0.25)
    assert (d["mean_stream"], d["mean_oracle"]) == (pytest.approx(0.6), pytest.approx(0.8))
    assert d["status"] == "complete" and d["representation"] == "anml-ccc"

    unpaired = lb.unpaired_oracle_runs(runs)
    got = unpaired[["seed", "run_id", "representation", "oracle_run_id", "reason"]]
    assert got.values.tolist() == [
        [0, "anml-0", "anml-aaa", "anml-iid-0", "representation differs"],
        [2, "anml-2", "", "anml-iid-2", "representation not recorded"],
    ]
    assert unpaired.loc[0, "oracle_representation"] == "anml-bbb"
    note = (
        "anml (quick) and anml-iid: not paired: representation differs (seed 0); "
        "representation not recorded (seed 2)"
    )
    assert lb.unpaired_oracle_notes(unpaired) == [note]
    _, md_path = lb.write_leaderboard(tmp_path / SCEN)
    md = md_path.read_text(encoding="utf-8")
    assert md.count("not paired") == 1
    assert md.endswith(f"## Not paired with the i.i.d. oracle\n\n- {note}\n")
    assert "| anml | quick | cfg-anml | anml-iid | cfg-anml-iid | complete | 1 | 0.600 |" in md


def test_oracle_pairs_partial_runs_only_with_partial_ones(tmp_path: Path) -> None:
    stopped = {"meta_train_complete": 0.0, "meta_steps_done": 5.0, "meta_steps_asked": 10.0}
    # Seed 0: both stopped early on the same network: paired, (0.5 - 0.4) / 0.5 = 0.2.
    write_run(
        tmp_path, "a0", "anml", 0, {"meta_test_test_acc": 0.4, **stopped}, representation="net"
    )
    write_run(
        tmp_path, "o0", "anml-iid", 0, {"meta_test_test_acc": 0.5, **stopped}, representation="net"
    )
    # Seed 1: the stream run stopped early, the oracle's did not: not paired.
    write_run(
        tmp_path, "a1", "anml", 1, {"meta_test_test_acc": 0.4, **stopped}, representation="net"
    )
    write_run(tmp_path, "o1", "anml-iid", 1, {"meta_test_test_acc": 0.9}, representation="net")
    runs = lb.load_runs(tmp_path)
    drops = lb.oracle_drops(runs)
    d = row(drops, metric="meta_test_test_acc")
    assert d["status"] == "partial" and d["n_pairs"] == 1 and d["mean_drop"] == pytest.approx(0.2)
    unpaired = lb.unpaired_oracle_runs(runs)
    assert unpaired[["run_id", "reason"]].values.tolist() == [["a1", "one of them is partial"]]


# ---------------------------------------------------------------------------- results page


def omniglot_runs(root: Path) -> None:
    """omniglot-stream: at 10 classes anml-iid, anml (and a partial anml seed 2) and finetune
    on seeds 0, 1, anml on the same network as its oracle; at 100 classes anml on seed 0."""
    scen = "omniglot-stream"

    def run(
        run_id: str, learner: str, seed: int, test: float, final: float, n: int, **kw: object
    ) -> None:
        metrics = {"meta_test_test_acc": test, "acc_final_macro": final, **kw.pop("m", {})}
        write_run(
            root,
            run_id,
            learner,
            seed,
            metrics,
            scenario=scen,
            config_hash=f"cfg-{learner}-{n}",
            extra={"scenario_params": json.dumps({"n_classes": n, "test_per_class": 5})},
            **kw,
        )

    for seed, test in enumerate([0.5, 0.7]):
        run(f"i{seed}", "anml-iid", seed, 0.8, 0.7, 10, representation="net")
        run(f"a{seed}", "anml", seed, test, 0.4, 10, representation="net")
        run(f"f{seed}", "finetune", seed, 0.1, 0.05, 10)
    run(
        "a2",
        "anml",
        2,
        0.95,
        0.95,
        10,
        representation="net",
        m={"meta_train_complete": 0.0, "meta_steps_done": 7.0, "meta_steps_asked": 9.0},
    )
    run("b0", "anml", 0, 0.3, 0.2, 100, representation="net100")


def test_results_page_is_generated_deterministically(two_learners: Path) -> None:
    root = two_learners
    omniglot_runs(root)
    page = lb.results_markdown(root)
    lines = page.splitlines()
    assert f"`harness report {root.as_posix()}`" in lines[0]
    assert "do not edit by hand" in lines[0]
    assert [ln for ln in lines if ln.startswith("## ")] == [
        "## omniglot-stream",
        f"## {SCEN}",
    ]
    for name in ("omniglot-stream", SCEN):
        runs = lb.load_runs(root / name)
        section = lb.leaderboard_markdown(
            lb.leaderboard_table(runs), lb.oracle_drops(runs), lb.unpaired_oracle_runs(runs), 3
        )
        assert section in page
    omni = page[page.index("## omniglot-stream") : page.index(f"## {SCEN}")]
    assert f"### {lb.PARTIAL_TITLE}" in omni and "| 7 of 9 |" in omni
    assert "### Relative drop below the i.i.d. oracle" in omni
    # (0.8 - 0.5) / 0.8 = 0.375, (0.8 - 0.7) / 0.8 = 0.125: mean 0.25, sd 0.1767767,
    # ci95 = 12.706205 * 0.1767767 / sqrt(2) = 1.588276
    assert "| 0.600 | 0.800 | 0.250 ± 1.588 |" in omni
    # Leaderboard files written into the folders, a re-run: the same bytes.
    for name in ("omniglot-stream", SCEN):
        lb.write_leaderboard(root / name)
    assert lb.results_markdown(root) == page
    # A damaged file is named on the page (relative to the root) and left out.
    bad = write_run(root, "anml-9", "anml", 9, DAMAGED)
    damage("header_only", bad)
    problems: list[tuple[Path, str]] = []
    with pytest.warns(lb.ResultFileWarning):
        damaged = lb.results_markdown(root, problems)
    assert [p for p, _ in problems] == [bad]
    assert f"- `{SCEN}/anml-9.csv`: {MISMATCH} (0 data lines, 7 written)" in damaged
    assert damaged.replace("\n### Run files left out\n", "").count("| anml |") == page.count(
        "| anml |"
    )


def test_headline_table_holds_the_complete_omniglot_stream_runs(tmp_path: Path) -> None:
    omniglot_runs(tmp_path)
    headline = lb.headline_markdown(tmp_path, only=None)
    # Ranked on acc_final_macro within each n_classes; the partial anml seed 2 is left out.
    # anml at 10 classes: meta_test_test_acc (0.5, 0.7) -> 0.600 ± 12.706205 * 0.1 = 1.271.
    assert headline.splitlines()[2:] == [
        "| learner | preset | n_classes | seeds | meta_test_test_acc | acc_final_macro |",
        "| --- | --- | --- | ---: | ---: | ---: |",
        "| anml-iid | quick | 10 | 2 | 0.800 ± 0.000 | 0.700 ± 0.000 |",
        "| anml | quick | 10 | 2 | 0.600 ± 1.271 | 0.400 ± 0.000 |",
        "| finetune | quick | 10 | 2 | 0.100 ± 0.000 | 0.050 ± 0.000 |",
        "| anml | quick | 100 | 1 | 0.300 | 0.200 |",
    ]
    assert f"`harness report {tmp_path.as_posix()}`" in headline.splitlines()[0]
    assert lb.headline_markdown(tmp_path, only=None) == headline
    # By default the README shows the main job's 100 classes; n_classes leaves the columns.
    assert lb.headline_markdown(tmp_path).splitlines()[2:] == [
        "| learner | preset | seeds | meta_test_test_acc | acc_final_macro |",
        "| --- | --- | ---: | ---: | ---: |",
        "| anml | quick | 1 | 0.300 | 0.200 |",
    ]
    assert "with n_classes=100 in" in lb.headline_markdown(tmp_path).splitlines()[0]
    with pytest.raises(HarnessError, match="no complete run with n_classes=5 under"):
        lb.headline_markdown(tmp_path, only={"n_classes": 5})
    with pytest.raises(HarnessError, match="omniglot-stream"):
        lb.headline_markdown(tmp_path / "omniglot-stream")


def test_headline_pairs_every_learner_with_quick_anml_and_says_who_beats_it(
    tmp_path: Path,
) -> None:
    scen, params = "omniglot-stream", {"scenario_params": json.dumps({"n_classes": 100})}
    table = {  # acc_final_macro on seeds 0 and 1
        ("anml", "quick"): (0.4, 0.6),
        ("anml", "long"): (0.9, 0.9),  # another recipe of the headline learner: not the base
        ("slda", "quick"): (0.5, 0.9),  # +0.1, +0.3
        ("finetune", "quick"): (0.1, 0.2),  # -0.3, -0.4
    }
    for (learner, preset), accs in table.items():
        for seed, acc in enumerate(accs):
            write_run(tmp_path, f"{learner}-{preset}-{seed}", learner, seed,
                      {"acc_final_macro": acc}, scenario=scen, preset=preset,
                      config_hash=f"cfg-{learner}-{preset}", extra=params)
    lines = lb.headline_markdown(tmp_path).splitlines()
    start = lines.index("| learner | preset | pairs | difference | p |")
    # slda: diffs 0.1, 0.3: mean 0.2, sd 0.1414, CI t(0.975, 1) * 0.1414 / sqrt(2) = 1.271;
    # t = 2 with 1 df (Cauchy): p = 1 - 2 atan(2) / pi = 0.295.
    # anml long: 0.5, 0.3 -> 0.4 ± 1.271; t = 4: p = 1 - 2 atan(4) / pi = 0.156.
    # finetune: -0.3, -0.4 -> -0.350 ± 0.635; t = -7: p = 0.0903.
    assert lines[start + 2 :] == [
        "| anml | long | 2 | 0.400 ± 1.271 | 0.16 |",
        "| slda | quick | 2 | 0.200 ± 1.271 | 0.3 |",
        "| finetune | quick | 2 | -0.350 ± 0.635 | 0.09 |",
        "",
        "No learner is better than `anml` (quick) with its whole CI above zero.",
    ]


README = (
    "# Title\r\n"
    "\r\n"
    "Intro, ü.\n"
    "<!-- results:start -->\n"
    "| old | table |\n"
    "<!-- results:end -->\n"
    "Tail without a final line break"
)


def test_readme_block_replacement_keeps_everything_else() -> None:
    new = lb.replace_readme_block(README, "| new |\n")
    head = README[: README.index("| old")]
    tail = README[README.index("<!-- results:end -->") :]
    assert new == head + "| new |\n" + tail
    assert lb.replace_readme_block(new, "| new |\n") == new
    assert lb.replace_readme_block(README, "| no break |") == head + "| no break |\n" + tail


@pytest.mark.parametrize(
    "text",
    [
        "no markers\n",
        "<!-- results:start -->\nx\n",
        "<!-- results:end -->\nx\n<!-- results:start -->\n",
        "<!-- results:start -->\n<!-- results:start -->\n<!-- results:end -->\n",
    ],
    ids=["none", "no_end", "reversed", "twice"],
)
def test_readme_block_markers_must_be_there_once_in_order(text: str) -> None:
    with pytest.raises(HarnessError, match="README.md needs one line <!-- results:start -->"):
        lb.replace_readme_block(text, "| new |\n", "README.md")
