"""The Python API (`harness.run`, `harness.compare`, `harness.leaderboard_table`,
`harness.load_runs`) and the README's example of it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import harness
from harness.errors import HarnessError

TINY = {"n_classes": 4, "train_per_class": 6, "test_per_class": 3}
ROOT = Path(__file__).parents[1]


def test_run_returns_its_result_and_writes_its_files(tmp_path: Path) -> None:
    r = harness.run(scenario="synthetic-stream", learner="finetune", seed=1, out_dir=tmp_path,
                    tune_lr=False, progress=False, lr=0.05, **TINY)
    assert r.status == "ok" and r.learner == "finetune" and r.seed == 1
    assert r.csv_path is not None and r.csv_path.parent == tmp_path / "synthetic-stream"
    assert 0.0 <= r.metrics["acc_final_macro"] <= 1.0
    assert r.extra["lr"] == 0.05


def test_overrides_reach_the_run_as_the_command_line_text() -> None:
    from harness.api import _text

    assert [_text(v) for v in (True, False, None, 3, 0.5, [1e-3, 1e-2], ("a", "b"))] == [
        "true", "false", "none", "3", "0.5", "0.001,0.01", "a,b"]


def test_bad_input_is_a_one_line_harness_error(tmp_path: Path) -> None:
    cases = [dict(scenario="synthetic-stream", learner="finetune", no_such_key=1),
             dict(scenario="nope", learner="finetune"),
             dict(scenario="synthetic-stream", learner="finetune", seed=-1),
             dict(scenario="synthetic-stream", learner="finetune", device="tpu"),
             dict(scenario="synthetic-stream", learner=3)]
    for kwargs in cases:
        with pytest.raises(HarnessError) as e:
            harness.run(out_dir=tmp_path / "out", progress=False, **kwargs)
        assert "\n" not in str(e.value), kwargs
    assert not (tmp_path / "out").exists()


def test_learners_and_scenarios_as_classes(tmp_path: Path) -> None:
    from baselines.finetune import FinetuneConfig
    from my_learners.toy import Configured, Linear
    from scenarios.synthetic import SyntheticStreamConfig

    common = dict(out_dir=tmp_path, tune_lr=False, progress=False, **TINY)
    r = harness.run(scenario=SyntheticStreamConfig, learner=Linear, **common)
    assert r.status == "ok" and r.learner == "my_learners.toy:Linear"
    assert r.scenario == "synthetic-stream"
    rs = harness.compare(scenario="scenarios.synthetic:SyntheticStreamConfig",
                         learners=[FinetuneConfig, Configured], seeds=[0, 1], **common)
    assert [(x.learner, x.seed) for x in rs] == [
        ("baselines.finetune:FinetuneConfig", 0), ("my_learners.toy:Configured", 0),
        ("baselines.finetune:FinetuneConfig", 1), ("my_learners.toy:Configured", 1)]
    assert all(x.status == "ok" for x in rs)


class NestedLearner:  # a class inside a class: not importable by `module:Class`
    class Inner:
        pass


def test_a_class_no_import_can_find_is_refused_in_one_line(tmp_path: Path) -> None:
    from harness.experiment import RunConfig, compare

    class Local:
        def predict(self, x):  # pragma: no cover - never called
            return x

        def observe(self, x, y):  # pragma: no cover - never called
            pass

    main_class = type("InMain", (), {"__module__": "__main__"})
    for cls, where in ((Local, "inside test_a_class"), (main_class, "in __main__"),
                       (NestedLearner.Inner, "inside NestedLearner")):
        with pytest.raises(HarnessError, match=where) as e:
            harness.run(scenario="synthetic-stream", learner=cls, out_dir=tmp_path / "out")
        assert "importable module" in str(e.value) and "\n" not in str(e.value)
        # The library's own compare: the same line, not "argument of type 'type' is not ...".
        base = RunConfig(scenario="synthetic-stream", learner="finetune",
                         out_dir=tmp_path / "out")
        with pytest.raises(HarnessError, match="importable module"):
            compare(base, [cls], [0])
    assert not (tmp_path / "out").exists()
    with pytest.raises(HarnessError, match="not registered"):
        harness.run(scenario=NestedLearner, learner="finetune", out_dir=tmp_path / "out")


def test_library_compare_takes_a_class(tmp_path: Path) -> None:
    from harness.experiment import RunConfig, compare
    from my_learners.toy import Linear

    base = RunConfig(scenario="synthetic-stream", learner="finetune", out_dir=tmp_path,
                     overrides={k: str(v) for k, v in TINY.items()}, tune_lr=False)
    [r] = compare(base, [Linear], [0])
    assert r.status == "ok" and r.learner == "my_learners.toy:Linear"


def test_compare_then_leaderboard_and_rows(tmp_path: Path) -> None:
    rs = harness.compare(scenario="synthetic-stream", learners=["finetune", "ncm"],
                         seeds=[0, 1], out_dir=tmp_path, tune_lr=False, progress=False,
                         **TINY)
    assert len(rs) == 4 and {r.status for r in rs} == {"ok"}
    board = harness.leaderboard_table(tmp_path / "synthetic-stream")
    assert isinstance(board, pd.DataFrame)
    assert sorted(board["learner"]) == ["finetune", "ncm"]
    assert set(board["n_seeds"]) == {2} and set(board["rank_by"]) == {"acc_final_macro"}
    runs = harness.load_runs(str(tmp_path / "synthetic-stream"))
    assert set(runs["run_id"]) == {r.run_id for r in rs}
    again = harness.leaderboard_table(runs, metric="online_acc")
    assert set(again["rank_by"]) == {"online_acc"}


def test_progress_goes_to_the_harness_logger(tmp_path: Path, caplog) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="harness"):
        harness.run(scenario="synthetic-stream", learner="finetune", out_dir=tmp_path,
                    tune_lr=False, **TINY)
    assert any("finetune s0: stream: done" in r.getMessage() for r in caplog.records)
    seen: list[tuple[str, int, int]] = []
    harness.run(scenario="synthetic-stream", learner="finetune", out_dir=tmp_path,
                tune_lr=False, progress=lambda p, d, t, i: seen.append((p, d, t)), **TINY)
    assert seen[-1][0] == "finetune s0: stream" and seen[-1][1] == seen[-1][2]


def test_import_harness_is_light_and_the_subpackage_still_imports() -> None:
    code = ("import sys, harness; assert callable(harness.run) and callable(harness.compare); "
            "heavy = [m for m in ('torch', 'pandas', 'numpy', 'rich', 'typer') "
            "if m in sys.modules]; assert not heavy, heavy; "
            "import harness.leaderboard; from harness.leaderboard import leaderboard_table; "
            "assert harness.leaderboard.leaderboard_table is leaderboard_table; "
            "assert callable(harness.leaderboard_table) and harness.leaderboard_table is not "
            "leaderboard_table")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=ROOT)


def test_readme_python_example_runs(tmp_path: Path, monkeypatch) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    [code] = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert len(list((tmp_path / "results" / "synthetic-stream").glob("*.json"))) == 4
