"""Bad input on the command line: one line on stderr, exit code 2, nothing written, and no
work started; then a fuzz test over the run/compare options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import HarnessError

runner = CliRunner()
RUN = ["run", "--scenario", "synthetic-stream", "--learner", "finetune"]
COMPARE = ["compare", "--scenario", "synthetic-stream", "--learners", "finetune"]
TINY = ["--set", "n_classes=4", "--set", "train_per_class=6", "--set", "test_per_class=3"]


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


def _one_error_line(output: str) -> str:
    """The output's only line, which must be `error: ...` (no traceback, no rich box)."""
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    assert "Traceback" not in output and "╭" not in output and "│" not in output
    return lines[0]


def _refuse(monkeypatch: pytest.MonkeyPatch, name: str) -> list[object]:
    """Replace `harness.experiment.<name>` by a stub that records its call and fails; the
    list of recorded calls."""
    from harness import experiment

    calls: list[object] = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a run started on bad input")

    monkeypatch.setattr(experiment, name, refuse)
    return calls


@pytest.fixture
def no_work(monkeypatch):
    """Records a call of `compare`: input the command line checks is refused before it."""
    return _refuse(monkeypatch, "compare")


@pytest.fixture
def no_run(monkeypatch):
    """Records a learner's run starting (input the library checks, e.g. --set values, is
    refused after `compare` is called but before any learner runs)."""
    return _refuse(monkeypatch, "measure")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["compare", "--scenario", "synthetic-stream", "--learners", ""],
         "--learners '' names no learner; write learner ids separated by commas"),
        (["compare", "--scenario", "synthetic-stream", "--learners", ","],
         "--learners ',' names no learner"),
        ([*COMPARE, "--seeds", "0-100000000000"],
         "--seeds '0-100000000000': seeds must be integers from 0 to 2147483647"),
        ([*COMPARE, "--seeds", "0-10000"],  # 10001 seeds
         "--seeds '0-10000': at most 10000 seeds per command"),
        ([*COMPARE, "--seeds", "0-9999,20000"], "at most 10000 seeds per command"),
        ([*COMPARE, "--seeds", "3-1"], "a range runs low to high, e.g. 1-3"),
        ([*RUN, "--seed", str(2**64)],
         f"--seed must be an integer from 0 to 2147483647, got {2**64}"),
        ([*RUN, "--seed", str(2**31)], "--seed must be an integer from 0 to 2147483647"),
        ([*RUN, "--set", "n_classes=1e999"],
         "bad value '1e999' for n_classes; write a whole number from -2147483648 to "
         "2147483647, e.g. n_classes=10"),
        ([*RUN, "--set", "n_classes=1.5"], "bad value '1.5' for n_classes; write a whole"),
        ([*RUN, "--set", "n_classes=1e-5"], "bad value '1e-5' for n_classes; write a whole"),
        ([*RUN, "--set", "lr=inf"],
         "finetune: bad value 'inf' for lr; write a finite number, e.g. lr=0.01 or lr=1e-3"),
        ([*RUN, "--set", "lr=nan"], "bad value 'nan' for lr; write a finite number"),
        ([*RUN, "--set", "lr=-1e999"], "bad value '-1e999' for lr; write a finite number"),
        ([*RUN, "--set", "noise=1" + "0" * 400], "for noise; write a finite number"),
        ([*RUN, "--timeout", "nan"], "--timeout must be a finite number of seconds >= 0"),
        ([*RUN, "--timeout", "-1"], "--timeout must be a finite number of seconds >= 0"),
        (["run", "--scenario", "synthetic-stream", "--learner", ":"],
         "learner ':': write a learner id or module:Class, e.g. my_learners.toy:Linear"),
        (["run", "--scenario", "synthetic-stream", "--learner", "json:dumps"],
         "learner 'json:dumps' is a function, not a class; module:Class must name a learner "
         "class (with predict() and observe()"),
        (["run", "--scenario", "synthetic-stream", "--learner", "json:JSONEncoder"],
         "learner 'json:JSONEncoder' is a class without predict() and observe() or build()"),
        (["compare", "--scenario", "synthetic-stream", "--learners", "finetune,json:dumps"],
         "learner 'json:dumps' is a function, not a class"),
        ([*RUN, "--bogus"], "error: No such option: --bogus"),
        (["run", "--learner", "finetune"], "error: Missing option '--scenario'"),
        ([*RUN, "--seed", "x"], "error: Invalid value for '--seed'"),
        ([*RUN, "--timeout", "soon"], "error: Invalid value for '--timeout'"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path: Path, no_run, args, needle
                                                      ) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, [*args, "--out", str(out), "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code == 2, res.output
    assert needle in _one_error_line(res.output)
    assert not out.exists() and not (tmp_path / "c").exists()
    assert no_run == []


def test_module_class_is_checked_before_anything_calls_it(tmp_path: Path, monkeypatch) -> None:
    called: list[object] = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a) or 0)
    for target in ("os:system", "builtins:print"):
        res = runner.invoke(app, ["run", "--scenario", "synthetic-stream", "--learner", target,
                                  "--out", str(tmp_path / "out")])
        assert res.exit_code == 2
        assert f"learner {target!r} is a " in _one_error_line(res.output)
        assert ", not a class; module:Class must name a learner class" in res.output
    res = runner.invoke(app, ["check", "os:system"])
    assert res.exit_code == 2 and "not a class" in _one_error_line(res.output)
    assert called == [] and not (tmp_path / "out").exists()


def test_a_learner_config_class_runs_as_module_class(tmp_path: Path) -> None:
    """`module:Class` may also name a learner config dataclass (one with build()); its fields
    take --set like a registered learner's."""
    res = runner.invoke(app, ["run", "--scenario", "synthetic-stream", "--learner",
                              "baselines.finetune:FinetuneConfig", "--no-tune", "--set",
                              "lr=0.05", "--out", str(tmp_path), "--quiet", *TINY])
    assert res.exit_code == 0, res.output
    [run_json] = (tmp_path / "synthetic-stream").glob("*FinetuneConfig*.json")
    assert json.loads(run_json.read_text())["status"] == "ok"


@pytest.mark.parametrize("flag", ["--out", "--cache-dir"])
def test_folder_under_a_regular_file_is_refused_before_any_work(tmp_path: Path, no_work, flag
                                                                ) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    args = [*RUN, "--out", str(tmp_path / "out"), flag, str(blocker / "sub")]
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert f"{flag} {blocker / 'sub'}: cannot write there (Not a directory); pass a folder you " \
           "can write to" in _one_error_line(res.output)
    assert blocker.read_text() == "keep" and _files(tmp_path) == [blocker] and no_work == []


@pytest.mark.parametrize(("out", "needle"), [
    ("", "--out is empty; name a folder, e.g. --out results"),
    ("   ", "--out is empty"),
    ("/proc/harness-out", "--out /proc/harness-out: cannot write there"),
    ("/proc/self/status/x", "cannot write there"),
    ("bad\0name", "cannot write there (embedded null byte)"),
])
def test_unusable_out_is_refused_before_any_work(no_work, out: str, needle: str) -> None:
    res = runner.invoke(app, [*RUN, "--out", out])
    assert res.exit_code == 2
    assert needle in _one_error_line(res.output)
    assert no_work == []


def test_unwritable_out_is_refused_and_the_folders_made_to_check_it_removed(
        tmp_path: Path, no_work, monkeypatch) -> None:
    from harness import fileio

    def refuse(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(fileio, "temp_path", refuse)
    res = runner.invoke(app, [*RUN, "--out", str(tmp_path / "a" / "b")])
    assert res.exit_code == 2
    assert f"--out {tmp_path / 'a' / 'b'}: cannot write there (Permission denied)" in \
        _one_error_line(res.output)
    assert list(tmp_path.iterdir()) == [] and no_work == []


def test_out_check_leaves_nothing_when_a_later_check_fails(tmp_path: Path) -> None:
    """The out folder is test-written and removed again: bad input found by the library
    (an unknown --set key) leaves no folder behind."""
    res = runner.invoke(app, [*RUN, "--out", str(tmp_path / "a" / "b"), "--cache-dir",
                              str(tmp_path / "c"), "--set", "no_such_key=1"])
    assert res.exit_code == 2 and "no_such_key" in _one_error_line(res.output)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("device", "gpus", "mps", "needle"), [
    ("mps", 0, False, "--device mps asked for, but torch sees no MPS (Apple GPU); use --device "
                      "cpu"),
    ("cuda", 0, False, "--device cuda asked for, but torch sees no GPU; use --device cpu"),
    ("cuda:0", 0, False, "--device cuda:0 asked for, but torch sees no GPU"),
    ("cuda:1", 1, False, "--device cuda:1: torch sees 1 GPU(s), cuda:0 to cuda:0"),
    ("cuda:x", 1, False, "--device must be cpu, cuda, cuda:N or mps, got 'cuda:x'"),
    ("tpu", 1, True, "--device must be cpu, cuda, cuda:N or mps, got 'tpu'"),
])
def test_device_torch_cannot_use_is_refused_before_any_work(tmp_path: Path, no_work, monkeypatch,
                                                            device, gpus, mps, needle) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    res = runner.invoke(app, [*RUN, "--device", device, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert needle in _one_error_line(res.output)
    assert not (tmp_path / "out").exists() and no_work == []


def test_install_hint_is_printed_whole(tmp_path: Path, monkeypatch) -> None:
    """Messages are not rich markup: '.[avalanche]' is not eaten as a style tag."""
    from harness import registry

    # Not installed: also its submodules, which an earlier test may have imported.
    for name in [m for m in sys.modules if m == "avalanche" or m.startswith("avalanche.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "avalanche", None)
    monkeypatch.setitem(registry.LEARNERS, "needs-avalanche",
                        registry.Entry("needs-avalanche", "avalanche.training:Naive", "test"))
    res = runner.invoke(app, ["run", "--scenario", "synthetic-stream", "--learner",
                              "needs-avalanche", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert _one_error_line(res.output) == (
        "error: 'needs-avalanche' needs a package that is not installed (avalanche.training); "
        "pip install -e '.[avalanche]'")


def test_debug_shows_the_traceback_instead_of_the_line(tmp_path: Path) -> None:
    args = [*RUN, "--set", "lr=inf", "--out", str(tmp_path / "out")]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 2 and isinstance(plain.exception, SystemExit)
    debug = runner.invoke(app, [*args, "--debug"])
    assert debug.exit_code == 1 and "error:" not in debug.output
    assert isinstance(debug.exception, HarnessError) and "lr=0.01" in str(debug.exception)
    assert not (tmp_path / "out").exists()


def test_usage_error_of_the_console_entry_is_one_line() -> None:
    """The installed `harness` command goes through the same one-line handling."""
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    entry = pyproject["project"]["scripts"]["harness"]
    module, _, name = entry.partition(":")
    proc = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.argv[0] = 'harness'; "
                               f"from {module} import {name} as f; f()",
         "run", "--scenario", "synthetic-stream", "--zzz"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "HARNESS_THREADS": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: No such option: --zzz (see harness run --help)\n"


def test_timeout_reaches_the_run(tmp_path: Path) -> None:
    """--timeout is the run's wall-clock limit: one far too short gives a timed_out row."""
    res = runner.invoke(app, [*RUN, "--timeout", "0.001", "--no-tune", "--out", str(tmp_path),
                              "--quiet", *TINY])
    assert res.exit_code == 1 and "timed_out" in res.output and "Traceback" not in res.output
    [run_json] = (tmp_path / "synthetic-stream").glob("finetune-*.json")
    assert json.loads(run_json.read_text())["status"] == "timed_out"


# -- fuzz ------------------------------------------------------------------------------------
# Mostly invalid draws (each is cheap: refused before any work); a valid draw runs finetune on
# a tiny synthetic stream without lr tuning.

FIELDS = ["n_classes", "classes_per_exp", "train_per_class", "test_per_class", "noise",
          "batch_size", "lr", "optimizer", "train", "steps_per_batch", "width", "backbone",
          "scenario.noise", "learner.lr", "learner.", "scenario.x"]
TRICKY = ["", "inf", "-inf", "nan", "1e999", "-1e999", "1e-5", "1.5", "0", "-1", "none", "true",
          "2**31", "2147483648", "-2147483649", "1_0", "٣", "0x10", " 3 ", "sgd", "adam", "a,b"]


def _few_seeds(text: str) -> bool:
    """Invalid, or at most two seeds (a valid draw must stay cheap)."""
    from harness.cli_inputs import parse_seeds

    try:
        return len(parse_seeds(text)) <= 2
    except HarnessError:
        return True


def _under(text: str) -> bool:
    return ".." not in text and "~" not in text


texts = st.text(max_size=12)
values = st.one_of(st.sampled_from(TRICKY), st.integers(-2, 8).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr), texts)
set_pairs = st.lists(st.tuples(st.one_of(st.sampled_from(FIELDS), texts), values)
                     .map(lambda kv: f"{kv[0]}={kv[1]}") | texts, max_size=3)
learners = st.one_of(
    st.just("finetune"),
    st.sampled_from([":", "os:system", "json:dumps", "json:JSONEncoder", "a:", ":b", "a.:b",
                     "my_learners.toy:Nope", "avalanche:", "finetune,", ",", "finetune,bogus"]),
    st.text(alphabet=st.characters(exclude_characters=":"), max_size=12))


@settings(max_examples=80, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(["run", "compare"]),
       scenario=st.one_of(st.just("synthetic-stream"), texts),
       learner=learners,
       seed=st.one_of(st.just("0"), st.integers().map(str), texts),
       seeds=st.one_of(st.just("0"), st.sampled_from(["0-100000000000", "5-3", "-1", "1,,2"]),
                       st.text(alphabet="0123456789-, x", max_size=8)).filter(_few_seeds),
       preset=st.one_of(st.just("quick"), texts),
       sets=set_pairs,
       out=st.one_of(st.just("out"), texts.filter(_under)))
def test_fuzz_run_and_compare(command, scenario, learner, seed, seeds, preset, sets, out) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        args = ["--threads", "1", command, "--scenario", scenario, "--preset", preset,
                "--out", f"{root}/{out}", "--cache-dir", str(root / "cache"), "--quiet",
                "--no-tune", *TINY]
        args += (["--learner", learner, "--seed", seed, "--baselines", "none"] if command == "run"
                 else ["--learners", learner, "--seeds", seeds])
        for pair in sets:
            args += ["--set", pair]
        res = runner.invoke(app, args)
        event(f"exit code {res.exit_code}")  # --hypothesis-show-statistics: how many ran
        assert res.exit_code in (0, 1, 2), (args, res.output)
        assert res.exception is None or isinstance(res.exception, SystemExit), \
            (args, repr(res.exception))
        assert "Traceback" not in res.output
        if res.exit_code == 2:
            _one_error_line(res.output)
            assert _files(root) == [], (args, res.output)
