"""A grid's cells named and checked before anything runs: each cell's run id (as `execute`
would name it), and whether its result already exists."""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

from harness.building import split_overrides
from harness.experiment import plan
from harness.protocol import Scenario
from harness.registry import get_learner, get_scenario
from harness.results import safe_id, verify_run
from harness.run_config import RunConfig
from harness.sweep.grid import Cell


@dataclass(frozen=True)
class Planned:
    """A cell with its run config, run id and the state of its result files."""

    cell: Cell
    run: RunConfig
    run_id: str
    state: str
    """'missing', 'ok', 'partial', 'failed', 'diverged', 'timed_out' or 'invalid' (files that
    do not verify: run again)."""

    @property
    def label(self) -> str:
        """'scenario learner preset sN [key=value,...]' with the --set pairs the run uses."""
        sets = ",".join(f"{k}={v}" for k, v in sorted(self.run.overrides.items()))
        c = self.cell
        return f"{c.scenario} {c.learner} {c.preset} s{c.seed}" + (f" [{sets}]" if sets else "")

    @property
    def csv(self) -> Path:
        return self.run.out_dir / safe_id(self.run.scenario) / f"{self.run_id}.csv"


def result_state(csv_path: Path) -> str:
    """The status of the run whose CSV is `csv_path`: 'missing' when there is none, 'invalid'
    when its files do not verify, else the status its rows record."""
    if not csv_path.exists():
        return "missing"
    if verify_run(csv_path):
        return "invalid"
    with csv_path.open(newline="") as f:
        first = next(csv.DictReader(f), None) or {}
    # A run file written before statuses existed holds only finished runs.
    return first.get("status") or "ok"


def run_config(cell: Cell, base: RunConfig) -> RunConfig:
    """The cell's RunConfig: a --set key goes to the cell when its scenario or its learner has
    that parameter, as `harness compare` routes them (`plan_cells` refuses a key no cell of
    the grid can use)."""
    from harness.config import field_names  # noqa: PLC0415

    known = (field_names(get_scenario(cell.scenario).config_class())
             | field_names(get_learner(cell.learner).config_class()))
    mine = {k: v for k, v in cell.overrides if k.split(".", 1)[-1] in known}
    return replace(base, scenario=cell.scenario, learner=cell.learner, seed=cell.seed,
                   preset=cell.preset, overrides=mine, device=cell.device,
                   eval_every=cell.eval_every, tune_lr=cell.tune_lr, timeout_s=cell.timeout_s)


def _unused_keys(cells: list[Cell], runs: list[RunConfig]) -> set[str]:
    given = {k for c in cells for k, _ in c.overrides}
    used = {k for r in runs for k in r.overrides}
    return given - used


def plan_cells(cells: list[Cell], base: RunConfig) -> list[Planned]:
    """Every cell's run id and result state; bad input (an unknown learner, a key no cell can
    use, a preset a learner lacks) is a HarnessError before anything runs. The scenario of
    each (scenario, seed, parameters) is built once."""
    from harness.errors import HarnessError  # noqa: PLC0415

    runs = [run_config(c, base) for c in cells]
    unused = _unused_keys(cells, runs)
    if unused:
        raise HarnessError(f"--set {', '.join(sorted(unused))}: no scenario or learner of the "
                           "grid has this parameter; check the spelling")
    built: dict[tuple, Scenario] = {}
    out: dict[str, Planned] = {}  # by run id: cells that differ only in keys they ignore
    for cell, run in zip(cells, runs, strict=True):
        s_over, _ = split_overrides(run.overrides, get_scenario(run.scenario).config_class(),
                                    get_learner(run.learner).config_class())
        key = (run.scenario, run.seed, tuple(sorted(s_over.items())))
        p = plan(run, built.get(key))
        built[key] = p.scenario
        csv = run.out_dir / safe_id(p.scenario.id) / f"{p.run_id}.csv"
        out.setdefault(p.run_id, Planned(cell=cell, run=run, run_id=p.run_id,
                                         state=result_state(csv)))
    return list(out.values())
