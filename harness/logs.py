"""Progress as log records: the `progress(phase, done, total, info)` callback of the library
(`harness.config.Progress`) turned into lines of the standard `logging` module, logger
"harness", for output that is not a terminal (nohup, Slurm, CI) and for notebooks.

The library only emits records; it installs no handler and prints nothing. The command line
installs one (`harness.cli_common.logging_to_stderr`); elsewhere, `logging.basicConfig(
level=logging.INFO)` shows them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

LOGGER_NAME = "harness"
logger = logging.getLogger(LOGGER_NAME)


def info_text(info: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in info.items())


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class _Phase:
    started: float
    first_done: int
    last_logged: float
    next_step: int
    """The `done` count at which the next ~10% line is due."""
    done: int = 0


@dataclass
class LogProgress:
    """A `Progress` callback that logs one line when a phase starts, one when it ends, and in
    between, for a long phase, one every `fraction` of it or every `every_s` seconds,
    whichever comes first, but never two within `min_gap_s` (a phase of a second logs its
    start and end only); with the rate and the time left. `clock` is injectable for tests."""

    every_s: float = 30.0
    fraction: float = 0.1
    min_gap_s: float = 2.0
    level: int = logging.INFO
    clock: Callable[[], float] = time.monotonic
    _phases: dict[str, _Phase] = field(default_factory=dict)

    def __call__(self, phase: str, done: int, total: int, info: dict[str, float]) -> None:
        if not logger.isEnabledFor(self.level):
            return
        now = self.clock()
        p = self._phases.get(phase)
        if p is None or done < p.done:  # a new phase, or the same name started again
            p = _Phase(now, done, now, 0)
            self._phases[phase] = p
            logger.log(self.level, "%s: started (%d of %d)", phase, done, total)
            p.next_step = self._next(done, total)
        p.done = done
        if total > 0 and done >= total:
            logger.log(self.level, "%s: done, %d of %d in %s%s", phase, done, total,
                       _duration(now - p.started), self._tail(info))
            del self._phases[phase]
        elif ((done >= p.next_step and now - p.last_logged >= self.min_gap_s)
              or now - p.last_logged >= self.every_s):
            logger.log(self.level, "%s: %d of %d (%.0f%%)%s%s", phase, done, total,
                       100.0 * done / max(total, 1), self._eta(p, now, done, total),
                       self._tail(info))
            p.last_logged, p.next_step = now, self._next(done, total)

    def _next(self, done: int, total: int) -> int:
        step = max(1, int(total * self.fraction))
        return (done // step + 1) * step

    @staticmethod
    def _eta(p: _Phase, now: float, done: int, total: int) -> str:
        ran, elapsed = done - p.first_done, now - p.started
        if ran <= 0 or elapsed <= 0:
            return ""
        rate = ran / elapsed
        return f", {rate:.3g}/s, eta {_duration((total - done) / rate)}"

    @staticmethod
    def _tail(info: dict[str, float]) -> str:
        text = info_text(info)
        return f", {text}" if text else ""
