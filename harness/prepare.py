"""The meta-training step and its checkpoint cache (docs/design.md D4).

A learner that declares `MetaTrainable` is trained once per (learner config, scenario data)
and the result cached on disk under a key of everything that shapes it; every later run loads
it. `PreparedMemo` keeps the last few states in memory for the runs of one `compare`.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import harness
from harness import checkpoint, fileio
from harness.building import build_learner, resolved_config
from harness.capabilities import (
    CountsTrainingSteps,
    EvalOnlyParams,
    KeyedCheckpoint,
    MetaTrainable,
    MetaTrainReport,
    Resettable,
    SeededTraining,
)
from harness.config import Progress, default_cache_dir, stable_hash, to_dict, train_config_hash
from harness.errors import DivergedError, HarnessError, LearnerError
from harness.protocol import Budget, Experience, LabeledPool, Scenario, ScenarioSpec, tensor_digest
from harness.registry import Entry
from harness.results import safe_id
from harness.run_config import RunConfig
from harness.runner import run_episodes


@dataclass
class Prepared:
    """The post-meta-training state of a learner config, shared by all its runs (the key
    leaves out eval-only fields such as `lr`)."""

    state: dict[str, torch.Tensor] | None
    info: dict[str, Any]


class PreparedMemo:
    """The last `size` prepared states, by cache key (one `compare` reuses them across its
    learners and seeds instead of reading the checkpoint again)."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._items: OrderedDict[str, Prepared] = OrderedDict()

    def get(self, key: str) -> Prepared | None:
        if key in self._items:
            self._items.move_to_end(key)
        return self._items.get(key)

    def values(self) -> list[Prepared]:
        return list(self._items.values())

    def put(self, key: str, prepared: Prepared) -> None:
        self._items[key] = prepared
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


def meta_train_fingerprint(scenario: Scenario) -> str:
    """Identifies the meta-training data, so a checkpoint is reused only on the same data."""
    pool = scenario.meta_train
    if isinstance(pool, LabeledPool):
        return tensor_digest(pool.x, pool.y)[:16]
    # The scored episodes' own parameters (`eval_params`, e.g. test_episodes) do not change it.
    evaluation = scenario.eval_params if isinstance(scenario, EvalOnlyParams) else ()
    skip = {"seed", *evaluation}
    params = {k: v for k, v in scenario.params.items() if k not in skip}
    return stable_hash([scenario.id, scenario.version, type(pool).__name__, params])


def checkpoint_identity(entry: Entry, cfg: Any, scenario: Scenario, seed: int
                        ) -> tuple[str, str]:
    """(name, key) of the checkpoint a learner config trains on this scenario's data."""
    # A config may say what its checkpoint depends on (e.g. a shared pre-trained backbone);
    # by default it is the learner and every training-relevant field of its config, resolved
    # for the scenario (an edit of one scenario kind's recipe retrains that kind only).
    key_cfg = resolved_config(cfg, scenario.spec)
    ident = (key_cfg.checkpoint_key() if isinstance(key_cfg, KeyedCheckpoint)
             else [entry.id, train_config_hash(key_cfg)])
    # "sha256": checkpoints carry a checksum of their tensors since schema 2; older cache
    # entries (without one) are never looked up, so they are retrained, not trusted.
    parts = [ident, scenario.id, scenario.version, meta_train_fingerprint(scenario),
             harness.__version__.split(".")[0], "sha256"]
    # Learners whose (meta-)training draws its init and tasks from the run's seed (the MAML
    # family) get one checkpoint per seed; the others train from a config field (meta_seed).
    if isinstance(cfg, SeededTraining) and cfg.SEEDED_TRAINING:
        parts.append(["seed", seed])
    name = ident.get("kind", entry.id) if isinstance(ident, dict) else entry.id
    return name, stable_hash(parts)


class EpisodeValidator:
    """`Validate` for a learner: the scenario's validation episodes run by the harness's own
    episode loop (as the scored ones are); mean accuracy, or minus the mean MSE."""

    def __init__(self, learner: Any, episodes: Sequence[Experience], spec: ScenarioSpec,
                 device: str) -> None:
        self.learner, self.episodes, self.spec, self.device = learner, episodes, spec, device
        self.n_episodes = len(episodes)

    def __call__(self) -> float:
        try:
            scores = run_episodes(self.learner, self.episodes, self.spec,
                                  device=self.device).scores
        except DivergedError:
            return -math.inf
        mean = float(scores.mean())
        return -mean if self.spec.task == "regression" else mean


def _meta_train(learner: MetaTrainable, scenario: Scenario, run: RunConfig,
                progress: Progress | None) -> tuple[float, MetaTrainReport]:
    """Call the learner's meta_train with the declared signature; (seconds, its report)."""
    validate = (EpisodeValidator(learner, scenario.val_experiences, scenario.spec, run.device)
                if scenario.spec.episodic and scenario.val_experiences
                and isinstance(learner, Resettable) else None)
    t0 = time.perf_counter()
    report = learner.meta_train(scenario.meta_train, Budget(), progress, validate)
    if not isinstance(report, MetaTrainReport):
        raise LearnerError(f"{type(learner).__name__}.meta_train returned "
                           f"{type(report).__name__}; return harness.capabilities."
                           "MetaTrainReport(steps_done, complete, seconds_before)")
    # A run resumed from a partial checkpoint also counts the interrupted runs' time.
    return time.perf_counter() - t0 + report.seconds_before, report


def _trained_state(entry: Entry, cfg: Any, learner: MetaTrainable, scenario: Scenario,
                   run: RunConfig, path: Path, progress: Progress | None,
                   info: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Load the cached checkpoint, or meta-train and save it (only when complete)."""
    if checkpoint.exists(path):
        state, meta = checkpoint.load(path)
        learner.load_state_dict(state)
        info.update(meta_train_s=float(meta.get("meta_train_s", 0.0)), checkpoint_cached=True,
                    meta_steps_done=meta.get("meta_steps_done"))
        return state
    elapsed, report = _meta_train(learner, scenario, run, progress)
    state = {k: v.detach().cpu().clone() for k, v in learner.state_dict().items()}
    info.update(meta_train_s=elapsed, meta_steps_done=report.steps_done,
                meta_train_complete=report.complete)
    # Stopped early (a time limit): no final checkpoint; the learner left a partial one,
    # which the next run of this config resumes.
    if report.complete:
        checkpoint.save(path, state, {
            "learner": entry.id, "config": to_dict(cfg), "scenario": scenario.id,
            "scenario_version": scenario.version,
            "meta_train_data": meta_train_fingerprint(scenario),
            "harness_version": harness.__version__, "meta_train_s": elapsed,
            "meta_steps_done": report.steps_done,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        })
    return state


def prepare(entry: Entry, cfg: Any, scenario: Scenario, run: RunConfig,
            progress: Progress | None, memo: PreparedMemo | None = None) -> Prepared:
    """Build the learner once and meta-train it (or load the cached checkpoint)."""
    cache = run.cache_dir or default_cache_dir()
    name, key = checkpoint_identity(entry, cfg, scenario, run.seed)
    found = memo.get(f"{cache}/{key}") if memo is not None else None
    if found is not None:
        return found
    path = cache / "checkpoints" / f"{safe_id(name)}-{key}.safetensors"
    resume = path.with_suffix(".partial.safetensors")
    learner = build_learner(cfg, scenario.spec, run, progress, resume_path=resume)
    info: dict[str, Any] = {"meta_train_s": 0.0, "checkpoint": "", "checkpoint_cached": False,
                            "representation": ""}
    state = None
    if isinstance(learner, MetaTrainable) and learner.needs_meta_train:
        # Which trained network the run uses: runs pair (stream learner and its oracle) only on
        # the same one.
        info["representation"] = f"{safe_id(name)}-{key}"
        resolved = resolved_config(cfg, scenario.spec)
        asked = (resolved.training_steps() if isinstance(resolved, CountsTrainingSteps)
                 else to_dict(resolved).get("meta_steps"))
        if isinstance(asked, int):
            info["meta_steps_asked"] = asked
        if scenario.meta_train is None:
            raise HarnessError(
                f"learner {entry.id!r} needs meta-training data but scenario {scenario.id!r} "
                "has none; pick a scenario with a meta-train split"
            )
        # Workers of a sweep that need the same checkpoint: one trains it, the others wait
        # and then load it.
        with fileio.exclusive(cache / "locks" / f"{path.stem}.lock"):
            state = _trained_state(entry, cfg, learner, scenario, run, path, progress, info)
        # Named by its key, never by the machine's path.
        info["checkpoint"] = (path if info.get("meta_train_complete", True) else resume).name
    prepared = Prepared(state=state, info=info)
    if memo is not None:
        memo.put(f"{cache}/{key}", prepared)
    return prepared
