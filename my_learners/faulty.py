"""Learners with the bugs users write, for the fault-injection tests: the harness must turn each
into a clear `failed` / `timed_out` row (or a failed `harness check`), never into a crash of a
whole comparison, an exit code 0, or a silently changed number of another learner.

Each is a small online linear model (`my_learners.toy.Linear`) with one defect.
"""

from __future__ import annotations

import sys
import time

import torch
from torch import Tensor

from harness.protocol import ScenarioSpec
from my_learners.toy import Linear


class PredictInPlace(Linear):
    """Applies an in-place ReLU to its input in predict: without copies, every learner after
    it in a comparison would be scored on altered test data."""

    def predict(self, x: Tensor) -> Tensor:
        torch.relu_(x)
        return super().predict(x)


class ObserveKeyError(Linear):
    """Looks up a per-class counter that was never created."""

    def __init__(self, spec: ScenarioSpec) -> None:
        super().__init__(spec)
        self.counts: dict[int, int] = {}

    def observe(self, x: Tensor, y: Tensor) -> None:
        self.counts[int(y[0])] += 1  # KeyError on the first sample
        super().observe(x, y)


class ObserveZeroDivision(Linear):
    """Divides by the number of samples seen before counting the current ones."""

    def __init__(self, spec: ScenarioSpec) -> None:
        super().__init__(spec)
        self.seen = 0

    def observe(self, x: Tensor, y: Tensor) -> None:
        self.rate = 1.0 / self.seen  # ZeroDivisionError on the first call
        self.seen += len(x)
        super().observe(x, y)


class ObserveAssertion(Linear):
    """Asserts a batch size the stream does not have (batch 1)."""

    def observe(self, x: Tensor, y: Tensor) -> None:
        assert len(x) >= 8, f"expected batches of at least 8 samples, got {len(x)}"
        super().observe(x, y)


class InitOSError(Linear):
    """Reads a file that is not there while being built."""

    def __init__(self, spec: ScenarioSpec) -> None:
        super().__init__(spec)
        with open("/nonexistent/faulty-learner-weights.bin", "rb") as f:
            self.weights = f.read()


class ObserveExit(Linear):
    """Calls sys.exit(0) in observe, e.g. left over from a debugging session of its author."""

    def observe(self, x: Tensor, y: Tensor) -> None:
        sys.exit(0)


class Interrupted(Linear):
    """Raises KeyboardInterrupt in observe, as Ctrl-C does: this stops the harness."""

    def observe(self, x: Tensor, y: Tensor) -> None:
        raise KeyboardInterrupt


class PredictLabels(Linear):
    """Returns predicted labels [B] instead of logits [B, C]."""

    def predict(self, x: Tensor) -> Tensor:
        return super().predict(x).argmax(dim=1)


class SlowObserve(Linear):
    """Sleeps half a second per observation: a stream of a few hundred samples takes minutes,
    so only a time limit (--timeout) ends it."""

    def observe(self, x: Tensor, y: Tensor) -> None:
        time.sleep(0.5)
        super().observe(x, y)


class MemoryHog(Linear):
    """Asks for 1 TiB in observe. The allocation is refused (by the system, or by an address
    space limit) before a byte is touched, so running it costs no memory."""

    def observe(self, x: Tensor, y: Tensor) -> None:
        self.buffer = torch.empty(1 << 40, dtype=torch.uint8)
        super().observe(x, y)
