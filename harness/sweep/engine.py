"""A sweep: run what a grid is missing, on any executor, and say how it went.

A cell whose result exists with status `ok` is skipped, so a sweep started again after any
interruption does only what is missing. A `failed`, `diverged` or `timed_out` cell is kept
(its error is in its run file) unless `retry_failed`; a `partial` one (meta-training stopped
by a time limit) runs again and resumes its checkpoint. A cell whose process died is run again
once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.sweep.executors import Executor
from harness.sweep.plan import Planned
from harness.sweep.worker import Job

FAILED = ("failed", "diverged", "timed_out")

Event = Callable[[str, Planned, dict[str, Any]], None]
"""on_event(kind, cell, outcome): kind is 'skip' (before running) or 'done'."""


@dataclass
class Summary:
    """How a sweep went: the final state of every cell, by run id."""

    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    wall_s: float = 0.0

    def counts(self) -> Counter[str]:
        return Counter(o["status"] for o in self.outcomes.values())

    @property
    def ok(self) -> bool:
        return all(o["status"] in ("ok", "skipped", "partial") for o in self.outcomes.values())


def to_run(planned: list[Planned], retry_failed: bool) -> tuple[list[Planned], list[Planned]]:
    """(cells to run, cells to skip) of a plan."""
    keep = {"ok"} | (set() if retry_failed else set(FAILED))
    run = [p for p in planned if p.state not in keep]
    return run, [p for p in planned if p.state in keep]


def run_sweep(planned: list[Planned], executor: Executor, retry_failed: bool = False,
              on_event: Event | None = None) -> Summary:
    """Run the cells of `planned` that are missing; every outcome lands in its run files."""
    t0 = time.perf_counter()
    summary = Summary()
    todo, _ = to_run(planned, retry_failed)
    by_index = {}
    for i, p in enumerate(planned):
        if p in todo:
            by_index[i] = p
            continue
        outcome = {"index": i, "run_id": p.run_id, "error": "",
                   "status": "skipped" if p.state == "ok" else p.state, "wall_s": 0.0}
        summary.outcomes[p.run_id] = outcome
        if on_event is not None:
            on_event("skip", p, outcome)
    jobs = [Job(i, p.run, p.run_id) for i, p in by_index.items()]
    for attempt in range(2):
        lost = []
        for job, outcome in executor.map(jobs):
            p = by_index[job.index]
            if outcome["status"] == "lost" and attempt == 0:
                lost.append(job)
                continue
            summary.outcomes[p.run_id] = outcome
            if on_event is not None:
                on_event("done", p, outcome)
        if not lost:
            break
        jobs = lost
    summary.wall_s = time.perf_counter() - t0
    return summary
