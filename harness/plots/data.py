"""What the figures of `harness plot` draw, gathered from a results folder: per scenario, its
variants (one set of scenario parameters each, in numeric order) and in each variant one `Line`
per complete learner configuration, with its leaderboard row (means and CIs over seeds), its
kept runs by seed and their raw arrays (`harness.results.load_arrays`).

No matplotlib here, and nothing is printed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import __version__
from harness.errors import HarnessError
from harness.leaderboard import (
    CONFIG_KEYS,
    kept_runs,
    leaderboard_table,
    load_runs,
    parse_params,
    variant_label,
    varying_keys,
)
from harness.results import load_arrays

_NOT_RUNS = frozenset({"leaderboard.csv", "oracle_drop.csv"})


@dataclass(frozen=True)
class Line:
    """One complete learner configuration in one variant: a line, bar or panel of a figure."""

    label: str
    """Legend label: the learner, with its preset or config hash where needed to tell apart."""
    board: pd.Series
    """Its `leaderboard_table` row: ``<metric>_mean`` and ``<metric>_ci95`` over seeds."""
    seeds: tuple[int, ...]
    csvs: tuple[Path, ...]
    """The run CSVs of `seeds`, in the same order."""
    values: pd.DataFrame
    """Per seed (index, in `seeds` order), the value of each metric (columns)."""

    def arrays(self, i: int = 0) -> dict[str, np.ndarray]:
        """The raw arrays of the run of ``seeds[i]`` (verified against its manifest)."""
        return _arrays(self.csvs[i])


@dataclass(frozen=True)
class Variant:
    """One set of scenario parameters of a scenario and the lines run on it."""

    scenario: str
    params: dict[str, Any]
    label: str
    """The parameters that tell the scenario's variants apart, e.g. ``n_classes=100``."""
    lines: tuple[Line, ...]
    """In leaderboard order (rank)."""
    versions: tuple[str, ...]
    """Harness versions of the runs."""

    @property
    def slug(self) -> str:
        """`label` for a file name: ``n_classes-100``."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.label.replace("=", "-").replace(", ", "_"))

    def metrics(self) -> set[str]:
        """The metrics with a mean in any line."""
        return {
            str(c)[: -len("_mean")]
            for line in self.lines
            for c, v in line.board.items()
            if str(c).endswith("_mean") and not pd.isna(v)
        }


@dataclass(frozen=True)
class Scenario:
    """A scenario (and version) of the results folder: its variants, in numeric order."""

    name: str
    keys: list[str]
    """The parameters that differ between its variants."""
    variants: tuple[Variant, ...]
    colors: dict[str, int] = field(default_factory=dict)
    """Line label -> colour index, the same in every figure of the scenario."""


@lru_cache(maxsize=512)
def _arrays(csv: Path) -> dict[str, np.ndarray]:
    return load_arrays(csv)


def gather(folder: Path) -> list[Scenario]:
    """The scenarios under `folder` (a scenario folder or a results root) with their complete
    runs, as the leaderboard keeps them (latest re-run, failed runs left out).

    Raises:
        HarnessError: as `load_runs`, or no complete run is left.
    """
    folder = Path(folder)
    runs = load_runs(folder)
    table = leaderboard_table(runs)
    table = table[(table["status"] == "complete") & (table["n_seeds"] > 0)]
    if table.empty:
        raise HarnessError(f"no complete run under {folder} to plot")
    kept = kept_runs(runs)
    kept = kept[kept["status"] == "complete"]
    paths = {p.stem: p for p in folder.rglob("*.csv") if p.name not in _NOT_RUNS}
    values = runs.drop_duplicates(["run_id", "metric"], keep="last").pivot(
        index="run_id", columns="metric", values="value"
    )
    scenarios = []
    for (name, version), rows in table.groupby(["scenario", "scenario_version"], sort=False):
        several = table.loc[table["scenario"] == name, "scenario_version"].nunique() > 1
        params = rows.get("scenario_params", pd.Series("", index=rows.index)).fillna("")
        keys = varying_keys([parse_params(p) for p in params])
        variants = []
        for text, sub in rows.groupby(params, sort=False):
            p = parse_params(text)
            label = variant_label(p, keys) + (f" v{version}" if several else "")
            lines = _lines(sub, kept, paths, values)
            found = kept[kept["run_id"].isin([r for line in lines for r in _ids(line)])]
            versions = tuple(sorted(set(found.get("harness_version", pd.Series(dtype=str)))))
            variants.append(Variant(name, p, label.strip(), tuple(lines), versions))
        labels = sorted({line.label for v in variants for line in v.lines})
        scenarios.append(
            Scenario(name, keys, tuple(variants), {lab: i for i, lab in enumerate(labels)})
        )
    return scenarios


def _ids(line: Line) -> list[str]:
    return [p.stem for p in line.csvs]


def _lines(
    rows: pd.DataFrame, kept: pd.DataFrame, paths: dict[str, Path], values: pd.DataFrame
) -> list[Line]:
    """A `Line` per leaderboard row of one variant, labelled so that no two are alike."""
    presets = rows["preset"].nunique() > 1
    twice = rows.duplicated(["learner", "preset"], keep=False)
    lines = []
    for (_, row), again in zip(rows.iterrows(), twice, strict=True):
        label = str(row["learner"]) + (f" ({row['preset']})" if presets else "")
        label += f" [{str(row['config_hash'])[:8]}]" if again else ""
        mine = kept[(kept[list(CONFIG_KEYS)] == row[list(CONFIG_KEYS)]).all(axis=1)]
        mine = mine[mine["run_id"].isin(list(paths))]
        seeds = tuple(int(s) for s in mine["seed"])
        per_seed = values.reindex(mine["run_id"]).set_axis(list(seeds), axis=0)
        csvs = tuple(paths[r] for r in mine["run_id"])
        lines.append(Line(label, row, seeds, csvs, per_seed))
    return lines


def seeds_text(seeds: Sequence[int]) -> str:
    """``seed 0``, ``seeds 0-4`` or ``seeds 0, 2, 5``."""
    s = sorted(set(seeds))
    if len(s) == 1:
        return f"seed {s[0]}"
    if s == list(range(s[0], s[-1] + 1)):
        return f"seeds {s[0]}-{s[-1]}"
    return "seeds " + ", ".join(str(x) for x in s)


def caption(variant: Variant, what: str, seeds: Sequence[int] | None = None) -> str:
    """Two lines: the scenario and its variant, what the figure shows; then the presets, the
    seeds (default: every line's) and the harness versions of the runs."""
    presets = sorted({str(line.board["preset"]) for line in variant.lines})
    if seeds is None:
        seeds = [s for line in variant.lines for s in line.seeds]
    versions = ", ".join(variant.versions) or __version__
    where = variant.scenario + (f", {variant.label}" if variant.label else "")
    return (
        f"{where}: {what}\n"
        f"preset {', '.join(presets)} · {seeds_text(seeds)} · harness {versions}"
    )
