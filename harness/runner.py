"""The predict-then-observe loop, evaluation points and the raw run record (docs/design.md D2).

The runner owns the loop: for every batch it calls `predict(x)` (under no_grad), records the
prequential hit, then `observe(x, y)`. At the end of every experience it evaluates the held-out
sets of all experiences, seen and unseen, in eval mode, filling `R[i, j]`; `R0` is measured
before any training. A learner gets inputs and labels of the current batch only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from harness.capabilities import Resettable, TaskAware
from harness.config import Progress
from harness.errors import DivergedError, LearnerError
from harness.protocol import Experience, Learner, ScenarioSpec

EVAL_BATCH = 512


@dataclass
class StreamRecord:
    """Everything measured on one stream; any metric can be recomputed from it.

    For classification the scores are accuracies; for regression they are MSEs.
    """

    R: np.ndarray
    """[T, T]: score on experience j's test set after training through experience i."""
    R0: np.ndarray
    """[T]: score on each test set before any training."""
    R_train: np.ndarray
    """[T]: score on each experience's training data after the whole stream."""
    test_sizes: np.ndarray
    train_sizes: np.ndarray
    prequential: np.ndarray
    """Per training sample, in stream order: 1/0 hit (classification) or squared error."""
    prequential_exp: np.ndarray
    """Experience index of each prequential entry."""
    curve_samples: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """Samples seen at each `eval_every` point."""
    curve_scores: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """[P, T]: per-experience test score at each `eval_every` point."""
    prequential_abs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Regression: per training sample, the absolute error averaged over output dims."""
    prequential_dims: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """Regression with named outputs (`spec.output_names`): [N, D] squared error per dim."""
    per_class_test: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Classification: final test accuracy per class label (NaN for absent labels)."""
    final_test_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Per test sample, all experiences in order: hit or squared error after the stream (what
    per-group metrics such as per-video accuracy are computed from)."""
    wall_s: float = 0.0
    samples: int = 0
    task: str = "classification"


def _check_output(out: object, batch: int, spec: ScenarioSpec, where: str) -> Tensor:
    if not isinstance(out, Tensor):
        raise LearnerError(
            f"learner.{where} returned {type(out).__name__}, expected a torch.Tensor of shape "
            f"[{batch}, {spec.n_outputs}]; return logits (classification) or outputs (regression)"
        )
    if out.ndim != 2 or out.shape[0] != batch or out.shape[1] != spec.n_outputs:
        raise LearnerError(
            f"learner.{where} returned shape {list(out.shape)}, expected [{batch}, "
            f"{spec.n_outputs}] (batch, {'classes' if spec.task == 'classification' else 'dims'})"
        )
    if not torch.isfinite(out).all():
        raise DivergedError(f"learner.{where} returned non-finite values (NaN/inf)")
    return out


def residuals(out: Tensor, y: Tensor) -> Tensor:
    """Regression: output minus target, per sample and output dim."""
    return out - y.reshape(out.shape)


def _score(out: Tensor, y: Tensor, task: str) -> Tensor:
    """Per-sample hits (classification) or squared errors averaged over output dims."""
    if task == "classification":
        return (out.argmax(dim=1) == y).float()
    return (residuals(out, y) ** 2).mean(dim=1)


def _set_mode(learner: Learner, training: bool) -> None:
    if isinstance(learner, torch.nn.Module):
        learner.train(training)


@torch.no_grad()
def evaluate(learner: Learner, x: Tensor, y: Tensor, spec: ScenarioSpec, device: str) -> Tensor:
    """Per-sample scores of `learner` on (x, y), in eval mode and without gradients."""
    _set_mode(learner, False)
    try:
        scores = []
        for i in range(0, len(x), EVAL_BATCH):
            # Copies: the test tensors are shared by every learner of a comparison, and a
            # learner's predict may modify its input in place.
            xb = x[i : i + EVAL_BATCH].to(device, copy=True)
            yb = y[i : i + EVAL_BATCH].to(device, copy=True)
            out = _check_output(learner.predict(xb), len(xb), spec, "predict")
            scores.append(_score(out, yb, spec.task).cpu())
        return torch.cat(scores) if scores else torch.zeros(0)
    finally:
        _set_mode(learner, True)


def _mean(t: Tensor) -> float:
    return float(t.mean()) if len(t) else float("nan")


class _Log:
    """What the stream loop accumulates: prequential scores and the `eval_every` curve."""

    def __init__(self, total: int, spec: ScenarioSpec) -> None:
        self.preq = torch.zeros(total)
        regression = spec.task == "regression"
        self.preq_abs = torch.zeros(total if regression else 0)
        self.preq_dims = torch.zeros((total, spec.n_outputs) if regression and spec.output_names
                                     else (0, 0))
        self.preq_exp = np.zeros(total, dtype=np.int64)
        self.curve_s: list[int] = []
        self.curve: list[np.ndarray] = []
        self.seen = 0


def _set_task(learner: Learner, exp: Experience) -> None:
    if not isinstance(learner, TaskAware):
        raise LearnerError("this scenario grants task ids: the learner needs "
                           "set_task(task_id) (harness.capabilities.TaskAware)")
    learner.set_task(exp.task_id)


def _train_on(learner: Learner, exp: Experience, i: int, spec: ScenarioSpec, device: str,
              log: _Log, eval_every: int, eval_tests: Callable[[], np.ndarray],
              progress: Progress | None, phase: str) -> None:
    """One experience's batches, each predicted (the prequential score) then observed."""
    total = len(log.preq)
    for x, y in exp:
        x, y = x.to(device), y.to(device)
        b, seen = len(x), log.seen
        with torch.no_grad():
            # A clone, so a learner cannot keep or alter the runner's copy of the stream.
            out = _check_output(learner.predict(x.clone()), b, spec, "predict")
        if len(log.preq_abs):  # regression: one residual for every error record
            diff = residuals(out, y)
            log.preq[seen : seen + b] = (diff**2).mean(dim=1).cpu()
            log.preq_abs[seen : seen + b] = diff.abs().mean(dim=1).cpu()
            if len(log.preq_dims):
                log.preq_dims[seen : seen + b] = (diff**2).cpu()
        else:
            log.preq[seen : seen + b] = _score(out, y, spec.task).cpu()
        log.preq_exp[seen : seen + b] = i
        learner.observe(x.clone(), y.clone())
        log.seen = seen + b
        if eval_every and log.seen // eval_every > seen // eval_every:
            log.curve_s.append(log.seen)
            log.curve.append(eval_tests())
        if progress is not None:
            progress(phase, log.seen, total, {})


def run_stream(
    learner: Learner,
    experiences: Sequence[Experience],
    spec: ScenarioSpec,
    *,
    device: str = "cpu",
    eval_every: int = 0,
    progress: Progress | None = None,
    phase: str = "stream",
) -> StreamRecord:
    """Run `learner` through `experiences` once, predict-then-observe, and measure it."""
    T = len(experiences)
    if T == 0:
        raise ValueError("run_stream needs at least one experience")
    last: list[Tensor] = []

    def eval_tests() -> np.ndarray:
        last[:] = [evaluate(learner, e.x_test, e.y_test, spec, device) for e in experiences]
        return np.array([_mean(s) for s in last])

    t0 = time.perf_counter()
    R = np.full((T, T), np.nan)
    R0 = eval_tests()
    log = _Log(sum(e.n_train for e in experiences), spec)
    _set_mode(learner, True)
    for i, exp in enumerate(experiences):
        if spec.task_ids:
            _set_task(learner, exp)
        _train_on(learner, exp, i, spec, device, log, eval_every, eval_tests, progress, phase)
        R[i] = eval_tests()
    R_train = np.array([_mean(evaluate(learner, e.x, e.y, spec, device)) for e in experiences])
    per_class = np.zeros(0)
    if spec.task == "classification":  # from the final evaluation's hits, not a new pass
        per_class = _per_class_accuracy(torch.cat([e.y_test for e in experiences]),
                                        torch.cat(last), spec.n_outputs)
    return StreamRecord(
        R=R, R0=R0, R_train=R_train,
        test_sizes=np.array([e.n_test for e in experiences]),
        train_sizes=np.array([e.n_train for e in experiences]),
        prequential=log.preq.numpy(), prequential_exp=log.preq_exp,
        prequential_abs=log.preq_abs.numpy(), prequential_dims=log.preq_dims.numpy(),
        curve_samples=np.array(log.curve_s, dtype=np.int64),
        curve_scores=np.array(log.curve) if log.curve else np.zeros((0, T)),
        per_class_test=per_class, final_test_scores=torch.cat(last).numpy(),
        wall_s=time.perf_counter() - t0, samples=log.seen, task=spec.task,
    )


def _per_class_accuracy(y: Tensor, hits: Tensor, n: int) -> np.ndarray:
    count = torch.bincount(y, minlength=n).float()
    correct = torch.bincount(y, weights=hits, minlength=n)
    return torch.where(count > 0, correct / count.clamp(min=1), torch.nan).numpy()


@dataclass
class EpisodeRecord:
    """Per-episode query scores of an episodic (few-shot) evaluation."""

    scores: np.ndarray
    wall_s: float
    task: str = "classification"


def run_episodes(
    learner: Learner,
    episodes: Sequence[Experience],
    spec: ScenarioSpec,
    *,
    device: str = "cpu",
    progress: Progress | None = None,
) -> EpisodeRecord:
    """Few-shot protocol: per episode `reset()`, `observe(support)`, then `predict(query)`.

    Each episode is an Experience whose training stream is the support set and whose test
    set is the query set. The learner must implement `reset()`.
    """
    if not isinstance(learner, Resettable):
        raise LearnerError("episodic scenarios need a learner with reset(); add one "
                           "(harness.capabilities.Resettable)")
    t0 = time.perf_counter()
    scores = np.zeros(len(episodes))
    for k, ep in enumerate(episodes):
        learner.reset()
        _set_mode(learner, True)
        for x, y in ep:
            learner.observe(x.to(device, copy=True), y.to(device, copy=True))
        scores[k] = _mean(evaluate(learner, ep.x_test, ep.y_test, spec, device))
        if not np.isfinite(scores[k]):
            raise DivergedError(
                f"episode {k + 1} of {len(episodes)}: the query score "
                f"is {scores[k]} after adaptation (it diverged); lower the test-time inner "
                "learning rate or the number of test steps")
        if progress is not None:
            progress("episodes", k + 1, len(episodes), {})
    return EpisodeRecord(scores=scores, wall_s=time.perf_counter() - t0, task=spec.task)
