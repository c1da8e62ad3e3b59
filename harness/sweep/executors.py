"""Where cells run: one small interface, four executors, one code path (`worker.run_cell`).

`Executor.map(jobs)` yields `(job, outcome)` as cells finish, in any order. A cell whose
process died (killed, out of memory) comes back with status 'lost'; the sweep, not the engine
(Ray's or Slurm's retry rules are switched off), decides to run it again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

from harness.errors import HarnessError
from harness.sweep.worker import Job, run_cell, run_cells

Outcome = dict[str, Any]


class Executor(Protocol):
    name: str
    workers: int
    """How many cells run at once (for the display's ETA)."""

    def map(self, jobs: list[Job]) -> Iterator[tuple[Job, Outcome]]: ...


def _lost(job: Job, why: str) -> Outcome:
    return {"index": job.index, "run_id": job.run_id, "status": "lost", "error": why,
            "wall_s": 0.0}


@dataclass
class Serial:
    """In this process, one cell after another (the default)."""

    name: str = "serial"
    workers: int = 1

    def map(self, jobs: list[Job]) -> Iterator[tuple[Job, Outcome]]:
        for job in jobs:
            yield job, run_cell(job)


def threads_per_worker(workers: int) -> int:
    """torch threads per worker so that workers never oversubscribe the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


@dataclass
class LocalPool:
    """A pool of `workers` processes on this machine (spawned, so no torch state is forked),
    each with `threads` torch threads (default: the cores divided by the workers)."""

    workers: int = 2
    threads: int = 0
    name: str = "local"

    def map(self, jobs: list[Job]) -> Iterator[tuple[Job, Outcome]]:
        threads = self.threads or threads_per_worker(self.workers)
        with ProcessPoolExecutor(max_workers=self.workers,
                                 mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_cell, Job(j.index, j.run, j.run_id, threads)): j
                       for j in jobs}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = futures[fut]
                    try:
                        yield job, fut.result()
                    except BrokenProcessPool:
                        yield job, _lost(job, "a worker process died (killed or out of memory)")


@dataclass
class Submitit:
    """Slurm job arrays through submitit (`cluster='local'`: submitit's LocalExecutor, for
    tests and single machines). `cells_per_job` cells run one after another in each array
    task; at most `max_running` tasks run at once. Logs go to `folder`."""

    folder: Path
    cluster: str | None = None
    """None: Slurm when available (submitit.AutoExecutor); 'local' or 'debug' to test."""
    cells_per_job: int = 1
    max_running: int = 8
    params: dict[str, Any] = field(default_factory=dict)
    """submitit parameters, e.g. timeout_min, slurm_partition, gpus_per_node, cpus_per_task."""
    poll_s: float = 2.0
    name: str = "slurm"

    @property
    def workers(self) -> int:
        return self.max_running

    def map(self, jobs: list[Job]) -> Iterator[tuple[Job, Outcome]]:
        try:
            import submitit  # noqa: PLC0415
        except ImportError:
            raise HarnessError("--executor slurm needs submitit; pip install -e '.[slurm]'"
                               ) from None
        ex = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        threads = int(self.params.get("cpus_per_task", 1))
        ex.update_parameters(name="harness-sweep", slurm_array_parallelism=self.max_running,
                             **self.params)
        chunks = [[Job(j.index, j.run, j.run_id, threads) for j in jobs[i:i + self.cells_per_job]]
                  for i in range(0, len(jobs), self.cells_per_job)]
        submitted = dict(zip(ex.map_array(run_cells, chunks), chunks, strict=True))
        while submitted:
            for sub in [s for s in submitted if s.done()]:
                chunk = submitted.pop(sub)
                try:
                    outcomes = sub.result()
                except Exception as e:  # noqa: BLE001  (the job died: its cells are lost)
                    outcomes = [_lost(j, f"job {sub.job_id}: {type(e).__name__}") for j in chunk]
                yield from zip(chunk, outcomes, strict=True)
            if submitted:
                time.sleep(self.poll_s)


@dataclass
class Ray:
    """One Ray task per cell (`num_cpus`, `num_gpus` each), results streamed back as they
    finish. `address`: 'auto' or HOST:PORT of a running cluster (`ray start`); None starts a
    local one with `init` options (tests: num_cpus, object_store_memory, _temp_dir)."""

    address: str | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    init: dict[str, Any] = field(default_factory=dict)
    name: str = "ray"
    workers: int = 1

    def map(self, jobs: list[Job]) -> Iterator[tuple[Job, Outcome]]:
        try:
            import ray  # noqa: PLC0415
        except ImportError:
            raise HarnessError("--executor ray needs ray; pip install -e '.[ray]'") from None
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     **self.init)
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1) // self.num_cpus))
        task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0)(
            run_cell)
        threads = max(1, int(self.num_cpus))
        refs = {task.remote(Job(j.index, j.run, j.run_id, threads)): j for j in jobs}
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                job = refs.pop(done[0])
                try:
                    yield job, ray.get(done[0])
                except Exception as e:  # noqa: BLE001  (the task's worker died)
                    yield job, _lost(job, f"ray: {type(e).__name__}")
        finally:
            if started:
                ray.shutdown()
