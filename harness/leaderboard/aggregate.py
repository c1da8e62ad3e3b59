"""Aggregation over seeds and ranking: run statuses, superseded re-runs, per-configuration
counts, means with Student-t 95% CIs (`aggregate`) and ranks (`rank`); also the shared
preparation of run rows that the paired statistics and the leaderboard table build on.

Computation only: every function takes and returns pandas objects and prints nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.leaderboard.load import _PROVENANCE, REQUIRED_COLUMNS
from harness.metrics import t_ci95_half_width
from harness.results import STATUSES

STATUS_METRICS: tuple[str, ...] = tuple(s for s in STATUSES if s not in ("ok", "partial"))
"""Metric rows that mark a run as not finished (also its `status`); never aggregated."""

CONFIG_KEYS: tuple[str, ...] = ("scenario", "scenario_version", "learner", "preset", "config_hash")
"""One configuration: seeds of the same recipe on the same scenario version."""

GROUP_KEYS: tuple[str, ...] = (*CONFIG_KEYS, "status")
"""One leaderboard entry: a configuration's 'complete' runs, or its 'partial' ones (meta-training
stopped early), which are never averaged or ranked with the complete ones."""

PRIMARY_METRICS: tuple[str, ...] = (
    "acc_final_macro",
    "meta_test_test_acc",
    "episode_acc",
    "skill_persistence",
    "mse_final",
    "episode_mse",
)
"""Default ranking metric: the first of these a scenario reports."""

HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "accuracies": True,
    "learning_acc": True,
    "online_acc": True,
    "bwt": True,
    "fwt": True,
    "episode_acc": True,
    "samples_per_s": True,
    "online_mse": False,
    "online_mae": False,
    "mase": False,
    "recovery_steps": False,
    "recovered_fraction": True,
    "episode_mse": False,
    "wall_s": False,
    "peak_rss_mb": False,
    "meta_train_s": False,
}
"""Direction of metrics known by exact name; see `is_higher_better` for the prefix rules."""

# Checked in order, after the exact names: lower-is-better families first, so that e.g.
# `forgetting_acc` could never be read as an accuracy.
_PREFIX_DIRECTIONS: tuple[tuple[str, bool], ...] = (
    ("forgetting_", False),
    ("online_mse_", False),
    ("skill_", True),
    ("test_skill_", True),
    ("mse_", False),
    ("episode_mse_", False),
    ("episode_acc_", True),
    ("acc_", True),
    ("meta_test_", True),
)

_KEY_COLUMNS = (*CONFIG_KEYS, "run_id", "stream_hash", "metric")
_SCENARIO = ["scenario", "scenario_version"]


def is_higher_better(metric: str) -> bool:
    """Whether a larger value of `metric` is better.

    Exact names in `HIGHER_IS_BETTER` first, then prefixes: ``forgetting_*`` and ``mse_*`` are
    lower-is-better, ``acc_*`` and ``meta_test_*`` higher-is-better.

    Raises:
        HarnessError: the metric has no known direction.
    """
    if metric in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[metric]
    for prefix, higher in _PREFIX_DIRECTIONS:
        if metric.startswith(prefix):
            return higher
    raise HarnessError(
        f"no known direction for metric {metric!r}; pass higher_is_better=True or False"
    )


def _unknown(kind: str, name: str, known: Sequence[str]) -> HarnessError:
    """An error naming an unknown metric/learner with the closest known names."""
    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return HarnessError(
        f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known)) or 'none'})"
    )


# ----------------------------------------------------------------------------------------------
# Shared preparation: validation, re-runs, failed runs


def _prepare(runs: pd.DataFrame) -> pd.DataFrame:
    """A checked copy of `runs` with text keys (missing keys become ""), float values, the
    run's status in `_run_status` and its group in ``status`` ('complete' or 'partial')."""
    missing = [c for c in REQUIRED_COLUMNS if c not in runs.columns]
    if missing:
        raise HarnessError(f"runs lack required column(s): {', '.join(missing)}")
    df = runs.copy()
    for col in _KEY_COLUMNS:
        df[col] = df[col].fillna("").astype(str)
    df["value"] = pd.to_numeric(df["value"]).astype(float)
    rep = df["representation"] if "representation" in df.columns else ""
    df["representation"] = pd.Series(rep, index=df.index).fillna("").astype(str)
    df["_run_status"] = _run_statuses(df)
    df["status"] = np.where(df["_run_status"] == "partial", "partial", "complete")
    return df


def _run_statuses(df: pd.DataFrame) -> pd.Series:
    """Per row, the status of its run: the ``status`` column where the file has one, else
    partial where ``meta_train_complete`` is 0, else ok; a non-zero failed / diverged /
    timed_out row always makes the run that status (its metrics are not results)."""
    runs = df["run_id"]
    given = df["status"] if "status" in df.columns else pd.Series(np.nan, index=df.index)
    given = given.astype(object).where(given.notna() & (given.astype(str).str.strip() != ""))
    status = given.groupby(runs).transform("first")
    stopped = (df["metric"] == "meta_train_complete") & (df["value"] == 0)
    derived = np.where(runs.isin(set(df.loc[stopped, "run_id"])), "partial", "ok")
    status = status.fillna(pd.Series(derived, index=df.index)).astype(str)
    for name in reversed(STATUS_METRICS):  # the first of STATUS_METRICS wins
        hit = (df["metric"] == name) & (df["value"] != 0)
        status = status.mask(runs.isin(set(df.loc[hit, "run_id"])), name)
    return status


def _run_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: group keys, seed, run_id, stream_hash, `_failed`, `_dropped`.

    `_dropped` marks re-runs superseded by a later ``started_at`` (ties and unparsable times
    fall back to the text of ``started_at``, then to ``run_id``, so the choice is deterministic).
    A superseded run is counted in the group of the run that replaced it: a partial run later
    re-run to the end leaves one complete seed, not a partial group of dropped runs.
    """
    per_run = df.drop_duplicates("run_id", keep="last")[
        [*GROUP_KEYS, "_run_status", "seed", "run_id", "stream_hash", "started_at"]
    ].copy()
    per_run["_failed"] = per_run["_run_status"].isin(STATUS_METRICS)
    per_run["_t"] = pd.to_datetime(
        per_run["started_at"], utc=True, format="ISO8601", errors="coerce"
    )
    per_run["_s"] = per_run["started_at"].astype(str)
    per_run = per_run.sort_values(["_t", "_s", "run_id"], na_position="first", kind="stable")
    per_run["_dropped"] = per_run.duplicated([*CONFIG_KEYS, "seed"], keep="last")
    per_run["status"] = per_run.groupby([*CONFIG_KEYS, "seed"], sort=False)["status"].transform(
        "last"
    )
    return per_run.drop(columns=["_t", "_s"])


def _clean_rows(df: pd.DataFrame, per_run: pd.DataFrame) -> pd.DataFrame:
    """Metric rows of the kept, finished runs (one row per run and metric)."""
    ok = per_run.loc[~per_run["_dropped"] & ~per_run["_failed"], "run_id"]
    rows = df[df["run_id"].isin(ok) & ~df["metric"].isin(STATUS_METRICS)]
    return rows.drop_duplicates(["run_id", "metric"], keep="last")


def _finished_rows(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(`_prepare`'d runs, their `_clean_rows`): the rows of kept, finished runs."""
    df = _prepare(runs)
    return df, _clean_rows(df, _run_table(df))


def kept_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run that the aggregates average: finished (not failed, diverged or timed
    out) and not superseded by a later re-run of its configuration and seed.

    Returns:
        Columns: the `GROUP_KEYS` (``status`` 'complete' or 'partial'), ``seed``, ``run_id``,
        ``stream_hash`` and, where the runs record them, ``scenario_params`` and
        ``harness_version``; sorted by group and seed.
    """
    df = _prepare(runs)
    per_run = _run_table(df)
    kept = per_run.loc[~per_run["_dropped"] & ~per_run["_failed"]]
    kept = kept[[*GROUP_KEYS, "seed", "run_id", "stream_hash"]]
    extra = [c for c in ("scenario_params", "harness_version") if c in df.columns]
    if extra:
        first = df.drop_duplicates("run_id", keep="last")[["run_id", *extra]]
        kept = kept.merge(first, on="run_id", how="left")
    return kept.sort_values([*GROUP_KEYS, "seed"], kind="stable").reset_index(drop=True)


def _valued(rows: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """The rows of `metrics` that hold a value."""
    return rows[rows["metric"].isin(list(metrics)) & rows["value"].notna()]


def _config_counts(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per group: successful runs (`n_runs`), `failed` and `duplicates_dropped`."""
    kept = ~per_run["_dropped"]
    counts = per_run.assign(
        n_runs=kept & ~per_run["_failed"],
        failed=kept & per_run["_failed"],
        duplicates_dropped=per_run["_dropped"],
    )
    out = counts.groupby(list(GROUP_KEYS), sort=True)[
        ["n_runs", "failed", "duplicates_dropped"]
    ].sum()
    return out.astype("int64").reset_index()


def _extra_columns(df: pd.DataFrame, taken: Iterable[str]) -> list[str]:
    """Provenance columns worth carrying: the known ones plus any unknown extra column."""
    taken = set(taken)
    extras = [c for c in df.columns if c not in REQUIRED_COLUMNS and not str(c).startswith("_")]
    return [c for c in (*_PROVENANCE, *extras) if c not in taken]


def _carried(rows: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    """Per group of `keys`: the value of each column where it is constant, else NaN.

    Columns that are nowhere constant are left out.
    """
    columns = [c for c in columns if c in rows.columns]
    if not columns or rows.empty:
        return rows[keys].drop_duplicates()
    grouped = rows.groupby(keys, sort=False)[columns]
    kept = grouped.first().where(grouped.nunique(dropna=False) == 1)
    return kept.dropna(axis=1, how="all").reset_index()


def _with_ci(out: pd.DataFrame, mean: str, sd: str, n: str) -> pd.DataFrame:
    """`out` with ``ci95`` (`harness.metrics.t_ci95_half_width` of columns `sd` and `n`),
    ``ci_low`` and ``ci_high`` (column `mean` -/+ ci95) set in place."""
    out["ci95"] = t_ci95_half_width(out[sd], out[n])
    out["ci_low"] = out[mean] - out["ci95"]
    out["ci_high"] = out[mean] + out["ci95"]
    return out


# ----------------------------------------------------------------------------------------------
# Aggregation and ranks


def aggregate(runs: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Mean and 95% CI over seeds for every configuration and metric.

    Groups by (scenario, scenario_version, learner, preset, config_hash, status, metric), after
    dropping superseded re-runs and failed/diverged/timed-out runs; ``status`` is 'complete' or
    'partial' (meta-training stopped early), so partial runs are never averaged with complete
    ones. A group whose runs all failed still gets a row per metric of its scenario, with
    ``n_seeds`` 0 and NaN statistics.

    Args:
        runs: tidy run rows, e.g. from `load_runs`.
        metrics: metrics to keep (default: all but the `STATUS_METRICS`).

    Returns:
        One row per group with columns ``mean``, ``sd`` (ddof=1), ``n_seeds`` (non-NaN values),
        ``ci95`` (t half-width; NaN for n_seeds < 2), ``ci_low``, ``ci_high``, ``failed`` (runs
        of the group that failed, diverged or timed out), ``duplicates_dropped`` (superseded
        re-runs), ``n`` and provenance columns where constant in the group.

    Raises:
        HarnessError: required columns are missing or a requested metric is unknown.
    """
    df = _prepare(runs)
    per_run = _run_table(df)
    rows = _clean_rows(df, per_run)
    if metrics is not None:
        available = sorted(set(rows["metric"]))
        for m in metrics:
            if m not in available:
                raise _unknown("metric", m, available)
        rows = rows[rows["metric"].isin(metrics)]

    keys = [*GROUP_KEYS, "metric"]
    values = rows.groupby(keys, sort=True)["value"]
    out = pd.DataFrame(
        {"mean": values.mean(), "sd": values.std(ddof=1), "n_seeds": values.count()}
    ).reset_index()
    counts = _config_counts(per_run)
    out = _with_all_failed(out, counts, rows)
    out["n_seeds"] = out["n_seeds"].astype("int64")
    out = _with_ci(out, "mean", "sd", "n_seeds")
    out = out.merge(counts.drop(columns="n_runs"), on=list(GROUP_KEYS), how="left")
    carry = _extra_columns(df, [*out.columns, "rank", "rank_by"])
    out = out.merge(_carried(rows, keys, ["n", *carry]), on=keys, how="left")
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


def _with_all_failed(out: pd.DataFrame, counts: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """`out` plus the configurations with no finished run: shown, with the metrics of their
    scenario, ``n_seeds`` 0 and NaN statistics."""
    all_failed = counts.loc[counts["n_runs"] == 0, list(GROUP_KEYS)]
    if not all_failed.empty:
        scenario_metrics = rows[[*_SCENARIO, "metric"]].drop_duplicates()
        empty = all_failed.merge(scenario_metrics, on=_SCENARIO)
        if not empty.empty:
            empty = empty.assign(mean=np.nan, sd=np.nan, n_seeds=0)
            out = pd.concat([out, empty], ignore_index=True)
    return out


def rank(agg: pd.DataFrame, metric: str, higher_is_better: bool | None = None) -> pd.DataFrame:
    """Rank configurations within each scenario (and version) by the mean of one metric.

    Only complete groups are ranked; partial ones (``status`` 'partial') keep no rank.

    Args:
        agg: the output of `aggregate`.
        metric: the metric to rank by.
        higher_is_better: direction; default from `is_higher_better`.

    Returns:
        The rows of `agg` for `metric` with a ``rank`` column (1 = best, ties share the best
        rank, NA means unranked), sorted by scenario, scenario_version and rank.

    Raises:
        HarnessError: the metric is not in `agg`, or its direction is unknown and not given.
    """
    if higher_is_better is None:
        higher_is_better = is_higher_better(metric)
    sub = agg[agg["metric"] == metric].copy()
    if sub.empty:
        raise _unknown("metric", metric, sorted(set(agg["metric"])))
    complete = sub["status"] != "partial" if "status" in sub.columns else sub["mean"].notna()
    sub["rank"] = pd.Series(pd.NA, index=sub.index, dtype="Int64")
    sub.loc[complete, "rank"] = _rank_within(sub[complete], "mean", higher_is_better)
    return sub.sort_values([*_SCENARIO, "rank", "learner"], na_position="last").reset_index(
        drop=True
    )


def _rank_within(frame: pd.DataFrame, column: str, higher_is_better: bool) -> pd.Series:
    """Rank `column` within each scenario and version; 1 = best, ties take the best rank."""
    ranks = frame.groupby(_SCENARIO)[column].rank(ascending=not higher_is_better, method="min")
    return ranks.astype("Int64")
