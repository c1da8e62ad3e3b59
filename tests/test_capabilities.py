"""The declared contract: capabilities found by isinstance against harness.capabilities, a
misspelled capability named by `harness check`, and a user's learner with a config dataclass
treated as a built-in one (`--set`, the learning-rate search)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from harness.capabilities import NAMES, MetaTrainReport, misspelled
from harness.cli import app
from harness.experiment import RunConfig, execute
from harness.registry import list_learners, list_scenarios

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
TINY = "n_classes=4,train_per_class=10,test_per_class=5"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # my_learners is importable from the repository root


def _json(folder: Path) -> dict:
    (path,) = folder.rglob("*.json")
    return json.loads(path.read_text())


def test_a_misspelled_learner_capability_fails_check_naming_it() -> None:
    res = runner.invoke(app, ["check", "my_learners.toy:Misspelled"])
    assert res.exit_code == 1
    assert "Misspelled.describ looks like the learner capability 'describe'" in res.stderr


def test_misspelled_names_each_near_miss_and_nothing_else() -> None:
    @dataclass
    class Cfg:
        presets: ClassVar[dict] = {}  # PRESETS in lower case
        checkpoint_keys: int = 0  # checkpoint_key
        lr: float = 0.1

        def build(self, ctx: object) -> None: ...

    found = misspelled(Cfg(), "learner config")
    assert len(found) == 2
    assert any("Cfg.presets" in m and "'PRESETS'" in m for m in found)
    assert any("Cfg.checkpoint_keys" in m and "'checkpoint_key'" in m for m in found)
    assert misspelled(Cfg(), "learner") == []  # other kinds have other names
    assert "sweep_features" in NAMES["learner"] and "VARIANTS" in NAMES["scenario config"]


@pytest.mark.parametrize("entry", list_scenarios(), ids=lambda e: e.id)
def test_no_registered_scenario_config_misspells_a_capability(entry) -> None:
    assert misspelled(entry.config_class(), "scenario config") == []


def test_no_registered_learner_config_misspells_a_capability() -> None:
    wrong = {e.id: misspelled(e.config_class()(), "learner config") for e in list_learners()}
    assert not any(wrong.values()), wrong


def test_a_user_learner_with_a_config_gets_set_and_the_lr_search(tmp_path: Path) -> None:
    base = ["run", "--scenario", "synthetic-stream", "--learner", "my_learners.toy:Configured",
            "--baselines", "none", "--quiet", "--cache-dir", str(tmp_path / "c")]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--set",
                              f"{TINY},momentum=0.5"])
    assert res.exit_code == 0, res.output
    meta = _json(tmp_path / "a")
    assert meta["learner_config"] == {"lr": 0.05, "momentum": 0.5}
    sel = meta["lr_selection"]
    assert sel["lr_selected_on"].startswith("val(")
    assert len(sel["lr_scores"]) == len(meta["run"]["lr_grid"]) == 11
    assert sel["lr"] in meta["run"]["lr_grid"]
    # An explicit lr is kept, not searched.
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--set",
                              f"{TINY},lr=0.01"])
    assert res.exit_code == 0, res.output
    fixed = _json(tmp_path / "b")
    assert fixed["lr_selection"] == {"lr": 0.01, "lr_selected_on": "fixed"}
    # A field the config does not have is refused, naming the ones it has.
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "c2"), "--set", "momentun=0.1"])
    assert res.exit_code == 2 and "did you mean momentum" in res.stderr
    # A bad value is refused by the user's own __post_init__, before anything is written.
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "d"), "--set", "momentum=1.5"])
    assert res.exit_code == 2 and "momentum in [0, 1)" in res.stderr
    assert not (tmp_path / "d").exists()


def test_the_chosen_lr_is_the_best_validation_score(tmp_path: Path) -> None:
    res = execute(RunConfig(scenario="synthetic-stream", learner="my_learners.toy:Configured",
                            out_dir=tmp_path, cache_dir=tmp_path / "c",
                            overrides=dict(kv.split("=") for kv in TINY.split(","))))
    sel = _json(tmp_path)["lr_selection"]
    scores = {float(k): v for k, v in sel["lr_scores"].items()}
    best = max(scores, key=lambda lr: (scores[lr], lr))  # ties to the larger rate
    assert res.status == "ok" and sel["lr"] == best and res.extra["lr"] == best


class _NoReport:
    """A meta-learner whose meta_train forgets to return its report."""

    needs_meta_train = True

    def __init__(self, spec: object) -> None:
        import torch

        self.w = torch.zeros(1)
        self.n = spec.n_outputs  # type: ignore[attr-defined]

    def meta_train(self, data: object, budget: object, progress: object,
                   validate: object) -> None:
        return None

    def state_dict(self) -> dict:
        return {"w": self.w}

    def load_state_dict(self, sd: dict) -> None:
        self.w = sd["w"]

    def predict(self, x):  # noqa: ANN001, ANN201
        import torch

        return torch.zeros(len(x), self.n)

    def observe(self, x, y) -> None:  # noqa: ANN001
        pass


def test_meta_train_without_a_report_is_a_failed_row_saying_what_to_return(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    mod = types.ModuleType("noreport_mod")
    mod.NoReport = _NoReport  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "noreport_mod", mod)
    res = execute(RunConfig(scenario="synthetic-stream", learner="noreport_mod:NoReport",
                            out_dir=tmp_path, cache_dir=tmp_path / "c",
                            overrides=dict(kv.split("=") for kv in TINY.split(","))))
    assert res.status == "failed"
    assert "meta_train returned NoneType" in res.error and "MetaTrainReport" in res.error
    assert MetaTrainReport().complete is True


def test_no_capability_is_probed_by_name_in_the_harness() -> None:
    """The contract is declared: harness/ tests capabilities with isinstance only, and no
    learner or scenario runs a piece of the harness's loop."""
    probes = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "hasattr(" in line or "inspect.signature" in line:
                probes.append(f"{path.name}:{n}: {line.strip()}")
    assert not probes, probes
    users = [str(p.relative_to(ROOT)) for d in ("scenarios", "baselines")
             for p in (ROOT / d).rglob("*.py") if "harness.runner" in p.read_text()]
    assert not users, users
    assert os.path.isfile(ROOT / "harness" / "capabilities.py")
