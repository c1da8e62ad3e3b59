"""`harness sweep GRID.toml`: the command, its display and its summary (rich lives here and in
the other cli modules only)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from harness.cli_common import (
    STATE,
    CacheOpt,
    DataOpt,
    DebugOpt,
    Executor,
    QuietOpt,
    ThreadsOpt,
    VerboseOpt,
    command_setup,
    err,
    guard,
    out,
)
from harness.cli_tables import Col, FitTable

if TYPE_CHECKING:  # harness.sweep imports torch: not for `harness --help`
    from harness.sweep import Planned, Summary

log = logging.getLogger("harness")


def dry_run_table(planned: list[Planned]) -> FitTable:
    sets = [",".join(f"{k}={v}" for k, v in sorted(p.run.overrides.items())) for p in planned]
    cols = [Col("state", [p.state for p in planned], keep=True, justify="left"),
            Col("scenario", [p.cell.scenario for p in planned], priority=3, justify="left"),
            Col("learner", [p.cell.learner for p in planned], keep=True, justify="left"),
            Col("preset", [p.cell.preset for p in planned], priority=2, justify="left"),
            Col("seed", [str(p.cell.seed) for p in planned], priority=4),
            Col("set", sets, priority=1, justify="left"),
            Col("run id", [p.run_id for p in planned], keep=True, justify="left")]
    return FitTable(f"{len(planned)} cells", cols)


class Display:
    """done / running / failed / skipped with an ETA: a live line on a terminal, one log line
    per finished cell otherwise (a Slurm log, nohup, CI), through the "harness" logger."""

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
        why = f": {outcome['error']}" if outcome.get("error") else ""
        line = f"{status} {p.label} ({outcome.get('wall_s', 0.0):.1f} s){why}"
        if self.live:
            self.status.update(self._line())
            if kind == "done":
                self.console.print(f"[{time.strftime('%H:%M:%S')}] {line}", markup=False,
                                   highlight=False, soft_wrap=True)
        elif not self.quiet:
            log.info("%s; %s", line, self._line())


def summary_table(summary: Summary, planned: list[Planned]) -> FitTable:
    """Cells by scenario and learner: how many ended in each status."""
    rows: dict[tuple[str, str], Counter[str]] = {}
    for p in planned:
        o = summary.outcomes.get(p.run_id, {"status": "not run"})
        rows.setdefault((p.cell.scenario, p.cell.learner), Counter())[o["status"]] += 1
    statuses = sorted({s for c in rows.values() for s in c})
    cols = [Col("scenario", [s for s, _ in rows], keep=True, justify="left"),
            Col("learner", [learner for _, learner in rows], keep=True, justify="left")]
    cols += [Col(s, [str(c.get(s, 0)) for c in rows.values()], keep=True) for s in statuses]
    return FitTable(f"sweep: {len(planned)} cells in {summary.wall_s:.0f} s", cols)


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
    kind = Executor(kind).value if isinstance(kind, Executor) else kind
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


def _opt(flag: str, text: str) -> Any:
    return typer.Option(flag, help=text)


def sweep_cmd(
    grid: Annotated[Path, typer.Argument(help="Grid file (.toml): scenarios x learners x seeds "
                                         "x presets x --set values; see docs/design.md D7.")],
    out_dir: Annotated[str | None, _opt(
        "--out", "Results root (default: the grid's `out`, else results).")] = None,
    cache_dir: CacheOpt = None, data_dir: DataOpt = None,
    executor: Annotated[Executor, _opt("--executor", "Where the cells run.")] = Executor.serial,
    workers: Annotated[int, _opt("--workers", "local: worker processes.")] = 2,
    dry_run: Annotated[bool, _opt(
        "--dry-run", "Print the cells, their run ids and states; run nothing.")] = False,
    retry_failed: Annotated[bool, _opt(
        "--retry-failed", "Also run again the cells that failed, diverged or timed out.")
    ] = False,
    address: Annotated[str | None, _opt(
        "--address", "ray: auto or HOST:PORT of a running cluster (default: a local one).")
    ] = None,
    cpus: Annotated[float, _opt("--cpus-per-cell", "ray/slurm: CPUs per cell.")] = 1,
    gpus: Annotated[float, _opt("--gpus-per-cell", "ray/slurm: GPUs per cell.")] = 0,
    partition: Annotated[str | None, _opt("--partition", "slurm: partition.")] = None,
    time_min: Annotated[int, _opt("--time-min", "slurm: minutes per job.")] = 60,
    cells_per_job: Annotated[int, _opt(
        "--cells-per-job", "slurm: cells run one after another in one array task.")] = 1,
    max_running: Annotated[int, _opt("--max-running", "slurm: array tasks running at once.")
                           ] = 8,
    threads: ThreadsOpt = None, quiet: QuietOpt = False, verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run every cell of a grid that is missing; a killed sweep started again resumes."""
    with guard(debug), command_setup(threads, quiet, verbose):
        from harness import cli_inputs as inputs
        from harness.cli_results import show_leaderboard
        from harness.experiment import RunConfig
        from harness.sweep import load_grid, plan_cells, run_sweep

        cells, options = load_grid(grid)
        root = inputs.writable(out_dir or str(options.get("out", "results")), "--out")
        cache = inputs.writable(cache_dir, "--cache-dir") if cache_dir is not None else None
        base = RunConfig(scenario="", learner="", out_dir=root, cache_dir=cache,
                         data_dir=data_dir)
        planned = plan_cells(cells, base)
        if dry_run:
            out.print(dry_run_table(planned))
            return
        slurm = {"timeout_min": time_min, "slurm_partition": partition,
                 "cpus_per_task": max(1, int(cpus)), "gpus_per_node": int(gpus) or None}
        ex = executor_for(executor.value, workers, address, cpus, gpus, root / ".sweep-logs",
                          slurm, cells_per_job, max_running, STATE["threads"])
        with Display(err, len(planned), ex.workers, quiet or STATE["quiet"]) as display:
            summary = run_sweep(planned, ex, retry_failed, display)
        out.print(summary_table(summary, planned))
        for folder in sorted({p.csv.parent for p in planned}):
            show_leaderboard(folder)
        if not summary.ok:
            raise typer.Exit(1)
