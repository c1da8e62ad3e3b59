"""What bounds a run and what it used: the wall-clock limit (`--timeout`) and peak memory."""

from __future__ import annotations

import resource
import signal
import threading
from typing import Any

from harness.errors import HarnessError, RunTimeout


class Deadline:
    """`--timeout`: raise RunTimeout in the main thread after `seconds` (0 = no limit)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> Deadline:
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


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
