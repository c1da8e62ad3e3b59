"""The measured part of a run: prepare, tune, run the scored protocol, and turn the runner's
records into named metric values (docs/design.md D3, D6).

Every value is `name -> (value, n)`, n the number of samples, episodes or sequences behind it;
the arrays go to the run's NPZ so that any metric can be recomputed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness import metrics
from harness.building import build_learner
from harness.capabilities import (
    Describable,
    GroupedTestSets,
    RegimeChanges,
    ScoredEpisodeSets,
)
from harness.config import Progress, field_names
from harness.errors import DivergedError
from harness.forecasting import forecast_values, is_forecasting
from harness.prepare import Prepared, PreparedMemo, prepare
from harness.protocol import Scenario
from harness.registry import Entry
from harness.run_config import RunConfig
from harness.runner import EpisodeRecord, StreamRecord, run_episodes, run_stream
from harness.selection import select_lr

Values = dict[str, tuple[float, int]]


@dataclass
class Measurement:
    """What `measure` found: status ('ok' or 'partial'), metric values, arrays, row extras
    and the run-file sections it adds (`lr_selection`, `meta_train`)."""

    status: str = "ok"
    values: Values = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)


def stream_metrics(rec: StreamRecord) -> Values:
    """The stream metrics of `harness.metrics` from one record (docs/design.md D3)."""
    n_test = int(rec.test_sizes.sum())
    out: Values = {}
    if rec.task == "classification":
        summ = metrics.summarize(rec.R, rec.R0, rec.test_sizes, rec.prequential, rec.task)
        for k, v in summ.items():
            out[k] = (v, rec.samples if k == "online_acc" else n_test)
        out["meta_test_train_acc"] = (
            float(np.average(rec.R_train, weights=rec.train_sizes)), int(rec.train_sizes.sum()))
        out["meta_test_test_acc"] = (metrics.acc_final_micro(rec.R, rec.test_sizes), n_test)
    else:
        summ = metrics.summarize(rec.R, None, None, rec.prequential, rec.task)
        for k, v in summ.items():
            out[k] = (v, rec.samples if k == "online_mse" else n_test)
        for j, v in enumerate(rec.R[-1]):  # the MSE of each function after the stream
            out[f"mse_exp{j}"] = (float(v), int(rec.test_sizes[j]))
    return out


def episode_metrics(rec: EpisodeRecord) -> Values:
    mean, half, n = metrics.mean_ci95_normal(rec.scores)
    name = "episode_acc" if rec.task == "classification" else "episode_mse"
    return {name: (mean, n), f"{name}_ci95": (half, n)}


def episode_sets(prep: Prepared, cfg: Any, scenario: Scenario, run: RunConfig,
                 ) -> dict[str, tuple[float, int, np.ndarray]]:
    """Every further scored episode set a few-shot scenario names (`episode_sets`), and for
    regression every inner-step count of `test_steps_grid` (MAML's 1/5/10-step table):
    `episode_acc_{set}` or `mse_{set}_{S}step`, each with its `_ci95` (1.96 sd/sqrt(n))."""
    if not isinstance(scenario, ScoredEpisodeSets):
        return {}
    regression = scenario.spec.task == "regression"
    grid = tuple(scenario.test_steps_grid) if regression else ()
    if grid and "test_steps" not in field_names(type(cfg)):
        grid = ()
    out: dict[str, tuple[float, int, np.ndarray]] = {}
    for name, episodes in scenario.episode_sets.items():
        for steps in grid or (None,):
            c = dataclasses.replace(cfg, test_steps=steps) if steps is not None else cfg
            learner = build_learner(c, scenario.spec, run, None, prep.state)
            key = (f"mse_{name}_{steps}step" if steps is not None
                   else f"episode_{'mse' if regression else 'acc'}_{name}")
            try:
                rec = run_episodes(learner, episodes, scenario.spec, device=run.device)
            except DivergedError as e:
                raise DivergedError(f"{key}: {e}") from e
            mean, half, n = metrics.mean_ci95_normal(rec.scores)
            out[key] = (mean, n, rec.scores)
            out[f"{key}_ci95"] = (half, n, np.array([half]))
    return out


def _episodic(m: Measurement, learner: Any, prep: Prepared, cfg: Any, scenario: Scenario,
              run: RunConfig, progress: Progress | None) -> tuple[float, int]:
    erec = run_episodes(learner, scenario.experiences, scenario.spec, device=run.device,
                        progress=progress)
    m.values.update(episode_metrics(erec))
    m.arrays["episode_scores"] = erec.scores
    for name, (v, n, scores) in episode_sets(prep, cfg, scenario, run).items():
        m.values[name] = (v, n)
        m.arrays[name] = scores
    return erec.wall_s, len(erec.scores)


def _streamed(m: Measurement, learner: Any, scenario: Scenario, run: RunConfig,
              progress: Progress | None) -> tuple[float, int]:
    rec = run_stream(learner, scenario.experiences, scenario.spec, device=run.device,
                     eval_every=run.eval_every, progress=progress)
    m.values.update(stream_metrics(rec))
    m.arrays.update(R=rec.R, R0=rec.R0, R_train=rec.R_train, test_sizes=rec.test_sizes,
                    train_sizes=rec.train_sizes, prequential=rec.prequential,
                    prequential_exp=rec.prequential_exp, curve_samples=rec.curve_samples,
                    curve_scores=rec.curve_scores, per_class_test=rec.per_class_test)
    if isinstance(scenario, GroupedTestSets) and rec.task == "classification":
        m.values.update(metrics.group_metrics(rec.final_test_scores, scenario.test_groups))
    if rec.task == "regression" and is_forecasting(scenario):
        m.values.update(forecast_values(rec, scenario))
        m.arrays.update(prequential_abs=rec.prequential_abs)
        if len(rec.prequential_dims):
            m.arrays["prequential_dims"] = rec.prequential_dims
        if isinstance(scenario, RegimeChanges):
            m.arrays["change_points"] = np.asarray(scenario.change_points, dtype=np.int64)
    return rec.wall_s, rec.samples


def _meta_training_values(m: Measurement, info: dict[str, Any]) -> None:
    """Steps done of asked and completeness, where the learner counts its steps; a shorter
    meta-training than the preset asks for is `partial`, never ranked as the preset's."""
    m.values["meta_train_s"] = (float(info["meta_train_s"]), 1)
    if info.get("meta_steps_done") is None:
        return
    complete = bool(info.get("meta_train_complete", True))
    m.values["meta_steps_done"] = (float(info["meta_steps_done"]), 1)
    m.values["meta_train_complete"] = (float(complete), 1)
    if info.get("meta_steps_asked") is not None:
        m.values["meta_steps_asked"] = (float(info["meta_steps_asked"]), 1)
    m.status = "ok" if complete else "partial"


def measure(m: Measurement, run: RunConfig, scenario: Scenario, entry: Entry, cfg: Any,
            explicit: set[str], progress: Progress | None, memo: PreparedMemo | None) -> None:
    """Prepare (meta-train or load), choose `lr`, run the scored protocol, and fill `m` as it
    goes (a run that fails midway keeps what was found before: its lr choice, its checkpoint)."""
    prep = prepare(entry, cfg, scenario, run, progress, memo)
    m.extra["representation"] = prep.info.get("representation", "")
    tuned, lr_info = select_lr(cfg, prep, scenario, run, explicit, progress)
    learner = build_learner(tuned, scenario.spec, run, progress, prep.state)
    m.extra.update({"lr": lr_info["lr"], "lr_selected_on": lr_info["lr_selected_on"],
                    **(learner.describe() if isinstance(learner, Describable) else {})})
    m.sections.update(lr_selection=lr_info, meta_train=prep.info)
    if scenario.spec.episodic:
        wall, samples = _episodic(m, learner, prep, tuned, scenario, run, progress)
    else:
        wall, samples = _streamed(m, learner, scenario, run, progress)
    m.values["samples_per_s"] = (samples / wall if wall > 0 else 0.0, samples)
    n_params = (sum(p.numel() for p in learner.parameters())
                if isinstance(learner, torch.nn.Module) else 0)
    m.values["params"] = (float(n_params), 1)
    _meta_training_values(m, prep.info)
