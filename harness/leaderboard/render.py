"""The leaderboard as tables and files: `leaderboard_table` (one row per configuration, the
rows of ``leaderboard.csv``), its Markdown (`to_markdown`, `leaderboard_markdown`,
`oracle_drops_markdown`) and `write_leaderboard`, which writes ``leaderboard.csv``,
``leaderboard.md`` and ``oracle_drop.csv`` with `harness.fileio.atomic_write_text`.

Strings and files only; nothing is printed (`cli.py` renders for the terminal).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.fileio import atomic_write_text
from harness.leaderboard.aggregate import (
    _SCENARIO,
    CONFIG_KEYS,
    GROUP_KEYS,
    PRIMARY_METRICS,
    _carried,
    _clean_rows,
    _config_counts,
    _extra_columns,
    _prepare,
    _rank_within,
    _run_table,
    _unknown,
    aggregate,
    is_higher_better,
)
from harness.leaderboard.load import load_runs
from harness.leaderboard.pairing import (
    _DROP_KEYS,
    oracle_drops,
    unpaired_oracle_notes,
    unpaired_oracle_runs,
)

PARTIAL_TITLE = "Partial runs: meta-training stopped early (steps done of steps asked); not ranked"
"""Heading of the partial runs' table in ``leaderboard.md``."""

_STEPS = "steps done of asked"

_DROP_NOTE = (
    "(oracle - stream) / oracle per seed, on the same stream; mean ± 95% CI over "
    "seeds. The oracle trains the same output layer on the same frozen features with "
    "the same samples shuffled i.i.d. (OML/ANML).\n\n"
)


# ----------------------------------------------------------------------------------------------
# The leaderboard table


def leaderboard_table(
    runs: pd.DataFrame,
    primary_metric: str | None = None,
    metrics: list[str] | None = None,
    higher_is_better: bool | None = None,
) -> pd.DataFrame:
    """One row per configuration with mean and CI of each metric, ranked; plain numbers.

    Args:
        runs: tidy run rows, e.g. from `load_runs`.
        primary_metric: metric to rank by. Default, per scenario: the first of
            `PRIMARY_METRICS` that the scenario reports, else the first of `metrics` it reports.
        metrics: metrics to show (default: all). The primary metric is always shown.
        higher_is_better: direction of `primary_metric`; default from `is_higher_better`.

    Returns:
        Columns: the `CONFIG_KEYS`, ``rank`` (1 = best among the complete groups of the same
        scenario, version and scenario parameters; NA for partial groups), ``status``
        ('complete' or 'partial'), ``rank_by`` (the metric ranked on), ``n_seeds`` (finished
        runs kept), ``failed``, ``duplicates_dropped``, then ``<metric>_mean`` and
        ``<metric>_ci95`` per metric, then provenance columns that are constant within the
        group. Sorted by scenario, version, status (complete first), scenario parameters and
        rank (unranked last). Groups whose runs all failed are listed, unranked.

    Raises:
        HarnessError: unknown metric, or no primary metric can be chosen for a scenario.
    """
    shown = None if metrics is None else list(dict.fromkeys(metrics))
    if shown is not None and primary_metric is not None and primary_metric not in shown:
        shown = [primary_metric, *shown]
    agg = aggregate(runs, shown)
    if primary_metric is not None and primary_metric not in set(agg["metric"]):
        raise _unknown("metric", primary_metric, sorted(set(agg["metric"])))

    df = _prepare(runs)
    per_run = _run_table(df)
    table = _config_counts(per_run).rename(columns={"n_runs": "n_seeds"})
    chosen = _primary_metrics(agg, primary_metric, shown)
    table["rank_by"] = [
        chosen.get((s, v), "")
        for s, v in zip(table["scenario"], table["scenario_version"], strict=True)
    ]
    table = table.merge(_wide_metrics(agg, chosen, shown), on=list(GROUP_KEYS), how="left")

    rows = _clean_rows(df, per_run)
    taken = [*table.columns, "rank", "mean", "sd", "ci95", "ci_low", "ci_high", "n"]
    carried = _carried(rows, list(GROUP_KEYS), _extra_columns(df, taken))
    table = table.merge(carried, on=list(GROUP_KEYS), how="left")
    return _ranked(table, chosen, higher_is_better if primary_metric else None)


def _primary_metrics(
    agg: pd.DataFrame, primary_metric: str | None, shown: list[str] | None
) -> dict[tuple[str, str], str]:
    """(scenario, scenario_version) -> the metric to rank it by: `primary_metric`, else the
    first of `PRIMARY_METRICS`, then of `shown`, that the scenario reports."""
    scen_metrics = agg[agg["n_seeds"] > 0].groupby(_SCENARIO)["metric"].agg(set)
    chosen: dict[tuple[str, str], str] = {}
    for scen, present in scen_metrics.items():
        candidates = [primary_metric] if primary_metric else [*PRIMARY_METRICS, *(shown or [])]
        pick = next((m for m in candidates if m in present), None)
        if pick is None:
            raise HarnessError(
                f"no primary metric to rank scenario {scen[0]!r} by (none of "
                f"{', '.join(PRIMARY_METRICS)} is reported; it reports "
                f"{', '.join(sorted(present))}); pass primary_metric"
            )
        chosen[scen] = pick
    return chosen


def _wide_metrics(
    agg: pd.DataFrame, chosen: dict[tuple[str, str], str], shown: list[str] | None
) -> pd.DataFrame:
    """Per group, ``<metric>_mean`` and ``<metric>_ci95`` columns: the primary metrics first
    (those of `PRIMARY_METRICS` in its order), then `shown` (default: all, sorted)."""
    order = list(
        dict.fromkeys(
            [
                *[m for m in PRIMARY_METRICS if m in chosen.values()],
                *chosen.values(),
                *(shown or sorted(set(agg["metric"]))),
            ]
        )
    )
    order = [m for m in order if m in set(agg["metric"])]
    wide = agg.set_index([*GROUP_KEYS, "metric"])[["mean", "ci95"]].unstack("metric")
    wide.columns = [f"{m}_{stat}" for stat, m in wide.columns]
    return wide[[f"{m}_{stat}" for m in order for stat in ("mean", "ci95")]].reset_index()


def _ranked(
    table: pd.DataFrame, chosen: dict[tuple[str, str], str], higher_is_better: bool | None
) -> pd.DataFrame:
    """`table` with ``rank``, its columns and rows in leaderboard order.

    Ranks per scenario by its primary metric (`chosen`), among the complete entries run with
    the same scenario parameters (a 20-way episode set is not ranked against a 5-way one, a
    meta-training stopped early not against finished ones); direction `higher_is_better`,
    default from `is_higher_better`.
    """
    params = table["scenario_params"] if "scenario_params" in table else ""
    table["_params"] = pd.Series(params, index=table.index).fillna("").astype(str)
    table["rank"] = pd.Series(pd.NA, index=table.index, dtype="Int64")
    complete = table[table["status"] == "complete"]
    for (scen, version, _), idx in complete.groupby([*_SCENARIO, "_params"]).groups.items():
        metric = chosen.get((scen, version))
        if metric is None:
            continue
        higher = is_higher_better(metric) if higher_is_better is None else higher_is_better
        table.loc[idx, "rank"] = _rank_within(table.loc[idx], f"{metric}_mean", higher)

    front = [*CONFIG_KEYS, "rank", "status", "rank_by", "n_seeds", "failed", "duplicates_dropped"]
    table = table.sort_values(
        [*_SCENARIO, "status", "_params", "rank", "learner", "preset", "config_hash"],
        na_position="last",
    )
    table = table[[*front, *[c for c in table.columns if c not in (*front, "_params")]]]
    return table.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Markdown (strings only; nothing is printed)


def to_markdown(table: pd.DataFrame) -> str:
    """Render a `leaderboard_table` as a Markdown table (without the `tabulate` package).

    Each ``<metric>_mean`` / ``<metric>_ci95`` pair becomes one ``<metric>`` column with
    ``mean ± ci95`` cells to 3 decimals (the mean alone where the CI is NaN, empty where the
    mean is NaN). Other float cells use ``%g``; missing cells are empty; ``|`` is escaped.

    Returns:
        The Markdown text, ending with a newline.
    """
    pairs = {
        c[: -len("_mean")]
        for c in table.columns
        if c.endswith("_mean") and f"{c[: -len('_mean')]}_ci95" in table.columns
    }
    headers: list[str] = []
    columns: list[list[str]] = []
    right: list[bool] = []
    for col in table.columns:
        name = str(col)
        if name.endswith("_ci95") and name[: -len("_ci95")] in pairs:
            continue
        if name.endswith("_mean") and name[: -len("_mean")] in pairs:
            metric = name[: -len("_mean")]
            cells = [_pm(m, h) for m, h in zip(table[col], table[f"{metric}_ci95"], strict=True)]
            headers.append(metric)
            right.append(True)
        else:
            cells = [_cell(v) for v in table[col]]
            headers.append(name)
            right.append(pd.api.types.is_numeric_dtype(table[col]))
        columns.append(cells)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(_escape(c) for c in cells) + " |"

    lines = [line(headers), "| " + " | ".join("---:" if r else "---" for r in right) + " |"]
    lines += [line(row) for row in zip(*columns, strict=True)] if columns else []
    return "\n".join(lines) + "\n"


def _missing(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _pm(mean: object, half: object) -> str:
    if _missing(mean):
        return ""
    if _missing(half):
        return f"{float(mean):.3f}"
    return f"{float(mean):.3f} ± {float(half):.3f}"


def _pm3(mean: object) -> str:
    return _pm(mean, math.nan)


def _cell(v: object) -> str:
    if _missing(v):
        return ""
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        return f"{float(v):g}"
    return str(v)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def leaderboard_markdown(
    table: pd.DataFrame,
    drops: pd.DataFrame | None = None,
    unpaired: pd.DataFrame | None = None,
    level: int = 2,
) -> str:
    """The leaderboard as Markdown: the complete groups of `leaderboard_table` first, then,
    under the heading `PARTIAL_TITLE`, the partial ones (unranked, with steps done of steps
    asked), then the oracle drops (`oracle_drops`) and one line per learner not paired with
    its oracle (`unpaired_oracle_runs`), each section where there is something to show.

    Args:
        table: a `leaderboard_table`.
        drops: an `oracle_drops` table, or None.
        unpaired: an `unpaired_oracle_runs` table, or None.
        level: Markdown level of the section headings (2 = ``##``).
    """
    heading = "#" * level
    partial = table["status"] == "partial" if "status" in table.columns else table.index < 0
    parts = []
    if not partial.all() or table.empty:
        parts.append(to_markdown(table[~partial].reset_index(drop=True)))
    if partial.any():
        parts.append(f"{heading} {PARTIAL_TITLE}\n\n" + to_markdown(_partial_view(table[partial])))
    if drops is not None and not drops.empty:
        parts.append(
            f"{heading} Relative drop below the i.i.d. oracle\n\n{_DROP_NOTE}"
            + oracle_drops_markdown(drops)
        )
    notes = unpaired_oracle_notes(unpaired) if unpaired is not None else []
    if notes:
        parts.append(
            f"{heading} Not paired with the i.i.d. oracle\n\n"
            + "".join(f"- {_escape(n)}\n" for n in notes)
        )
    return "\n".join(parts)


def _partial_view(partial: pd.DataFrame) -> pd.DataFrame:
    """Partial groups for display: no rank, and one column of meta-steps done of asked
    (means over seeds) in place of the meta-training bookkeeping metrics."""
    view = partial.reset_index(drop=True)
    done = view.get("meta_steps_done_mean", pd.Series(np.nan, index=view.index))
    asked = view.get("meta_steps_asked_mean", pd.Series(np.nan, index=view.index))
    steps = [
        "" if _missing(d) else f"{d:g}" if _missing(a) else f"{d:g} of {a:g}"
        for d, a in zip(done, asked, strict=True)
    ]
    bookkeeping = [
        f"{m}_{stat}"
        for m in ("meta_steps_done", "meta_steps_asked", "meta_train_complete")
        for stat in ("mean", "ci95")
    ]
    view = view.drop(columns=[c for c in ("rank", "rank_by", *bookkeeping) if c in view])
    view.insert(list(view.columns).index("status") + 1, _STEPS, steps)
    return view


def oracle_drops_markdown(drops: pd.DataFrame) -> str:
    """Render `oracle_drops` as a small Markdown table: one row per learner configuration,
    oracle configuration and status with the scenario parameters (where the runs record them),
    n_pairs (the most of any metric), and per metric the learner's and the oracle's mean
    (3 decimals) and ``<metric>_drop`` as mean ± ci95."""
    keys = [k for k in _DROP_KEYS if k in drops.columns or drops.empty]
    if drops.empty:
        return to_markdown(pd.DataFrame(columns=[*keys, "n_pairs"]))
    present = list(dict.fromkeys(drops["metric"]))
    wide = drops[keys].drop_duplicates().reset_index(drop=True)
    if "scenario_params" in drops.columns:
        params = drops.groupby(keys, sort=False)["scenario_params"].first().reset_index()
        wide = wide.merge(params, on=keys, how="left")
    n_pairs = drops.groupby(keys, sort=False)["n_pairs"].max().rename("n_pairs").reset_index()
    wide = wide.merge(n_pairs, on=keys, how="left")
    for m in present:
        sub = drops[drops["metric"] == m].set_index(keys)
        cols = pd.DataFrame(
            {
                m: sub["mean_stream"].map(_pm3),
                f"{m}_oracle": sub["mean_oracle"].map(_pm3),
                f"{m}_drop_mean": sub["mean_drop"],
                f"{m}_drop_ci95": sub["ci95"],
            }
        ).reset_index()
        wide = wide.merge(cols, on=keys, how="left")
    return to_markdown(wide)


# ----------------------------------------------------------------------------------------------
# Writing


def write_leaderboard(
    dir: Path, runs: pd.DataFrame | None = None, primary_metric: str | None = None
) -> tuple[Path, Path]:
    """Write ``leaderboard.csv`` and ``leaderboard.md`` into `dir`, each atomically.

    ``leaderboard.csv`` holds every group, complete first, with its ``status`` and an empty
    rank for partial ones; ``leaderboard.md`` is `leaderboard_markdown`. Where learners have
    i.i.d. oracle runs on the same streams and representations (`oracle_drops`), their
    relative drops are written too: as ``oracle_drop.csv`` and as a small table in
    ``leaderboard.md``. Without such pairs there is no drop table, and an ``oracle_drop.csv``
    left from earlier runs is removed (it would describe other runs). Runs with an oracle on
    the same stream but not paired are listed in ``leaderboard.md`` (`unpaired_oracle_runs`).

    Every file is written with `harness.fileio.atomic_write_text`: a reader sees the old file
    or the new one, never a partial one.

    Args:
        dir: the results folder (created if `runs` is given and it does not exist).
        runs: tidy run rows; default `load_runs(dir)`.
        primary_metric: metric to rank by; default as in `leaderboard_table`.

    Returns:
        The paths of the CSV and the Markdown file.

    Raises:
        HarnessError: as `load_runs` and `leaderboard_table`.
    """
    folder = Path(dir)
    if runs is None:
        runs = load_runs(folder)
    table = leaderboard_table(runs, primary_metric=primary_metric)
    drops = oracle_drops(runs)
    unpaired = unpaired_oracle_runs(runs)
    csv_path = folder / "leaderboard.csv"
    md_path = folder / "leaderboard.md"
    drop_path = folder / "oracle_drop.csv"
    atomic_write_text(csv_path, table.to_csv(index=False, lineterminator="\n"))
    if drops.empty:
        drop_path.unlink(missing_ok=True)
    else:
        atomic_write_text(drop_path, drops.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(md_path, leaderboard_markdown(table, drops, unpaired))
    return csv_path, md_path
