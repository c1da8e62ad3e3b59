"""CLI smoke runs in-process with tiny budgets, and the exit codes of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app

runner = CliRunner()
TINY = ["--set", "n_classes=4", "--set", "train_per_class=6", "--set", "test_per_class=3"]


def _invoke(*args: str):
    return runner.invoke(app, list(args))


def test_list_names_every_registered_entry() -> None:
    from harness.registry import list_learners, list_scenarios

    res = _invoke("list")
    assert res.exit_code == 0
    for e in [*list_scenarios(), *list_learners()]:
        assert e.id in res.output
    assert _invoke("list", "scenarios").exit_code == 0
    assert _invoke("list", "bogus").exit_code == 2


def test_run_compare_and_leaderboard(tmp_path: Path) -> None:
    out, cache = str(tmp_path / "res"), str(tmp_path / "cache")
    res = _invoke("run", "--scenario", "synthetic-stream", "--learner", "my_learners.toy:Linear",
                  "--out", out, "--cache-dir", cache, "--quiet", *TINY)
    assert res.exit_code == 0, res.output
    res = _invoke("compare", "--scenario", "synthetic-stream", "--learners",
                  "my_learners.toy:Linear,finetune", "--seeds", "0-1", "--out", out,
                  "--cache-dir", cache, "--quiet", "--no-tune", *TINY)
    assert res.exit_code == 0, res.output
    folder = tmp_path / "res" / "synthetic-stream"
    assert len(list(folder.glob("*.csv"))) == 4 + 2  # 4 runs (1 reused) + leaderboard + ...
    assert (folder / "leaderboard.md").exists()
    res = _invoke("leaderboard", str(folder))
    assert res.exit_code == 0 and "finetune" in res.output
    res = _invoke("leaderboard", str(folder), "--format", "csv")
    assert res.exit_code == 0 and "acc_final_macro_mean" in res.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--scenario", "nope", "--learner", "finetune"], "unknown scenario"),
        (["run", "--scenario", "synthetic-stream", "--learner", "finetuen"], "did you mean"),
        (["run", "--scenario", "synthetic-stream", "--learner", "finetune", "--set", "x"],
         "KEY=VALUE"),
        (["run", "--scenario", "synthetic-stream", "--learner", "finetune", "--set",
          "n_classes=-3"], "n_classes"),
        (["run", "--scenario", "synthetic-stream", "--learner", "finetune", "--seed", "-1"],
         "seed"),
        (["run", "--scenario", "synthetic-stream", "--learner", "no_such_module:X"],
         "cannot import"),
        (["compare", "--scenario", "synthetic-stream", "--learners", "finetune",
          "--seeds", "3-1"], "--seeds"),
        (["leaderboard", "/nonexistent/folder"], "nonexistent"),
        (["run", "--scenario", "synthetic-stream", "--learner", "finetune", "--device", "tpu"],
         "--device"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    res = runner.invoke(app, [*args, "--out", str(tmp_path)] if args[0] != "leaderboard"
                        else args)
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output
    assert not list(tmp_path.rglob("*.csv"))


def test_learner_breaking_the_protocol_is_a_failed_run_exit_1(tmp_path: Path) -> None:
    res = _invoke("run", "--scenario", "synthetic-stream", "--learner",
                  "my_learners.toy:WrongShape", "--out", str(tmp_path), "--quiet", *TINY)
    assert res.exit_code == 1 and "returned shape" in res.output
    assert "Traceback" not in res.output
    import json

    [run_json] = (tmp_path / "synthetic-stream").glob("*WrongShape*.json")
    assert json.loads(run_json.read_text())["status"] == "failed"


def test_diverged_run_exits_1(tmp_path: Path) -> None:
    res = _invoke("run", "--scenario", "synthetic-stream", "--learner",
                  "my_learners.toy:Diverging", "--out", str(tmp_path), "--quiet", *TINY)
    assert res.exit_code == 1
    assert "diverged" in res.output
    # The leaderboard lists the diverged run's group with its failure count and no rank.
    res = _invoke("leaderboard", str(tmp_path / "synthetic-stream"))
    assert res.exit_code == 0, res.output
    header = next(line for line in res.output.splitlines() if "learner" in line)
    row = next(line for line in res.output.splitlines() if "Diverging" in line)
    cells = [c.strip() for c in row.strip("│┃ ").split("│")]
    names = [c.strip() for c in header.strip("│┃ ").split("┃")]
    assert cells[names.index("failed")] == "1" and cells[names.index("rank")] == "-"
    assert "<NA>" not in res.output


def test_check_passes_a_good_learner_and_fails_a_bad_one() -> None:
    assert _invoke("check", "my_learners.toy:Linear").exit_code == 0
    res = _invoke("check", "my_learners.toy:WrongShape")
    assert res.exit_code == 1 and "predict shape" in res.output


def test_corrupt_or_missing_data_file_exits_2_naming_the_file(tmp_path: Path) -> None:
    import shutil

    from scenarios.omniglot import DATA_DIR

    bad = tmp_path / "omniglot"
    shutil.copytree(DATA_DIR, bad)
    blob = bytearray((bad / "images_evaluation.npz").read_bytes())
    blob[1000] ^= 0xFF
    (bad / "images_evaluation.npz").write_bytes(bytes(blob))
    res = _invoke("run", "--scenario", "omniglot-stream", "--learner", "finetune",
                  "--data-dir", str(tmp_path), "--out", str(tmp_path / "res"), "--quiet")
    assert res.exit_code == 2 and "images_evaluation.npz" in res.output
    (bad / "images_evaluation.npz").unlink()
    res = _invoke("run", "--scenario", "omniglot-stream", "--learner", "finetune",
                  "--data-dir", str(tmp_path), "--out", str(tmp_path / "res"), "--quiet")
    assert res.exit_code == 2 and "images_evaluation.npz" in res.output
    assert not (tmp_path / "res").exists()


def test_set_accepts_several_pairs_separated_by_commas() -> None:
    from harness.cli_inputs import parse_sets as _parse_sets

    assert _parse_sets(["ways=5,shots=1"]) == {"ways": "5", "shots": "1"}
    assert _parse_sets(["lr_grid=1e-3,1e-2"]) == {"lr_grid": "1e-3,1e-2"}


def test_threads_option_sets_torch_threads_and_rejects_negatives(monkeypatch) -> None:
    import os

    import torch
    from typer.testing import CliRunner

    from harness.cli import app

    runner = CliRunner()
    monkeypatch.delenv("HARNESS_THREADS", raising=False)
    try:
        assert runner.invoke(app, ["--threads", "0", "list"]).exit_code == 0
        assert torch.get_num_threads() == len(os.sched_getaffinity(0))
        assert runner.invoke(app, ["--threads", "1", "list"]).exit_code == 0
        assert torch.get_num_threads() == 1
        bad = runner.invoke(app, ["--threads", "-1", "list"])
        assert bad.exit_code == 2 and "--threads must be >= 0" in bad.output
    finally:
        torch.set_num_threads(1)


def test_leaderboard_table_tells_two_configs_of_one_learner_apart() -> None:
    import io

    import pandas as pd
    from rich.console import Console

    from harness.cli_tables import leaderboard_rich as _leaderboard_rich

    table = pd.DataFrame({
        "rank": [1, 2, 3], "learner": ["maml", "maml", "anil"], "preset": ["quick"] * 3,
        "config_hash": ["aaaa1111bbbb", "cccc2222dddd", "eeee3333ffff"], "n_seeds": [1, 1, 1],
        "failed": [0, 0, 0], "scenario_params": ["{}"] * 3,
        "episode_acc_mean": [0.9, 0.8, 0.7], "episode_acc_ci95": [float("nan")] * 3})
    buf = io.StringIO()
    Console(file=buf, width=200).print(_leaderboard_rich(table, "t"))
    text = buf.getvalue()
    assert "aaaa1111" in text and "cccc2222" in text and "config" in text
    assert "failed" not in text, "no failed column when nothing failed"
    buf = io.StringIO()
    Console(file=buf, width=200).print(_leaderboard_rich(table[table.learner == "anil"], "t"))
    assert "config" not in buf.getvalue(), "one configuration per learner: no config column"


def test_leaderboard_table_marks_meta_training_stopped_by_a_time_limit() -> None:
    """A slice of a long run (time_limit_s) is ranked with the finished ones, so the table
    must say how far its meta-training got: from meta_train_complete, or for older rows from
    steps done < the configured meta_steps."""
    import io

    import pandas as pd
    from rich.console import Console

    from harness.cli_tables import leaderboard_rich as _leaderboard_rich

    table = pd.DataFrame({
        "rank": [1, 2, 3], "learner": ["maml", "maml++", "anil"], "preset": ["paper"] * 3,
        "config_hash": ["a" * 12, "b" * 12, "c" * 12], "n_seeds": [1, 1, 1], "failed": [0] * 3,
        "scenario_params": ["{}"] * 3, "meta_steps": [60000, 75000, 60000],
        "meta_steps_done_mean": [3113.0, 1047.0, 60000.0],
        "meta_train_complete_mean": [0.0, float("nan"), 1.0],
        "episode_acc_mean": [0.83, 0.75, 0.95], "episode_acc_ci95": [float("nan")] * 3})
    buf = io.StringIO()
    Console(file=buf, width=200).print(_leaderboard_rich(table, "t"))
    lines = buf.getvalue().splitlines()
    assert "meta-steps" in lines[2]
    row = {name: next(ln for ln in lines if f" {name} " in ln)
           for name in ("maml", "maml++", "anil")}
    assert "3113 (stopped)" in row["maml"] and "1047 (stopped)" in row["maml++"]
    assert "60000" in row["anil"] and "stopped" not in row["anil"]
    buf = io.StringIO()
    Console(file=buf, width=200).print(_leaderboard_rich(table[table.learner == "anil"], "t"))
    assert "meta-steps" not in buf.getvalue(), "nothing stopped: no column"
