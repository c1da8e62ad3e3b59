"""The Python API, for notebooks and scripts: the command line's `run` and `compare`, the
leaderboard as a pandas DataFrame, the run rows. Exported from `harness`:

    import harness
    r = harness.run(scenario="synthetic-stream", learner="finetune", n_classes=4)
    rs = harness.compare(scenario="synthetic-stream", learners=["finetune", "replay"],
                         seeds=[0, 1], n_classes=4)
    harness.leaderboard_table("results/synthetic-stream")

Keyword arguments beyond the named ones are `--set` pairs (values turned into the text the
command line would get: True -> 'true', a list -> 'a,b'); `sets={"scenario.noise": 0.1}` takes
keys that are not Python names. Learners and scenarios are ids, `module:Class` strings, or
class objects (a learner class, a learner config dataclass, a registered scenario config).
Bad input raises `harness.errors.HarnessError` with a one-line message; a learner that fails
gives a RunResult with status 'failed' and its error, as on the command line. Progress goes
to the "harness" logger (`logging.basicConfig(level=logging.INFO)` shows it); this module
prints nothing. The function is `leaderboard_table`, not `leaderboard`: `harness.leaderboard`
is the subpackage of the leaderboard functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the heavy modules are imported when a function is called
    import pandas as pd

    from harness.config import Progress
    from harness.run_config import RunConfig, RunResult

__all__ = ["compare", "leaderboard_table", "load_runs", "run"]


def _text(value: Any) -> str:
    """A --set value as the command line gets it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    return str(value)


def _scenario_id(scenario: Any) -> str:
    """A scenario id from an id, a `module:Class` string or a registered config class."""
    from harness.errors import HarnessError
    from harness.registry import SCENARIOS
    from harness.user_learners import class_target

    if not isinstance(scenario, str):
        if not isinstance(scenario, type):
            raise HarnessError(f"scenario must be an id (see `harness list scenarios`), "
                               f"'module:Class' or a class, got {type(scenario).__name__}")
        scenario = class_target(scenario, "scenario")
    if ":" in scenario:
        ids = [e.id for e in SCENARIOS.values() if e.config == scenario]
        if not ids:
            raise HarnessError(f"scenario {scenario!r} is not registered; register its config "
                               "in harness/registry.py (README: Your own scenario)")
        return ids[0]
    return scenario


def _config(scenario: Any, learner: Any, seed: int, preset: str, out_dir: str | Path,
            options: dict[str, Any], overrides: dict[str, Any]) -> RunConfig:
    """The RunConfig, every input checked as the command line checks it."""
    from harness.cli_inputs import check_device, writable
    from harness.config import check_seed
    from harness.errors import HarnessError
    from harness.run_config import RunConfig
    from harness.user_learners import learner_name

    known = {"device", "cache_dir", "data_dir", "eval_every", "tune_lr", "timeout_s", "sets"}
    if set(options) - known:
        raise HarnessError(f"unknown option(s) {sorted(set(options) - known)}")
    sets = {**(options.get("sets") or {}), **overrides}
    check_seed(seed)
    check_device(options.get("device", "cpu"))
    cache = options.get("cache_dir")
    data = options.get("data_dir")
    return RunConfig(
        scenario=_scenario_id(scenario), learner=learner_name(learner), seed=seed,
        preset=preset, device=options.get("device", "cpu"),
        out_dir=writable(str(out_dir), "out_dir"),
        cache_dir=writable(str(cache), "cache_dir") if cache is not None else None,
        data_dir=Path(data) if data is not None else None,
        overrides={str(k): _text(v) for k, v in sets.items()},
        eval_every=options.get("eval_every", 0), tune_lr=options.get("tune_lr", True),
        timeout_s=options.get("timeout_s", 0.0))


def _progress(progress: Progress | None | bool) -> Progress | None:
    if progress is False:
        return None
    if progress is None or progress is True:
        from harness.logs import LogProgress

        return LogProgress()
    return progress


def run(scenario: Any, learner: Any, seed: int = 0, preset: str = "quick",
        out_dir: str | Path = "results", *, device: str = "cpu",
        cache_dir: str | Path | None = None, data_dir: str | Path | None = None,
        eval_every: int = 0, tune_lr: bool = True, timeout_s: float = 0.0,
        sets: dict[str, Any] | None = None, progress: Progress | None | bool = None,
        **overrides: Any) -> RunResult:
    """Run one learner on one scenario and seed, write its files under
    `out_dir/<scenario>/` and return its RunResult (`status`, `metrics`, `run_id`, `csv_path`,
    `error`). Unlike `harness run` on the command line, no reference baselines are added: pass
    them to `compare`. `progress`: a `progress(phase, done, total, info)` callback, None for
    log records of the "harness" logger, False for none."""
    from harness.experiment import execute

    cfg = _config(scenario, learner, seed, preset, out_dir,
                  {"device": device, "cache_dir": cache_dir, "data_dir": data_dir,
                   "eval_every": eval_every, "tune_lr": tune_lr, "timeout_s": timeout_s,
                   "sets": sets}, overrides)
    return execute(cfg, _progress(progress))


def compare(scenario: Any, learners: Iterable[Any], seeds: Iterable[int] = (0,),
            preset: str = "quick", out_dir: str | Path = "results", *, device: str = "cpu",
            cache_dir: str | Path | None = None, data_dir: str | Path | None = None,
            eval_every: int = 0, tune_lr: bool = True, timeout_s: float = 0.0,
            sets: dict[str, Any] | None = None, progress: Progress | None | bool = None,
            **overrides: Any) -> list[RunResult]:
    """Every learner on the identical stream of every seed (and every variant of the
    scenario), as `harness compare`; the RunResults in run order."""
    from harness.config import check_seed
    from harness.errors import HarnessError
    from harness.experiment import compare as compare_runs
    from harness.user_learners import learner_name

    if isinstance(learners, str | type):
        learners = [learners]
    names = list(dict.fromkeys(learner_name(n) for n in learners))
    seed_list = sorted(set(seeds))
    if not names or not seed_list:
        raise HarnessError("compare needs at least one learner and one seed")
    cfg = _config(scenario, names[0], seed_list[0], preset, out_dir,
                  {"device": device, "cache_dir": cache_dir, "data_dir": data_dir,
                   "eval_every": eval_every, "tune_lr": tune_lr, "timeout_s": timeout_s,
                   "sets": sets}, overrides)
    for s in seed_list:
        check_seed(s)
    return compare_runs(cfg, names, seed_list, _progress(progress))


def load_runs(path: str | Path) -> pd.DataFrame:
    """The tidy rows (one per metric) of every valid run under `path`; a damaged run file is
    left out with a `harness.leaderboard.ResultFileWarning`."""
    from harness.leaderboard import load_runs as load

    return load(Path(path))


def leaderboard_table(path: str | Path | pd.DataFrame, metric: str | None = None
                      ) -> pd.DataFrame:
    """The leaderboard of a results folder (or of rows from `load_runs`) as a DataFrame: one
    row per configuration, `<metric>_mean` / `<metric>_ci95` over seeds, ranked by `metric`
    (default: the scenario's headline metric, named in the `rank_by` column)."""
    from harness.leaderboard import leaderboard_table as table

    runs = path if not isinstance(path, str | Path) else load_runs(path)
    return table(runs, primary_metric=metric)
