"""`harness list [scenarios|learners|all]`: every scenario, and every learner family with the
task types it supports and its presets (avalanche:<Strategy> and module:Class included)."""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer

from harness.cli_common import ListWhat, guard, out
from harness.cli_tables import Col, FitTable


def avalanche_strategies() -> tuple[str, ...]:
    """The strategies the Avalanche adapter supports (its module's `STRATEGIES`), read without
    importing avalanche itself; () when the adapter cannot be imported."""
    from harness.registry import get_learner

    module = get_learner("avalanche:Naive").config.partition(":")[0]
    try:
        return tuple(importlib.import_module(module).STRATEGIES)
    except (ImportError, AttributeError):
        return ()


def _presets(entry: Any) -> str:
    from harness.errors import HarnessError

    try:
        return ", ".join(entry.presets()) or "-"
    except HarnessError:  # its module needs an extra that is not installed
        return "(needs an extra)"


def learner_rows() -> list[tuple[str, str, str, str]]:
    """(id, tasks, presets, summary) of every registered learner, each avalanche:<Strategy>,
    and module:Class."""
    from harness.registry import BOTH, get_learner, list_learners

    rows = [(e.id, ", ".join(e.tasks), _presets(e), e.summary) for e in list_learners()]
    strategies = avalanche_strategies()
    for s in strategies:
        e = get_learner(f"avalanche:{s}")
        rows.append((e.id, ", ".join(e.tasks), _presets(e),
                     f"Avalanche's {s} strategy in the harness loop (the avalanche extra)"))
    if not strategies:
        rows.append(("avalanche:<Strategy>", "classification", "quick",
                     "an Avalanche strategy (the avalanche extra)"))
    rows.append(("module:Class", ", ".join(BOTH), "its Config's PRESETS",
                 "your own learner class or config (check it: harness check module:Class)"))
    return rows


def _table(title: str, headers: list[str], rows: list[tuple[str, ...]]) -> FitTable:
    cols = [Col(headers[0], [r[0] for r in rows], keep=True, justify="left")]
    cols += [Col(h, [r[i] for r in rows], wrap=True, keep=True, justify="left")
             for i, h in enumerate(headers[1:], 1)]
    return FitTable(title, cols)


def list_cmd(what: Annotated[ListWhat, typer.Argument(help="What to list.")] = ListWhat.all
             ) -> None:
    """List the scenarios, and the learners with their task types and presets."""
    with guard():
        from harness.registry import list_scenarios

        if what in (ListWhat.scenarios, ListWhat.all):
            out.print(_table("scenarios (--scenario)", ["scenario", "summary"],
                             [(e.id, e.summary) for e in list_scenarios()]))
        if what in (ListWhat.learners, ListWhat.all):
            out.print(_table("learners (--learner; --preset is per learner: see presets)",
                             ["learner", "tasks", "presets", "summary"], learner_rows()))
