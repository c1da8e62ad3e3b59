"""What runs one cell, in whatever process an executor gives it (a pool worker, a Slurm job, a
Ray task). It is the only code path: every executor calls `run_cell`."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

from harness import fileio
from harness.errors import HarnessError
from harness.results import safe_id
from harness.run_config import RunConfig


@dataclass(frozen=True)
class Job:
    """One cell to run: its index in the plan, its config and its expected run id."""

    index: int
    run: RunConfig
    run_id: str
    threads: int = 0
    """torch threads for the process running it (0: leave as is)."""


def run_cell(job: Job) -> dict[str, Any]:
    """Run one cell unless its result is already there; never raises.

    A lock per run id (in the results folder's `.locks/`) makes two sweeps into one folder run
    a cell once: the second waits, finds the result and skips it. Returns the outcome:
    {index, run_id, status, error, wall_s}; status 'skipped' when another sweep finished it,
    'error' when the cell's input is bad (the message says why).
    """
    import torch  # noqa: PLC0415

    from harness.experiment import execute  # noqa: PLC0415
    from harness.sweep.plan import result_state  # noqa: PLC0415

    if job.threads:
        torch.set_num_threads(job.threads)
    folder = job.run.out_dir / safe_id(job.run.scenario)
    t0 = time.perf_counter()
    out: dict[str, Any] = {"index": job.index, "run_id": job.run_id, "error": ""}
    try:
        with fileio.exclusive(folder / ".locks" / f"{job.run_id}.lock"):
            if result_state(folder / f"{job.run_id}.csv") == "ok":
                return {**out, "status": "skipped", "wall_s": 0.0}
            res = execute(job.run)
        out.update(status=res.status, error=(res.error.strip().splitlines() or [""])[0],
                   run_id=res.run_id)
    except HarnessError as e:
        out.update(status="error", error=str(e))
    except Exception as e:  # noqa: BLE001  (a worker reports, it never dies of a cell)
        out.update(status="error", error=f"{type(e).__name__}: {e}",
                   trace=traceback.format_exc())
    out["wall_s"] = time.perf_counter() - t0
    return out


def run_cells(jobs: list[Job]) -> list[dict[str, Any]]:
    """Several cells one after another (one Slurm job of a job array)."""
    return [run_cell(job) for job in jobs]
