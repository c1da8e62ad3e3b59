"""One run, end to end, and comparisons of several (docs/design.md D2-D6).

`execute` reads top to bottom: name the run, measure it (meta-train or load the cached
checkpoint, choose the learning rate on validation streams, run the scored protocol), then
write its files. Every learner goes through the same steps with the same grid and the same
validation streams, so comparisons are fair. The steps live in their own modules:
`building` (objects from names), `prepare` (meta-training cache), `selection` (lr),
`measure` (metrics), `identity` (run id), `results` (writing).
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from harness.building import build_scenario, resolved_config, scenario_variants, split_overrides
from harness.config import Progress, field_names, to_dict
from harness.errors import DataError, DivergedError, HarnessError, LearnerError, RunTimeout
from harness.identity import meta_seed, recipe_drift, run_config_hash, run_id
from harness.limits import Deadline, peak_rss_mb
from harness.measure import Measurement, measure
from harness.memory import keep_freed_memory
from harness.portable import portable, portable_text, portable_trace
from harness.prepare import PreparedMemo
from harness.protocol import Scenario
from harness.registry import Entry, get_learner, get_scenario, make_config
from harness.results import provenance, write_run
from harness.run_config import LR_GRID, RunConfig, RunResult
from harness.user_learners import learner_names

__all__ = ["LR_GRID", "Plan", "RunConfig", "RunResult", "build_scenario", "compare", "execute",
           "plan", "recipe_drift", "scenario_variants", "split_overrides"]


def _outcome(e: BaseException) -> tuple[str, str]:
    """(status, error) of a run that raised `e` inside the learner's part of the run."""
    if isinstance(e, DivergedError):
        return "diverged", str(e)
    if isinstance(e, RunTimeout):
        return "timed_out", str(e)
    if isinstance(e, SystemExit):
        return "failed", f"SystemExit({e.code!r}) raised by the learner's code"
    if isinstance(e, DataError | LearnerError):
        return "failed", str(e)
    return "failed", f"{type(e).__name__}: {e}"


def _labelled(progress: Progress | None, label: str) -> Progress | None:
    if progress is None:
        return None
    outer = progress

    def labelled(phase: str, done: int, total: int, info: dict[str, float]) -> None:
        outer(f"{label}: {phase}", done, total, info)

    return labelled


@dataclasses.dataclass
class Plan:
    """A run before it runs: its scenario, its config as it will run, and its id."""

    run: RunConfig
    scenario: Scenario
    entry: Entry
    overrides: dict[str, str]
    """The `--set` pairs that reach the learner."""
    cfg: Any
    resolved: Any
    config_hash: str
    run_id: str


def plan(run: RunConfig, scenario: Scenario | None = None) -> Plan:
    """Check a run's input and name it, without running it (HarnessError on bad input)."""
    s_entry, l_entry = get_scenario(run.scenario), get_learner(run.learner)
    s_over, l_over = split_overrides(run.overrides, s_entry.config_class(),
                                     l_entry.config_class())
    if scenario is None:
        scenario = build_scenario(run.scenario, run.seed, run.data_dir, s_over, run.cache_dir)
    if scenario.spec.task not in l_entry.tasks:
        raise HarnessError(f"learner {run.learner!r} supports {', '.join(l_entry.tasks)} "
                           f"scenarios, but {run.scenario!r} is {scenario.spec.task}")
    cfg = make_config(l_entry, run.preset, l_over)
    resolved = resolved_config(cfg, scenario.spec)  # a recipe edit gets a new run id
    chash = run_config_hash(resolved, scenario.params, run.tune_lr, run.lr_grid)
    return Plan(run, scenario, l_entry, l_over, cfg, resolved, chash,
                run_id(run.learner, chash, run.preset, run.seed, scenario.stream_hash))


def execute(run: RunConfig, progress: Progress | None = None, scenario: Scenario | None = None,
            memo: PreparedMemo | None = None) -> RunResult:
    """Run one (scenario, learner, seed) and write its results; never half-written.

    Bad input raises HarnessError before anything is written. Whatever else goes wrong in the
    learner's code (an exception, a corrupt checkpoint, a protocol violation, a divergence, the
    time limit) is recorded as a `failed`/`diverged`/`timed_out` run with its traceback in the
    JSON; KeyboardInterrupt propagates (finished runs are kept).
    """
    started, t_start = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
    keep_freed_memory()
    p = plan(run, scenario)
    scenario = p.scenario
    base = {"scenario": scenario.id, "scenario_version": scenario.version,
            "stream_hash": scenario.stream_hash, "learner": run.learner,
            "config_hash": p.config_hash, "preset": run.preset, "seed": run.seed,
            "started_at": started, "meta_seed": meta_seed(p.resolved, run.seed),
            **provenance(run.device)}
    torch.manual_seed(run.seed)
    m, error, trace = Measurement(), "", ""
    try:
        with Deadline(run.timeout_s):
            measure(m, run, scenario, p.entry, p.cfg, set(p.overrides),
                    _labelled(progress, f"{run.learner} s{run.seed}"), memo)
    except KeyboardInterrupt:
        raise
    except HarnessError as e:
        if not isinstance(e, DataError | LearnerError):
            raise  # bad input: nothing is written
        (m.status, error), trace = _outcome(e), traceback.format_exc()
    except (Exception, SystemExit, RunTimeout) as e:  # the learner's code may raise anything
        (m.status, error), trace = _outcome(e), traceback.format_exc()
    return _write(p, base, m, error, trace, t_start)


def _write(p: Plan, base: dict[str, Any], m: Measurement, error: str, trace: str,
           t_start: float) -> RunResult:
    """The run's files (a failed run keeps no metric but its status) and its result."""
    run, scenario, rid, cfg, resolved = p.run, p.scenario, p.run_id, p.cfg, p.resolved
    if m.status in ("failed", "diverged", "timed_out"):
        m.values, m.arrays = {m.status: (1.0, 1)}, {}
    wall = time.perf_counter() - t_start
    m.values.update(wall_s=(wall, 1), peak_rss_mb=(peak_rss_mb(), 1))
    base.update(wall_s=round(wall, 3), status=m.status)
    params = {k: v for k, v in scenario.params.items() if k != "seed"}
    extra = {"scenario_params": json.dumps(portable(params), sort_keys=True, default=str),
             "representation": "", **m.extra}
    config = {"run": to_dict(run), "learner_config": to_dict(cfg),
              "resolved_learner_config": to_dict(resolved), "scenario_params": scenario.params,
              **base, **m.sections, "status": m.status, "error": portable_text(error),
              "traceback": portable_text(portable_trace(trace)),
              "representation": extra["representation"]}
    m.arrays.setdefault("status", np.array([m.status]))
    path, note = write_run(run.out_dir, scenario.id, rid, base, m.values, extra,
                           portable(config), m.arrays)
    return RunResult(run_id=rid, learner=run.learner, scenario=scenario.id, seed=run.seed,
                     status=m.status, metrics={k: v for k, (v, _) in m.values.items()},
                     extra=extra, csv_path=path, error=error, note=note)


def compare(base: RunConfig, learners: list[str], seeds: list[int],
            progress: Progress | None = None) -> list[RunResult]:
    """Every learner on the identical stream of every seed (the scenario is built once per
    seed and handed to each learner), for every variant of the scenario. A learner is a name
    or a class object (run as its `module:Class`)."""
    learners = learner_names(learners)
    s_entry = get_scenario(base.scenario)
    entries = [get_learner(name) for name in learners]  # unknown names fail before any work
    s_fields = field_names(s_entry.config_class())
    l_fields = [field_names(e.config_class()) for e in entries]
    known = s_fields.union(*l_fields)
    # A key that some learner has goes only to the learners that have it (e.g. meta_steps for
    # the meta-learner, not its reference baselines); a key nobody has is an error.
    split_overrides({k: v for k, v in base.overrides.items()
                     if k.split(".", 1)[-1] not in known}, s_entry.config_class(),
                    entries[0].config_class())
    presets = [e.presets() for e in entries]
    if presets and presets[0] and base.preset not in presets[0]:
        make_config(entries[0], base.preset, {})  # the named learner's preset must exist
    memo, results = PreparedMemo(), []
    for overrides in scenario_variants(base.scenario, base.overrides):
        for seed in seeds:
            scenario = None
            for name, entry, fields_, pres in zip(learners, entries, l_fields, presets,
                                                   strict=True):
                mine = {k: v for k, v in overrides.items()
                        if k.split(".", 1)[-1] in s_fields | fields_}
                # Reference baselines without the preset (e.g. paper) run at their default.
                preset = base.preset if not pres or base.preset in pres else "quick"
                run = dataclasses.replace(base, learner=name, seed=seed, overrides=mine,
                                          preset=preset)
                if scenario is None:
                    s_over, _ = split_overrides(mine, s_entry.config_class(),
                                                entry.config_class())
                    scenario = build_scenario(run.scenario, seed, run.data_dir, s_over,
                                              run.cache_dir)
                results.append(execute(run, progress, scenario=scenario, memo=memo))
    return results
