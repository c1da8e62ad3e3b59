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
    # md and csv print exactly the files the command (re)writes, so they can be pasted or piped.
    for fmt, name in (("md", "leaderboard.md"), ("csv", "leaderboard.csv")):
        res = _invoke("leaderboard", str(folder), "--format", fmt)
        assert res.exit_code == 0 and res.stdout == (folder / name).read_text(encoding="utf-8")
    assert res.stdout.startswith("scenario,") and "acc_final_macro_mean" in res.stdout
    assert "| rank | learner |" in (folder / "leaderboard.md").read_text(encoding="utf-8")


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


# -- daily use: choices in --help, --version, -h, options after the command -------------------


def test_help_lists_the_valid_choices() -> None:
    assert "md|csv" in _invoke("leaderboard", "--help").output
    assert "serial|local|slurm|ray" in _invoke("sweep", "--help").output
    assert "scenarios|learners|all" in _invoke("list", "--help").output
    for command in ("run", "compare"):
        text = " ".join(_invoke(command, "--help").output.split())
        assert "cpu, cuda, cuda:N (N-th GPU) or mps" in text
        assert "quick|paper" not in text and "harness list learners" in text
    assert _invoke("leaderboard", "x", "--format", "html").exit_code == 2


def test_version_and_short_help_on_every_command() -> None:
    import subprocess
    import sys

    import harness

    res = _invoke("--version")
    assert res.exit_code == 0 and res.output == f"harness {harness.__version__}\n"
    assert _invoke("-h").exit_code == 0
    for command in ("list", "run", "compare", "check", "sweep", "leaderboard", "report"):
        res = _invoke(command, "-h")
        assert res.exit_code == 0 and "Usage:" in res.output, command
    proc = subprocess.run([sys.executable, "-m", "harness", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == f"harness {harness.__version__}\n"


def _options(command: str) -> set[str]:
    from typer.main import get_command

    group = get_command(app)
    return {o for p in group.commands[command].params for o in getattr(p, "opts", [])}


def test_run_and_compare_take_the_same_options() -> None:
    common = {"--scenario", "--preset", "--device", "--out", "--cache-dir", "--data-dir",
              "--set", "--eval-every", "--no-tune", "--timeout", "--threads", "--quiet", "-q",
              "--verbose", "-v", "--debug"}
    run_opts, compare_opts = _options("run"), _options("compare")
    assert run_opts - {"--learner", "--seed", "--baselines"} == common
    assert compare_opts - {"--learners", "--seeds"} == common
    for command in ("sweep", "check"):  # the commands that run work take them too
        assert {"--threads", "--quiet", "--verbose"} <= _options(command)


def test_threads_after_the_command(monkeypatch, tmp_path: Path) -> None:
    import torch

    monkeypatch.delenv("HARNESS_THREADS", raising=False)
    grid = tmp_path / "grid.toml"
    grid.write_text('[[grid]]\nscenario = "synthetic-stream"\nlearner = "finetune"\nseed = 0\n')
    try:
        res = _invoke("sweep", str(grid), "--dry-run", "--out", str(tmp_path), "--threads", "2")
        assert res.exit_code == 0, res.output
        assert torch.get_num_threads() == 2
        bad = _invoke("run", "--scenario", "synthetic-stream", "--learner", "finetune",
                      "--threads", "-1")
        assert bad.exit_code == 2 and "--threads must be >= 0" in bad.output
        res = _invoke("--threads", "1", "check", "my_learners.toy:Linear", "--threads", "2")
        assert res.exit_code == 0 and torch.get_num_threads() == 2, "after the command wins"
    finally:
        torch.set_num_threads(1)


def test_list_shows_every_family_with_its_tasks_and_presets(monkeypatch) -> None:
    import sys

    from harness.registry import list_learners

    # The strategies come from the adapter's constant, without importing avalanche.
    for name in [m for m in sys.modules if m == "avalanche" or m.startswith("avalanche.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "avalanche", None)
    res = _invoke("list", "learners")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    for strategy in ("Naive", "Replay", "EWC", "LwF", "AGEM", "GDumb"):
        assert f"avalanche:{strategy} " in res.output
    assert "module:Class" in res.output and "scenarios" not in lines[0]
    for e in list_learners():
        line = next(ln for ln in lines if f" {e.id} " in ln)
        assert all(p in line for p in e.presets()), (e.id, line)
        assert all(t in line for t in e.tasks), (e.id, line)
    assert "regression" in next(ln for ln in lines if " oml-sine " in ln)
    assert "classification" not in next(ln for ln in lines if " oml-sine " in ln)


def test_install_hint_of_a_missing_extra_is_printed_whole(monkeypatch, tmp_path: Path) -> None:
    """`harness run --learner avalanche:Naive` without avalanche-lib names the extra, brackets
    included (not eaten as rich markup)."""
    import sys

    for name in [m for m in sys.modules if m == "avalanche" or m.startswith("avalanche.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "avalanche", None)
    res = _invoke("run", "--scenario", "synthetic-stream", "--learner", "avalanche:Naive",
                  "--baselines", "none", "--no-tune", "--out", str(tmp_path / "out"), *TINY)
    assert res.exit_code == 2, res.output
    assert "pip install -e '.[avalanche]'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output


# -- progress ----------------------------------------------------------------------------------


def test_progress_is_log_lines_on_stderr_when_not_a_terminal(tmp_path: Path) -> None:
    import re

    args = ["run", "--scenario", "synthetic-stream", "--learner", "finetune", "--baselines",
            "none", "--out", str(tmp_path), "--cache-dir", str(tmp_path / "c"), *TINY]
    res = _invoke(*args)
    assert res.exit_code == 0, res.output
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO "
    lines = res.stderr.splitlines()
    assert any(re.match(stamp + r"finetune s0: lr selection: started", ln) for ln in lines)
    assert any(re.match(stamp + r"finetune s0: stream: done, \d+ of \d+ in ", ln)
               for ln in lines), res.stderr
    assert "━" not in res.stderr, "no progress bar off a terminal"
    assert "lr selection" not in res.stdout
    quiet = _invoke(*args, "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.stderr
    assert _invoke("--quiet", *args).stderr == ""  # before the command too
    verbose = _invoke(*args, "-v", "--no-tune")
    assert " DEBUG run config " in verbose.stderr


def test_log_progress_lines_for_short_and_long_phases(caplog) -> None:
    import logging

    from harness.logs import LogProgress

    now = [0.0]
    progress = LogProgress(clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="harness"):
        for done in range(1, 101):  # a phase of one second: its start and end only
            now[0] += 0.01
            progress("short", done, 100, {})
        assert [r.getMessage().split(":")[1].split(",")[0] for r in caplog.records] == [
            " started (1 of 100)", " done"]
        caplog.clear()
        for done in range(1, 201):  # 200 s: every 10% (20 s)
            now[0] += 1.0
            progress("meta-train", done, 200, {"loss": 0.5})
        msgs = [r.getMessage() for r in caplog.records]
        assert len(msgs) == 11 and "meta-train: 20 of 200 (10%)" in msgs[1]
        assert "loss=0.5" in msgs[1] and "eta 3.0 min" in msgs[1] and "done" in msgs[-1]
        caplog.clear()
        for done in range(1, 11):  # 10 steps of 60 s: every 30 s is every step
            now[0] += 60.0
            progress("slow", done, 1000, {})
        assert len(caplog.records) == 10
    caplog.clear()
    progress("quiet", 1, 10, {})  # the logger at WARNING: nothing, and nothing computed
    assert caplog.records == []


# -- debuggable failures -----------------------------------------------------------------------


BAD_LEARNERS = '''
from dataclasses import dataclass

import torch


class NoSpec:
    def __init__(self):
        pass

    def predict(self, x):
        return torch.zeros(len(x), 4)

    def observe(self, x, y):
        pass


class TakesNoConfig(NoSpec):
    @dataclass
    class Config:
        lr: float = 0.1

    def __init__(self, spec):
        pass


class InsideInit(NoSpec):
    def __init__(self, spec):
        raise TypeError("a bug inside the constructor")
'''


@pytest.fixture
def bad_learners(tmp_path: Path, monkeypatch) -> str:
    (tmp_path / "bad_learners_mod.py").write_text(BAD_LEARNERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "bad_learners_mod"


@pytest.mark.parametrize(("cls", "call"), [("NoSpec", "NoSpec(spec)"),
                                           ("TakesNoConfig", "TakesNoConfig(spec, config)")])
def test_wrong_constructor_signature_is_one_line_exit_2(tmp_path: Path, bad_learners: str,
                                                        cls: str, call: str) -> None:
    target = f"{bad_learners}:{cls}"
    for args in (["run", "--scenario", "synthetic-stream", "--learner", target, "--out",
                  str(tmp_path / "out"), *TINY],
                 ["compare", "--scenario", "synthetic-stream", "--learners",
                  f"{target},finetune", "--out", str(tmp_path / "out"), *TINY],
                 ["check", target]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        [line] = res.output.splitlines()
        assert line.startswith(f"error: learner '{target}': the harness builds it as {call}")
        assert "but the call failed: " in line and "positional argument" in line
    assert not list((tmp_path / "out").rglob("*.csv")), "nothing written"


def test_type_error_of_the_call_itself_is_bad_input_one_inside_init_a_failed_run(
        tmp_path: Path, bad_learners: str) -> None:
    import importlib
    import json

    from harness.errors import HarnessError
    from harness.user_learners import construct

    mod = importlib.import_module(bad_learners)
    with pytest.raises(HarnessError, match=r"builds it as NoSpec\(spec\).*the call failed"):
        construct(mod.NoSpec, "m:NoSpec", object())
    with pytest.raises(TypeError, match="a bug inside"):
        construct(mod.InsideInit, "m:InsideInit", object())
    res = _invoke("run", "--scenario", "synthetic-stream", "--learner",
                  f"{bad_learners}:InsideInit", "--out", str(tmp_path), "--no-tune", *TINY)
    assert res.exit_code == 1 and "TypeError: a bug inside the constructor" in res.stderr
    [run_json] = (tmp_path / "synthetic-stream").glob("*InsideInit*.json")
    trace = json.loads(run_json.read_text())["traceback"]
    assert trace.startswith("Traceback (most recent call last):")
    assert 'raise TypeError("a bug inside the constructor")' in trace


def test_debug_reraises_on_every_command(tmp_path: Path) -> None:
    from harness.errors import HarnessError

    res = _invoke("leaderboard", str(tmp_path / "none"), "--debug")
    assert res.exit_code == 1 and isinstance(res.exception, HarnessError)
    res = _invoke("leaderboard", str(tmp_path / "none"))
    assert res.exit_code == 2 and res.exception is None or isinstance(res.exception, SystemExit)
