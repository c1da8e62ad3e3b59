"""Resumable (meta-)training: one training loop and one partial-checkpoint mechanism for every
learner that trains before the stream (MAML family, Reptile, ProtoNets, OML, ANML, OML-sine).

`train_steps` runs the steps a learner still has to take, stopping early when its time limit
says so (`stop_after`: after a step, for the MAML family, Reptile and ProtoNets; the head-only
learners check theirs before a step). `ResumableRun` restores the partial checkpoint at `path`
if there is one, saves one every `every_s` seconds and when a time limit stops training early,
removes it once training is complete, and carries the seconds of the interrupted runs;
`finish` gives the learner's `MetaTrainReport`. What a checkpoint holds besides the sampler's
RNG state ('rng'), the step and the seconds is a learner family's own format, as it always
was:
  - `NamedState` (MAML family, Reptile, ProtoNets): the module's state dict as 'model.<key>',
    the optimizer's state by parameter name ('opt.<name>.<field>'), the scheduler position;
  - `KeyedState` (head-only learners, OML-sine): the learner's state dict ('net.*', 'train.*'),
    the optimizer's state by index with its parameter groups, and the hash of the training
    config, so a checkpoint of another config is ignored (training starts afresh).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from harness import checkpoint
from harness.capabilities import MetaTrainReport
from harness.config import Progress
from harness.protocol import Budget


class PartialState(Protocol):
    """What a partial checkpoint holds of the model and optimizer, and how it is restored."""

    def pack(self, step: int, elapsed_s: float) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """(tensors, JSON metadata) of the state after `step` steps, `elapsed_s` seconds."""
        ...

    def unpack(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> bool:
        """Restore what `pack` wrote; False when the checkpoint is not this run's."""
        ...


class ResumableRun:
    """The partial-checkpoint bookkeeping of one training call. The sampler's generator `g` is
    saved and restored with the state, so a resumed run draws what an uninterrupted one would.
    `path` None: nothing is restored or saved."""

    def __init__(self, state: PartialState, g: torch.Generator, path: Path | None,
                 every_s: float) -> None:
        self.state, self.g, self.path, self.every_s = state, g, path, every_s
        # The step to start at, and the seconds the interrupted runs spent (0 unless resumed).
        self.start, self.seconds_before = self._restore()
        # Steps done in all so far.
        self.steps = self.start
        self.t0 = self.last_save = time.perf_counter()

    def _restore(self) -> tuple[int, float]:
        if self.path is None or not checkpoint.exists(self.path):
            return 0, 0.0
        tensors, meta = checkpoint.load(self.path)
        if not self.state.unpack(tensors, meta):
            return 0, 0.0
        self.g.set_state(tensors["rng"])
        return int(meta["step"]), float(meta.get("elapsed_s", 0.0))

    def _save(self, now: float) -> None:
        if self.path is not None:
            tensors, meta = self.state.pack(self.steps, self.seconds_before + now - self.t0)
            checkpoint.save(self.path, {**tensors, "rng": self.g.get_state()}, meta)

    def seconds(self) -> float:
        """Seconds of this call so far."""
        return time.perf_counter() - self.t0

    def step_done(self, steps: int) -> None:
        """Call after each step (`steps` done in all); saves when one is due."""
        now = time.perf_counter()
        self.steps = steps
        if now - self.last_save >= self.every_s:
            self._save(now)
            self.last_save = now

    def finish(self, total: int) -> MetaTrainReport:
        """Training stopped after `self.steps` of `total` steps. Complete: remove the partial
        checkpoint. Stopped early (a time limit): save it, so that the next run with the same
        config resumes here instead of starting over."""
        complete = self.steps >= total
        if self.path is not None:
            if complete:
                for p in (self.path, self.path.with_suffix(".json")):
                    p.unlink(missing_ok=True)
            else:
                self._save(time.perf_counter())
        return MetaTrainReport(steps_done=self.steps, complete=complete,
                               seconds_before=self.seconds_before)


Info = Callable[[], dict[str, float]]
"""A step's progress values, computed only when progress is reported (they may sync a GPU)."""


def train_steps(run: ResumableRun, total: int, step: Callable[[int], Info],
                stop: Callable[[int], bool], progress: Progress | None, every: int = 1,
                after: Callable[[int], None] | None = None,
                phase: str = "meta-train") -> MetaTrainReport:
    """The training loop: steps `run.start` .. `total` - 1 of `step(i)`, unless `stop(i)` ends
    it first (a time limit). After step i: `after(i + 1)` (e.g. a validation), the partial
    checkpoint when one is due, then `progress(phase, i + 1, total, info)` every `every` steps
    and at the last. Returns the report of `run.finish(total)`."""
    for i in range(run.start, total):
        if stop(i):
            break
        info = step(i)
        if after is not None:
            after(i + 1)
        run.step_done(i + 1)
        if progress is not None and (i % every == 0 or i == total - 1):
            progress(phase, i + 1, total, info())
    return run.finish(total)


def stop_after(run: ResumableRun, limit_s: float) -> Callable[[int], bool]:
    """`stop` for a time limit on this call: checked after every step (so a call takes at least
    one), it stops once the call has run longer than `limit_s`."""
    return lambda i: i > run.start and run.seconds() > limit_s


def step_target(steps: int, budget: Budget) -> int:
    """The steps to train: the configured ones, capped by the budget's (0 = no cap)."""
    return min(steps, budget.steps) if budget.steps else steps


def time_limit(limit_s: float, budget: Budget) -> float:
    """Seconds this call may train: the smaller of a config's limit and the budget's (each
    0 = none; inf when neither is set)."""
    return min(x for x in (limit_s, budget.seconds, math.inf) if x > 0)


# -- the two checkpoint formats ----------------------------------------------------------------


class NamedState:
    """MAML family, Reptile, ProtoNets: the whole module, the optimizer's state by parameter name
    and the scheduler's position (replayed on restore)."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, sched: Any) -> None:
        self.model, self.opt, self.sched = model, opt, sched

    def pack(self, step: int, elapsed_s: float) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        names = {id(p): n for n, p in self.model.named_parameters()}
        for group in self.opt.param_groups:
            for p in group["params"]:
                for k, v in self.opt.state.get(p, {}).items():
                    tensors[f"opt.{names[id(p)]}.{k}"] = torch.as_tensor(v)
        sched = self.sched.last_epoch if self.sched is not None else 0
        return tensors, {"step": step, "sched": sched, "elapsed_s": elapsed_s}

    def unpack(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> bool:
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items()
                                    if k.startswith("model.")})
        by_name = dict(self.model.named_parameters())
        # Adam keeps its moments on the parameters' device, and its step count there only when
        # capturable (CUDA graphs); the checkpoint holds them all on the CPU.
        on_device = self.opt.defaults.get("capturable", False)
        for k, v in tensors.items():
            if k.startswith("opt."):
                name, _, field = k[4:].rpartition(".")
                param = by_name[name]
                move = field != "step" or on_device
                self.opt.state[param][field] = v.to(param.device) if move else v.clone()
        if self.sched is not None:
            # Fast-forward the schedule; torch warns that no optimizer step came first, which is
            # the point here (the optimizer state was restored above).
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step")
                for _ in range(int(meta.get("sched", 0))):
                    self.sched.step()
        return True


class KeyedState:
    """Head-only learners and OML-sine: the learner's own state dict (its net and 'train.*'),
    the optimizer's state dict by index, and `key` (the training config's hash): a checkpoint
    with another key is ignored."""

    def __init__(self, learner: nn.Module, opt: torch.optim.Optimizer, key: str) -> None:
        self.learner, self.opt, self.key = learner, opt, key

    def pack(self, step: int, elapsed_s: float) -> tuple[dict[str, Tensor], dict[str, Any]]:
        sd = self.opt.state_dict()
        opt = {f"opt.{i}.{k}": (v if isinstance(v, Tensor) else torch.tensor(v))
               for i, st in sd["state"].items() for k, v in st.items()}
        return {**self.learner.state_dict(), **opt}, {
            "train_key": self.key, "step": step, "param_groups": sd["param_groups"],
            "elapsed_s": elapsed_s}

    def unpack(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> bool:
        if meta.get("train_key") != self.key:
            return False
        self.learner.load_state_dict({k: v for k, v in tensors.items()
                                      if k.startswith(("net.", "train."))})
        state: dict[int, dict[str, Tensor]] = {}
        for key, v in tensors.items():
            if key.startswith("opt."):
                _, i, k = key.split(".", 2)
                state.setdefault(int(i), {})[k] = v
        self.opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        return True
