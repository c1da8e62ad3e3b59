"""Learning-rate selection on the validation streams (docs/design.md D5).

Every learner whose config has `lr` (built-in or a user's) gets the same search: each rate of
one shared log grid runs the validation streams with the scored protocol, and the best score
wins. Head-only learners (`HeadSweepable`) run the whole grid in one vectorised pass that gives
the same records as the loop (docs/design.md D8).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from harness.building import build_learner
from harness.capabilities import HasValidationSpec, HeadSweepable, UsesLR
from harness.config import Progress, field_names
from harness.errors import DivergedError
from harness.fast_eval import head_sgd_sweep
from harness.prepare import Prepared
from harness.protocol import Scenario, ScenarioSpec
from harness.run_config import RunConfig
from harness.runner import StreamRecord, run_stream


def stream_score(rec: StreamRecord) -> float:
    """Selection score: accuracy on all trained samples after the stream (meta-test train
    accuracy), or minus the MSE on them for regression."""
    v = float(np.average(rec.R_train, weights=rec.train_sizes))
    return v if rec.task == "classification" else -v


def _sweep_scores(prep: Prepared, cfg: Any, val_spec: ScenarioSpec, scenario: Scenario,
                  run: RunConfig) -> dict[float, float] | None:
    """Validation scores of the whole grid in one pass, for head-only learners; None when the
    learner is not one (or this configuration of it is not), so the caller runs the loop."""
    learner = build_learner(cfg, val_spec, run, None, prep.state)
    features = learner.sweep_features() if isinstance(learner, HeadSweepable) else None
    if features is None or val_spec.task != "classification":
        return None
    recs = head_sgd_sweep(features, scenario.val_experiences, val_spec, list(run.lr_grid),
                          run.device)
    scores = {lr: stream_score(rec) for lr, rec in zip(run.lr_grid, recs, strict=True)}
    return {lr: (v if math.isfinite(v) else -math.inf) for lr, v in scores.items()}


def _loop_scores(prep: Prepared, cfg: Any, val_spec: ScenarioSpec, scenario: Scenario,
                 run: RunConfig, progress: Progress | None) -> dict[float, float]:
    """Validation scores of the grid, one learner per rate through the runner's loop."""
    scores = {}
    if progress is not None:  # the phase starts now, not when its first rate is done
        progress("lr selection", 0, len(run.lr_grid), {})
    for k, lr in enumerate(run.lr_grid):
        learner = build_learner(dataclasses.replace(cfg, lr=lr), val_spec, run, None, prep.state)
        try:
            rec = run_stream(learner, scenario.val_experiences, val_spec, device=run.device)
            scores[lr] = stream_score(rec)
        except DivergedError:
            scores[lr] = -math.inf
        if progress is not None:
            progress("lr selection", k + 1, len(run.lr_grid), {"lr": lr})
    return scores


def select_lr(cfg: Any, prep: Prepared, scenario: Scenario, run: RunConfig, explicit: set[str],
              progress: Progress | None) -> tuple[Any, dict[str, Any]]:
    """Pick `lr` on the validation streams from the shared grid; record how it was chosen."""
    if "lr" not in field_names(type(cfg)) or (isinstance(cfg, UsesLR) and not cfg.uses_lr()):
        return cfg, {"lr": "", "lr_selected_on": "none"}
    if "lr" in explicit or not run.tune_lr or not scenario.val_experiences:
        why = "fixed" if "lr" in explicit or not run.tune_lr else "default (no validation split)"
        return cfg, {"lr": cfg.lr, "lr_selected_on": why}
    val_spec = (scenario.val_spec if isinstance(scenario, HasValidationSpec) else None
                ) or scenario.spec
    scores = _sweep_scores(prep, cfg, val_spec, scenario, run)
    if scores is None:
        scores = _loop_scores(prep, cfg, val_spec, scenario, run, progress)
    # Ties go to the larger rate: on class-by-class streams a rate too small to learn
    # anything can tie with one that learns and forgets, and "learns nothing" is no choice.
    best = max(scores, key=lambda lr: (scores[lr], lr))
    n_val = sum(e.n_train for e in scenario.val_experiences)
    return dataclasses.replace(cfg, lr=best), {
        "lr": best, "lr_selected_on": f"val({n_val} samples)",
        "lr_scores": {str(k): v for k, v in scores.items()},
    }
