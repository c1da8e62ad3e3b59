"""Sweeps: whole grids of runs, resumable, on a local pool, Slurm (submitit) or Ray
(docs/design.md D7).

    cells, options = load_grid(Path("grid.toml"))
    planned = plan_cells(cells, RunConfig(scenario="", learner="", out_dir=Path("results")))
    summary = run_sweep(planned, LocalPool(workers=2))
"""

from harness.sweep.engine import Summary, run_sweep, to_run
from harness.sweep.executors import LocalPool, Ray, Serial, Submitit
from harness.sweep.grid import Cell, load_grid
from harness.sweep.plan import Planned, plan_cells, result_state

__all__ = ["Cell", "LocalPool", "Planned", "Ray", "Serial", "Submitit", "Summary", "load_grid",
           "plan_cells", "result_state", "run_sweep", "to_run"]
