"""The leaderboard as tables and files: `leaderboard_table` (one row per configuration, the
rows of ``leaderboard.csv``), `leaderboard_text` (the text of ``leaderboard.md`` or
``leaderboard.csv``) and `write_leaderboard`, which writes ``leaderboard.csv``,
``leaderboard.md`` and ``oracle_drop.csv`` with `harness.fileio.atomic_write_text`. The
Markdown itself is made in `harness.leaderboard.compact` and `harness.leaderboard.markdown`.

Strings and files only; nothing is printed (`cli.py` renders for the terminal).
"""

from __future__ import annotations

from pathlib import Path

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
from harness.leaderboard.compact import leaderboard_markdown
from harness.leaderboard.load import load_runs
from harness.leaderboard.pairing import oracle_drops, unpaired_oracle_runs
from harness.leaderboard.variants import params_sort_key

FORMATS = ("md", "csv")
"""The formats of `leaderboard_text`."""


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
        group. Sorted by scenario, version, status (complete first), scenario parameters
        (numerically: `params_sort_key`) and rank (unranked last). Groups whose runs all
        failed are listed, unranked.

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
    default from `is_higher_better`. Sets of scenario parameters sort numerically
    (`params_sort_key`: n_classes 10 before 50 before 100).
    """
    params = table["scenario_params"] if "scenario_params" in table else ""
    table = table.copy()  # one block: the columns built one by one above are fragmented
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
    order = sorted(set(table["_params"]), key=lambda p: (params_sort_key(p), p))
    table = table.assign(_order=table["_params"].map({p: i for i, p in enumerate(order)}))
    table = table.sort_values(
        [*_SCENARIO, "status", "_order", "rank", "learner", "preset", "config_hash"],
        na_position="last",
    )
    table = table[[*front, *[c for c in table.columns if c not in (*front, "_params", "_order")]]]
    return table.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Writing


def leaderboard_text(runs: pd.DataFrame, fmt: str = "md", primary_metric: str | None = None) -> str:
    """The leaderboard of `runs` as the text of ``leaderboard.md`` (`fmt` 'md':
    `leaderboard_markdown`, compact tables per scenario variant, the partial runs, the drop below
    the i.i.d. oracle) or of ``leaderboard.csv`` ('csv': the wide `leaderboard_table`, every
    metric's mean and ci95 and the provenance columns), byte for byte what `write_leaderboard`
    writes.

    Raises:
        HarnessError: an unknown `fmt`, or as `leaderboard_table` (e.g. an unknown metric).
    """
    if fmt not in FORMATS:
        raise HarnessError(f"unknown leaderboard format {fmt!r}; choose {' or '.join(FORMATS)}")
    table = leaderboard_table(runs, primary_metric=primary_metric)
    if fmt == "csv":
        return _csv(table)
    return leaderboard_markdown(table, oracle_drops(runs), unpaired_oracle_runs(runs))


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def write_leaderboard(
    dir: Path, runs: pd.DataFrame | None = None, primary_metric: str | None = None
) -> tuple[Path, Path]:
    """Write ``leaderboard.csv`` and ``leaderboard.md`` into `dir`, each atomically.

    ``leaderboard.csv`` holds every group, complete first, with its ``status`` and an empty
    rank for partial ones; ``leaderboard.md`` is `leaderboard_markdown` (`leaderboard_text`
    gives the same texts). Where learners have i.i.d. oracle runs on the same streams and
    representations (`oracle_drops`), their relative drops are written too: as
    ``oracle_drop.csv`` and as a small table in ``leaderboard.md``. Without such pairs there is
    no drop table, and an ``oracle_drop.csv`` left from earlier runs is removed (it would
    describe other runs). Runs with an oracle on the same stream but not paired are listed in
    ``leaderboard.md`` (`unpaired_oracle_runs`).

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
    csv_path = folder / "leaderboard.csv"
    md_path = folder / "leaderboard.md"
    drop_path = folder / "oracle_drop.csv"
    atomic_write_text(csv_path, _csv(table))
    if drops.empty:
        drop_path.unlink(missing_ok=True)
    else:
        atomic_write_text(drop_path, _csv(drops))
    atomic_write_text(md_path, leaderboard_markdown(table, drops, unpaired_oracle_runs(runs)))
    return csv_path, md_path
