"""`harness sweep GRID.toml`: the command, its display and its summary (rich lives here and in
the other cli modules only)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.sweep import Planned, Summary


def dry_run_table(planned: list[Planned]) -> Table:
    table = Table(title=f"{len(planned)} cells")
    for col in ("state", "scenario", "learner", "preset", "seed", "set", "run id"):
        table.add_column(col, overflow="fold")
    for p in planned:
        c = p.cell
        table.add_row(p.state, c.scenario, escape(c.learner), c.preset, str(c.seed),
                      escape(",".join(f"{k}={v}" for k, v in sorted(p.run.overrides.items()))),
                      p.run_id)
    return table


class Display:
    """done / running / failed / skipped with an ETA: a live line on a terminal, one log line
    per finished cell otherwise (a Slurm log, nohup, CI)."""

    def __init__(self, console: Console, total: int, workers: int, quiet: bool) -> None:
        self.console, self.total, self.workers, self.quiet = console, total, workers, quiet
        self.counts: Counter[str] = Counter()
        self.t0 = time.perf_counter()
        self.ran: list[float] = []
        self.live = console.is_terminal and not quiet
        self.status: Any = None

    def __enter__(self) -> Display:
        if self.live:
            self.status = self.console.status(self._line())
            self.status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(*exc)

    def _line(self) -> str:
        done = sum(self.counts.values())
        left = self.total - done
        running = min(self.workers, left)
        eta = ""
        if self.ran and left:
            per = sum(self.ran) / len(self.ran)
            eta = f", eta {per * left / max(1, self.workers) / 60:.1f} min"
        failed = sum(self.counts[s] for s in ("failed", "diverged", "timed_out", "error",
                                              "lost"))
        return (f"{done}/{self.total} done ({self.counts['ok']} ok, {failed} failed, "
                f"{self.counts['skipped']} skipped), {running} running{eta}")

    def __call__(self, kind: str, p: Planned, outcome: dict[str, Any]) -> None:
        status = outcome["status"]
        self.counts[status] += 1
        if kind == "done":
            self.ran.append(float(outcome.get("wall_s", 0.0)))
        if self.live:
            self.status.update(self._line())
        if not self.quiet and (kind == "done" or not self.live):
            err = f": {outcome['error']}" if outcome.get("error") else ""
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {status} {p.label} "
                               f"({outcome.get('wall_s', 0.0):.1f} s){err}",
                               markup=False, highlight=False, soft_wrap=True)
            if not self.live:
                self.console.print(self._line(), markup=False, highlight=False)


def summary_table(summary: Summary, planned: list[Planned]) -> Table:
    """Cells by scenario and learner: how many ended in each status."""
    rows: dict[tuple[str, str], Counter[str]] = {}
    for p in planned:
        o = summary.outcomes.get(p.run_id, {"status": "not run"})
        rows.setdefault((p.cell.scenario, p.cell.learner), Counter())[o["status"]] += 1
    statuses = sorted({s for c in rows.values() for s in c})
    table = Table(title=f"sweep: {len(planned)} cells in {summary.wall_s:.0f} s")
    for col in ("scenario", "learner", *statuses):
        table.add_column(col, justify="left" if col in ("scenario", "learner") else "right")
    for (scenario, learner), c in rows.items():
        table.add_row(scenario, escape(learner), *[str(c.get(s, 0)) for s in statuses])
    return table


def executor_for(kind: str, workers: int, address: str | None, cpus: float, gpus: float,
                 logs: Path, slurm: dict[str, Any], cells_per_job: int, max_running: int,
                 threads: int = 0) -> Any:
    """The executor the command line names; `threads` (--threads, 0: not given) for each local
    worker, else cores / workers."""
    from harness.errors import HarnessError  # noqa: PLC0415
    from harness.sweep import LocalPool, Ray, Serial, Submitit  # noqa: PLC0415

    if workers < 1 or cells_per_job < 1 or max_running < 1 or cpus <= 0 or gpus < 0:
        raise HarnessError("--workers, --cells-per-job and --max-running must be >= 1, "
                           "--cpus-per-cell > 0 and --gpus-per-cell >= 0")
    if kind == "serial":
        return Serial()
    if kind == "local":
        return LocalPool(workers=workers, threads=threads)
    if kind == "slurm":
        return Submitit(folder=logs, cells_per_job=cells_per_job, max_running=max_running,
                        params={k: v for k, v in slurm.items() if v is not None})
    if kind == "ray":
        return Ray(address=address, num_cpus=cpus, num_gpus=gpus)
    raise HarnessError(f"--executor {kind!r}: choose serial, local, slurm or ray")


def stderr_console() -> Console:
    return Console(stderr=True, width=None if sys.stderr.isatty() else 160)
