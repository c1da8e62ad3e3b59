"""One run, end to end: build the scenario and learner, meta-train (cached), choose the learning
rate on validation streams, run the scored stream, and write tidy results (docs/design.md D2-D6).

Every learner goes through the same steps with the same grid and the same validation streams,
so comparisons are fair.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import re
import resource
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import harness
from harness import checkpoint, metrics
from harness.config import (
    BuildContext,
    Progress,
    apply_overrides,
    config_hash,
    default_cache_dir,
    field_names,
    stable_hash,
    to_dict,
    train_config_hash,
)
from harness.errors import DataError, DivergedError, HarnessError, LearnerError, RunTimeout
from harness.protocol import Budget, LabeledPool, Scenario, ScenarioSpec, tensor_digest
from harness.registry import Entry, get_learner, get_scenario, make_config
from harness.results import provenance, safe_id, write_run
from harness.runner import EpisodeRecord, StreamRecord, run_episodes, run_stream

LR_GRID: tuple[float, ...] = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
"""One wide log grid for every learner alike (pre-trained features want ~1e-5, meta-learned
ones ~3e-4)."""


@dataclass
class RunConfig:
    """One run: which scenario and learner, and how."""

    scenario: str
    """Scenario id (see `harness list scenarios`)."""
    learner: str
    """Learner id, `module:Class` for your own, or `avalanche:<Strategy>`."""
    seed: int = 0
    """Seed of the stream (class choice and order) and of the learner's initialization."""
    preset: str = "quick"
    """Learner preset: quick (CPU, minutes), paper (published recipe), or one the learner adds."""
    device: str = "cpu"
    """torch device for the learner and evaluation."""
    out_dir: Path = Path("results")
    """Results root: runs go to out_dir/<scenario>/<run_id>.{csv,json,npz}."""
    cache_dir: Path | None = None
    """Checkpoint cache (default: $HARNESS_CACHE_DIR or ~/.cache/harness)."""
    data_dir: Path | None = None
    """User-supplied data for scenarios that need it."""
    eval_every: int = 0
    """Also evaluate every N samples (0 = only at experience ends)."""
    overrides: dict[str, str] = field(default_factory=dict)
    """--set KEY=VALUE pairs; 'scenario.KEY' / 'learner.KEY' to disambiguate."""
    tune_lr: bool = True
    """Choose `lr` on the validation streams (unless set explicitly)."""
    lr_grid: tuple[float, ...] = LR_GRID
    """Candidate learning rates, shared by every learner."""
    timeout_s: float = 0.0
    """Wall-clock limit of the run in seconds (0 = none); a run past it is a `timed_out` row."""

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise HarnessError(f"--seed must be >= 0, got {self.seed}")
        if self.eval_every < 0:
            raise HarnessError(f"eval_every must be >= 0, got {self.eval_every}")
        if not (self.device == "cpu" or self.device.startswith("cuda") or self.device == "mps"):
            raise HarnessError(f"--device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise HarnessError("--device cuda asked for, but torch sees no GPU; use --device cpu")
        if any(not (lr > 0 and math.isfinite(lr)) for lr in self.lr_grid) or not self.lr_grid:
            raise HarnessError("lr grid must be non-empty positive finite numbers")
        if not (math.isfinite(self.timeout_s) and self.timeout_s >= 0):
            raise HarnessError(f"--timeout must be a finite number of seconds >= 0, got "
                               f"{self.timeout_s}")


@dataclass
class RunResult:
    run_id: str
    learner: str
    scenario: str
    seed: int
    status: str
    """'ok', 'partial', 'failed', 'diverged' or 'timed_out' (`harness.results.STATUSES`)."""
    metrics: dict[str, float]
    extra: dict[str, Any]
    csv_path: Path | None = None
    error: str = ""
    note: str = ""
    """Set when this run replaced one of the same id made with other provenance."""


def split_overrides(overrides: dict[str, str], scen_cls: type, learn_cls: type,
                    ) -> tuple[dict[str, str], dict[str, str]]:
    """Route --set keys to the scenario or the learner config (prefix to disambiguate)."""
    s_fields, l_fields = field_names(scen_cls), field_names(learn_cls)
    scen: dict[str, str] = {}
    learn: dict[str, str] = {}
    for key, value in overrides.items():
        if key.startswith("scenario."):
            scen[key.removeprefix("scenario.")] = value
        elif key.startswith("learner."):
            learn[key.removeprefix("learner.")] = value
        elif key in s_fields and key in l_fields:
            raise HarnessError(f"--set {key} is ambiguous; write scenario.{key} or learner.{key}")
        elif key in s_fields:
            scen[key] = value
        elif key in l_fields:
            learn[key] = value
        else:
            close = difflib.get_close_matches(key, sorted(s_fields | l_fields), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise HarnessError(
                f"--set {key}: neither the scenario nor the learner has this parameter{hint} "
                f"(scenario: {', '.join(sorted(s_fields))}; learner: {', '.join(sorted(l_fields))})"
            )
    return scen, learn


def build_scenario(scenario_id: str, seed: int, data_dir: Path | None,
                   overrides: dict[str, str], cache_dir: Path | None = None) -> Scenario:
    entry = get_scenario(scenario_id)
    cfg = apply_overrides(entry.config_class(), overrides, what=f"scenario {scenario_id}")
    if "cache_dir" in inspect.signature(cfg.build).parameters:  # e.g. decoded-frame caches
        return cfg.build(seed=seed, data_dir=data_dir, cache_dir=cache_dir)
    return cfg.build(seed=seed, data_dir=data_dir)


def meta_train_fingerprint(scenario: Scenario) -> str:
    """Identifies the meta-training data, so a checkpoint is reused only on the same data."""
    pool = scenario.meta_train
    if isinstance(pool, LabeledPool):
        return tensor_digest(pool.x, pool.y)[:16]
    # The scored episodes' own parameters (`eval_params`, e.g. test_episodes) do not change it.
    skip = {"seed", *getattr(scenario, "eval_params", ())}
    params = {k: v for k, v in scenario.params.items() if k not in skip}
    return stable_hash([scenario.id, scenario.version, type(pool).__name__, params])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _n_params(learner: Any) -> int:
    if isinstance(learner, torch.nn.Module):
        return sum(p.numel() for p in learner.parameters())
    return 0


@dataclass
class Prepared:
    """The post-meta-training state of a learner config, shared by all its runs (the key
    leaves out eval-only fields such as `lr`)."""

    state: dict[str, torch.Tensor] | None
    info: dict[str, Any]


_MEMO: dict[str, Prepared] = {}


def resolved_config(cfg: Any, spec: ScenarioSpec) -> Any:
    """The config as it runs on a scenario with this spec: a config whose None fields resolve
    from recipe tables per scenario kind (the MAML family, Reptile, ProtoNets) has them filled;
    any other is returned as it is."""
    resolve = getattr(cfg, "resolved", None)
    return resolve(spec) if resolve is not None else cfg


def prepare(entry: Entry, cfg: Any, scenario: Scenario, run: RunConfig,
            progress: Progress | None) -> Prepared:
    """Build the learner once and meta-train it (or load the cached checkpoint)."""
    cache = run.cache_dir or default_cache_dir()
    # A config may say what its checkpoint depends on (e.g. a shared pre-trained backbone);
    # by default it is the learner and every training-relevant field of its config, resolved
    # for the scenario (an edit of one scenario kind's recipe retrains that kind only).
    key_cfg = resolved_config(cfg, scenario.spec)
    ident = (key_cfg.checkpoint_key() if hasattr(key_cfg, "checkpoint_key")
             else [entry.id, train_config_hash(key_cfg)])
    # "sha256": checkpoints carry a checksum of their tensors since schema 2; older cache
    # entries (without one) are never looked up, so they are retrained, not trusted.
    parts = [ident, scenario.id, scenario.version, meta_train_fingerprint(scenario),
             harness.__version__.split(".")[0], "sha256"]
    # Learners whose (meta-)training draws its init and tasks from the run's seed (the MAML
    # family) get one checkpoint per seed; the others train from a config field (meta_seed).
    if getattr(cfg, "SEEDED_TRAINING", False):
        parts.append(["seed", run.seed])
    key = stable_hash(parts)
    if key in _MEMO:
        return _MEMO[key]
    name = ident.get("kind", entry.id) if isinstance(ident, dict) else entry.id
    path = cache / "checkpoints" / f"{safe_id(name)}-{key}.safetensors"
    ctx = BuildContext(spec=scenario.spec, seed=run.seed, device=run.device, cache_dir=cache,
                       progress=progress, resume_path=path.with_suffix(".partial.safetensors"))
    learner = cfg.build(ctx)
    info: dict[str, Any] = {"meta_train_s": 0.0, "checkpoint": "", "checkpoint_cached": False,
                            "representation": ""}
    state = None
    if getattr(learner, "needs_meta_train", False):
        # Which trained network the run uses: runs pair (stream learner and its oracle) only on
        # the same one.
        info["representation"] = f"{safe_id(name)}-{key}"
        asked = getattr(key_cfg, "meta_steps", None)
        if isinstance(asked, int):
            info["meta_steps_asked"] = asked
        if scenario.meta_train is None:
            raise HarnessError(
                f"learner {entry.id!r} needs meta-training data but scenario {scenario.id!r} "
                "has none; pick a scenario with a meta-train split"
            )
        if checkpoint.exists(path):
            state, meta = checkpoint.load(path)
            learner.load_state_dict(state)
            info.update(meta_train_s=float(meta.get("meta_train_s", 0.0)), checkpoint_cached=True,
                        meta_steps_done=meta.get("meta_steps_done"))
        else:
            t0 = time.perf_counter()
            # A learner that selects checkpoints on validation episodes (MAML++'s ensemble)
            # takes them as the keyword `val_episodes`; the others are called as before.
            val = ({"val_episodes": scenario.val_experiences}
                   if "val_episodes" in inspect.signature(learner.meta_train).parameters else {})
            learner.meta_train(scenario.meta_train, Budget(), progress, **val)
            # A run resumed from a partial checkpoint also counts the interrupted runs' time.
            elapsed = time.perf_counter() - t0 + float(getattr(learner, "resumed_seconds", 0.0))
            state = {k: v.detach().cpu().clone() for k, v in learner.state_dict().items()}
            # Meta-steps actually taken, where the learner counts them (a time limit can stop
            # it before its configured number).
            steps_done = getattr(learner, "meta_steps_done", None)
            complete = getattr(learner, "meta_train_complete", True)
            info.update(meta_train_s=elapsed, meta_steps_done=steps_done,
                        meta_train_complete=complete)
            # Stopped early (a time limit): no final checkpoint; the learner left a partial one,
            # which the next run of this config resumes.
            if complete:
                checkpoint.save(path, state, {
                    "learner": entry.id, "config": to_dict(cfg), "scenario": scenario.id,
                    "scenario_version": scenario.version,
                    "meta_train_data": meta_train_fingerprint(scenario),
                    "harness_version": harness.__version__, "meta_train_s": elapsed,
                    "meta_steps_done": steps_done,
                    "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                })
        # Named by its key, never by the machine's path.
        info["checkpoint"] = (path if info.get("meta_train_complete", True)
                              else ctx.resume_path).name
    prepared = Prepared(state=state, info=info)
    _MEMO[key] = prepared
    return prepared


def _instantiate(prep: Prepared, cfg: Any, spec: ScenarioSpec, run: RunConfig,
                 progress: Progress | None) -> Any:
    ctx = BuildContext(spec=spec, seed=run.seed, device=run.device,
                       cache_dir=run.cache_dir or default_cache_dir(), progress=progress)
    learner = cfg.build(ctx)
    if prep.state is not None:
        learner.load_state_dict(prep.state)
    return learner


def _stream_score(rec: StreamRecord) -> float:
    """Selection score: accuracy on all trained samples after the stream (meta-test train
    accuracy), or minus the MSE on them for regression."""
    v = float(np.average(rec.R_train, weights=rec.train_sizes))
    return v if rec.task == "classification" else -v


def _sweep_scores(prep: Prepared, cfg: Any, val_spec: ScenarioSpec, scenario: Scenario,
                  run: RunConfig) -> dict[float, float] | None:
    """Validation scores of the whole lr grid in one vectorized pass, for learners that offer
    `lr_sweep(experiences, spec, lrs)` (the same records as the runner's loop, D8); None when
    the learner has none or declines (HarnessError), so the caller runs the loop."""
    learner = _instantiate(prep, cfg, val_spec, run, None)
    sweep = getattr(learner, "lr_sweep", None)
    if sweep is None:
        return None
    try:
        recs = sweep(scenario.val_experiences, val_spec, list(run.lr_grid))
    except HarnessError:
        return None
    scores = {lr: _stream_score(rec) for lr, rec in zip(run.lr_grid, recs, strict=True)}
    return {lr: (v if math.isfinite(v) else -math.inf) for lr, v in scores.items()}


def select_lr(cfg: Any, prep: Prepared, scenario: Scenario, run: RunConfig, explicit: set[str],
              progress: Progress | None) -> tuple[Any, dict[str, Any]]:
    """Pick `lr` on the validation streams from the shared grid; record how it was chosen."""
    if "lr" not in field_names(type(cfg)):
        return cfg, {"lr": "", "lr_selected_on": "none"}
    if "lr" in explicit or not run.tune_lr or not scenario.val_experiences:
        why = "fixed" if "lr" in explicit or not run.tune_lr else "default (no validation split)"
        return cfg, {"lr": cfg.lr, "lr_selected_on": why}
    val_spec = getattr(scenario, "val_spec", None) or scenario.spec
    scores = _sweep_scores(prep, cfg, val_spec, scenario, run)
    if scores is None:
        scores = {}
        for k, lr in enumerate(run.lr_grid):
            learner = _instantiate(prep, dataclasses.replace(cfg, lr=lr), val_spec, run, None)
            try:
                rec = run_stream(learner, scenario.val_experiences, val_spec, device=run.device)
                scores[lr] = _stream_score(rec)
            except DivergedError:
                scores[lr] = -math.inf
            if progress is not None:
                progress("lr selection", k + 1, len(run.lr_grid), {"lr": lr})
    # Ties go to the larger rate: on class-by-class streams a rate too small to learn
    # anything can tie with one that learns and forgets, and "learns nothing" is no choice.
    best = max(scores, key=lambda lr: (scores[lr], lr))
    n_val = sum(e.n_train for e in scenario.val_experiences)
    return dataclasses.replace(cfg, lr=best), {
        "lr": best, "lr_selected_on": f"val({n_val} samples)",
        "lr_scores": {str(k): v for k, v in scores.items()},
    }


def _stream_metrics(rec: StreamRecord) -> dict[str, tuple[float, int]]:
    n_test = int(rec.test_sizes.sum())
    out: dict[str, tuple[float, int]] = {}
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


def _episode_metrics(rec: EpisodeRecord) -> dict[str, tuple[float, int]]:
    mean, half, n = metrics.mean_ci95_normal(rec.scores)
    name = "episode_acc" if rec.task == "classification" else "episode_mse"
    return {name: (mean, n), f"{name}_ci95": (half, n)}


def _episode_sets(prep: Prepared, cfg: Any, scenario: Scenario, run: RunConfig,
                  ) -> dict[str, tuple[float, int, np.ndarray]]:
    """Every further scored episode set a few-shot scenario names (`episode_sets`), and for
    regression every inner-step count of `test_steps_grid` (MAML's 1/5/10-step table):
    `episode_acc_{set}` or `mse_{set}_{S}step`, each with its `_ci95` (1.96 sd/sqrt(n))."""
    sets = getattr(scenario, "episode_sets", None) or {}
    regression = scenario.spec.task == "regression"
    grid = tuple(getattr(scenario, "test_steps_grid", ())) if regression else ()
    if grid and "test_steps" not in field_names(type(cfg)):
        grid = ()
    out: dict[str, tuple[float, int, np.ndarray]] = {}
    for name, episodes in sets.items():
        for steps in grid or (None,):
            c = dataclasses.replace(cfg, test_steps=steps) if steps is not None else cfg
            learner = _instantiate(prep, c, scenario.spec, run, None)
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


def _portable(obj: Any) -> Any:
    """`obj` with every absolute path made relative to the working folder when inside it, and
    dropped (None) otherwise: result files never hold the paths of the machine that made them."""
    if isinstance(obj, dict):
        return {k: _portable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_portable(v) for v in obj]
    if isinstance(obj, Path) or (isinstance(obj, str) and obj.startswith("/")):
        p = Path(obj)
        if not p.is_absolute():
            return str(p)
        try:
            return str(p.resolve().relative_to(Path.cwd().resolve()))
        except (ValueError, OSError):
            return None
    return obj


_TRACE_FILE = re.compile(r'File "(/[^"]+)"')


def _portable_trace(text: str) -> str:
    """A traceback with each file named relative to its package root (or site-packages), never
    by the machine's absolute path."""
    root = str(Path(harness.__file__).resolve().parent.parent) + "/"

    def short(m: re.Match[str]) -> str:
        path = m.group(1)
        if path.startswith(root):
            return f'File "{path[len(root):]}"'
        if "site-packages/" in path:
            return f'File "{path.rsplit("site-packages/", 1)[1]}"'
        return f'File "{Path(path).name}"'

    return _TRACE_FILE.sub(short, text)


_ABS_PATH = re.compile(r"(?<![\w.])/[^\s\"',;:()]+")


def _portable_text(text: str) -> str:
    """Free text (an error message) with each absolute path shortened as `_portable` does, or
    to its last part when outside the working folder."""

    def short(m: re.Match[str]) -> str:
        rel = _portable(m.group(0))
        return rel if rel is not None else f".../{Path(m.group(0)).name}"

    return _ABS_PATH.sub(short, text)


def _meta_seed(cfg: Any, seed: int) -> str:
    """The meta_seed the run's (meta-)training used, where the learner has one."""
    if "meta_seed" not in field_names(type(cfg)):
        return ""
    ms = int(cfg.meta_seed)
    return str(seed if ms < 0 else ms)


class _Deadline:
    """`--timeout`: raise RunTimeout in the main thread after `seconds` (0 = no limit)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> _Deadline:
        if self.seconds > 0:
            if threading.current_thread() is not threading.main_thread():
                raise HarnessError("--timeout works only in the main thread; run without it")
            self._old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def _fire(self, signum: int, frame: Any) -> None:
        raise RunTimeout(f"the run passed its time limit of {self.seconds:g} s (--timeout)")

    def __exit__(self, *exc: object) -> None:
        if self.seconds > 0:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)


def _measure(run: RunConfig, scenario: Scenario, l_entry: Entry, cfg: Any, l_over: dict,
             progress: Progress | None, extra: dict[str, Any], config: dict[str, Any],
             values: dict[str, tuple[float, int]], arrays: dict[str, np.ndarray]) -> str:
    """Prepare, tune and run the learner; fill `values`/`arrays`; return 'ok' or 'partial'."""
    prep = prepare(l_entry, cfg, scenario, run, progress)
    extra["representation"] = prep.info.get("representation", "")
    tuned, lr_info = select_lr(cfg, prep, scenario, run, set(l_over), progress)
    learner = _instantiate(prep, tuned, scenario.spec, run, progress)
    describe = learner.describe() if hasattr(learner, "describe") else {}
    extra.update({"lr": lr_info["lr"], "lr_selected_on": lr_info["lr_selected_on"],
                  **describe})
    config["lr_selection"] = lr_info
    config["meta_train"] = prep.info
    if scenario.spec.episodic:
        erec = run_episodes(learner, scenario.experiences, scenario.spec, device=run.device,
                            progress=progress)
        values.update(_episode_metrics(erec))
        arrays["episode_scores"] = erec.scores
        stream_s, samples = erec.wall_s, len(erec.scores)
        for name, (v, n, scores) in _episode_sets(prep, tuned, scenario, run).items():
            values[name] = (v, n)
            arrays[name] = scores
    else:
        rec = run_stream(learner, scenario.experiences, scenario.spec, device=run.device,
                         eval_every=run.eval_every, progress=progress)
        values.update(_stream_metrics(rec))
        arrays.update(R=rec.R, R0=rec.R0, R_train=rec.R_train, test_sizes=rec.test_sizes,
                      train_sizes=rec.train_sizes, prequential=rec.prequential,
                      prequential_exp=rec.prequential_exp, curve_samples=rec.curve_samples,
                      curve_scores=rec.curve_scores, per_class_test=rec.per_class_test)
        stream_s, samples = rec.wall_s, rec.samples
        if hasattr(scenario, "extra_metrics"):  # e.g. per-video accuracy
            values.update(scenario.extra_metrics(learner, run.device))
    values["samples_per_s"] = (samples / stream_s if stream_s > 0 else 0.0, samples)
    values["params"] = (float(_n_params(learner)), 1)
    values["meta_train_s"] = (float(prep.info["meta_train_s"]), 1)
    status = "ok"
    if prep.info.get("meta_steps_done") is not None:
        complete = bool(prep.info.get("meta_train_complete", True))
        values["meta_steps_done"] = (float(prep.info["meta_steps_done"]), 1)
        values["meta_train_complete"] = (float(complete), 1)
        if prep.info.get("meta_steps_asked") is not None:
            values["meta_steps_asked"] = (float(prep.info["meta_steps_asked"]), 1)
        # Real numbers of a shorter meta-training than the preset asks for: never ranked as
        # the preset's result.
        status = "ok" if complete else "partial"
    return status


def run_config_hash(resolved: Any, scenario_params: dict[str, Any], tune_lr: bool,
                    lr_grid: tuple[float, ...]) -> str:
    """The configuration part of a run id: the resolved learner config, the scenario parameters
    (not the seed) and the lr search. One definition for `execute` and `recipe_drift`."""
    params = {k: v for k, v in scenario_params.items() if k != "seed"}
    return stable_hash([config_hash(resolved), params, tune_lr, lr_grid], 12)


def execute(run: RunConfig, progress: Progress | None = None,
            scenario: Scenario | None = None) -> RunResult:
    """Run one (scenario, learner, seed) and write its results; never half-written.

    Bad input raises HarnessError before anything is written. Whatever else goes wrong in the
    learner's code (an exception, a corrupt checkpoint, a protocol violation, a divergence, the
    time limit) is recorded as a `failed`/`diverged`/`timed_out` run with its traceback in the
    JSON; KeyboardInterrupt propagates (finished runs are kept).
    """
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t_start = time.perf_counter()
    s_entry = get_scenario(run.scenario)
    l_entry = get_learner(run.learner)
    s_over, l_over = split_overrides(run.overrides, s_entry.config_class(),
                                     l_entry.config_class())
    if scenario is None:
        scenario = build_scenario(run.scenario, run.seed, run.data_dir, s_over, run.cache_dir)
    if scenario.spec.task not in l_entry.tasks:
        raise HarnessError(
            f"learner {run.learner!r} supports {', '.join(l_entry.tasks)} scenarios, but "
            f"{run.scenario!r} is {scenario.spec.task}"
        )
    cfg = make_config(l_entry, run.preset, l_over)
    # Hashed resolved: a recipe edit is a different configuration, and gets a new run id.
    resolved = resolved_config(cfg, scenario.spec)
    chash = run_config_hash(resolved, scenario.params, run.tune_lr, run.lr_grid)
    run_id = safe_id(f"{run.learner}-{chash[:8]}-{run.preset}-s{run.seed}-"
                     f"{scenario.stream_hash.rsplit('-', 1)[-1][:8]}")
    base = {"scenario": scenario.id, "scenario_version": scenario.version,
            "stream_hash": scenario.stream_hash, "learner": run.learner, "config_hash": chash,
            "preset": run.preset, "seed": run.seed, "started_at": started,
            "meta_seed": _meta_seed(resolved, run.seed), **provenance(run.device)}
    scen_params = json.dumps(_portable({k: v for k, v in scenario.params.items()
                                        if k != "seed"}), sort_keys=True, default=str)
    config: dict[str, Any] = {"run": to_dict(run), "learner_config": to_dict(cfg),
                              "resolved_learner_config": to_dict(resolved),
                              "scenario_params": scenario.params, **base}
    extra: dict[str, Any] = {"scenario_params": scen_params, "representation": ""}
    if progress is not None:
        outer = progress

        def progress(phase: str, done: int, total: int, info: dict[str, float]) -> None:
            outer(f"{run.learner} s{run.seed}: {phase}", done, total, info)

    torch.manual_seed(run.seed)
    error, trace = "", ""
    values: dict[str, tuple[float, int]] = {}
    arrays: dict[str, np.ndarray] = {}
    try:
        with _Deadline(run.timeout_s):
            status = _measure(run, scenario, l_entry, cfg, l_over, progress, extra, config,
                              values, arrays)
    except KeyboardInterrupt:
        raise
    except HarnessError as e:
        if not isinstance(e, DataError | LearnerError):
            raise  # bad input: nothing is written
        status, error, trace = "failed", str(e), traceback.format_exc()
    except DivergedError as e:
        status, error, trace = "diverged", str(e), traceback.format_exc()
    except RunTimeout as e:
        status, error, trace = "timed_out", str(e), traceback.format_exc()
    except (Exception, SystemExit) as e:  # the learner's code may raise anything
        what = (f"SystemExit({e.code!r}) raised by the learner's code"
                if isinstance(e, SystemExit) else f"{type(e).__name__}: {e}")
        # format_exc() only inside the handler: after it, the exception is gone.
        status, error, trace = "failed", what, traceback.format_exc()
    if status in ("failed", "diverged", "timed_out"):
        values = {status: (1.0, 1)}
        arrays = {}
    wall = time.perf_counter() - t_start
    values["wall_s"] = (wall, 1)
    values["peak_rss_mb"] = (_peak_rss_mb(), 1)
    base["wall_s"] = round(wall, 3)
    base["status"] = status
    config["status"], config["error"] = status, _portable_text(error)
    config["traceback"] = _portable_text(_portable_trace(trace))
    config["representation"] = extra["representation"]
    arrays.setdefault("status", np.array([status]))
    path, note = write_run(run.out_dir, scenario.id, run_id, base, values, extra,
                           _portable(config), arrays)
    return RunResult(run_id=run_id, learner=run.learner, scenario=scenario.id, seed=run.seed,
                     status=status, metrics={k: v for k, (v, _) in values.items()},
                     extra=extra, csv_path=path, error=error, note=note)


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0..4]; '0,2,5' -> [0, 2, 5]; '3' -> [3] (bounded: `harness.config.parse_seeds`)."""
    from harness import config

    return config.parse_seeds(text)


def scenario_variants(scenario_id: str, overrides: dict[str, str]) -> list[dict[str, str]]:
    """The override sets to run: one per named variant of the scenario (its config's
    `VARIANTS`, e.g. the video orderings) unless the user fixed a variant parameter."""
    variants: dict[str, dict] = getattr(get_scenario(scenario_id).config_class(), "VARIANTS", {})
    keys = {k for v in variants.values() for k in v}
    if not variants or keys & {k.removeprefix("scenario.") for k in overrides}:
        return [overrides]
    return [{**overrides, **{k: str(v) for k, v in var.items()}} for var in variants.values()]


def compare(base: RunConfig, learners: list[str], seeds: list[int],
            progress: Progress | None = None) -> list[RunResult]:
    """Every learner on the identical stream of every seed (the scenario is built once per
    seed and handed to each learner), for every variant of the scenario."""
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
    presets = [getattr(e.config_class(), "PRESETS", {}) for e in entries]
    if presets and presets[0] and base.preset not in presets[0]:
        make_config(entries[0], base.preset, {})  # the named learner's preset must exist
    results = []
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
                s_over, _ = split_overrides(run.overrides, s_entry.config_class(),
                                            entry.config_class())
                if scenario is None:
                    scenario = build_scenario(run.scenario, seed, run.data_dir, s_over,
                                              run.cache_dir)
                results.append(execute(run, progress, scenario=scenario))
    return results


def recipe_drift(json_paths: list[Path]) -> list[tuple[str, str, str]]:
    """Runs made with another recipe than the code's current one for their learner, preset,
    overrides and scenario parameters: (run_id, recorded config_hash, current config_hash).

    The current hash is computed as `execute` computes it (the scenario is built for its spec;
    builds are shared by runs with the same parameters)."""
    built: dict[str, Scenario] = {}
    out = []
    for path in json_paths:
        meta = json.loads(Path(path).read_text())
        run = meta.get("run") if isinstance(meta, dict) else None
        if not isinstance(run, dict) or not {"scenario", "learner", "preset", "overrides",
                                             "tune_lr", "lr_grid"} <= set(run):
            continue  # not written by `execute` (e.g. a hand-made table): nothing to compare
        params = {k: v for k, v in meta["scenario_params"].items() if k != "seed"}
        try:
            s_entry, l_entry = get_scenario(run["scenario"]), get_learner(run["learner"])
            s_over, l_over = split_overrides(run["overrides"], s_entry.config_class(),
                                             l_entry.config_class())
            key = stable_hash([run["scenario"], params])
            if key not in built:
                fields_ = field_names(s_entry.config_class())
                built[key] = build_scenario(run["scenario"], int(meta["seed"]), None,
                                            {k: v for k, v in params.items() if k in fields_})
            cfg = make_config(l_entry, run["preset"], l_over)
            resolved = resolved_config(cfg, built[key].spec)
        except (HarnessError, ValueError, TypeError, KeyError) as e:  # e.g. a learner this
            # install does not have, or parameters it no longer accepts
            out.append((meta.get("run_id", Path(path).stem), meta["config_hash"],
                        f"unknown ({e})"))
            continue
        now = run_config_hash(resolved, params, run["tune_lr"], tuple(run["lr_grid"]))
        if now != meta["config_hash"]:
            out.append((meta["run_id"] if "run_id" in meta else Path(path).stem,
                        meta["config_hash"], now))
    return out
