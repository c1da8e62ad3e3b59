"""Tidy per-run results -> aggregated leaderboard tables (docs/design.md D6).

Computation only: every function takes and returns pandas objects (or a string, for the
Markdown rendering) and prints nothing; `cli.py` renders.

Input: ``results/<scenario>/<run_id>.csv``, one row per metric, with the columns in
`REQUIRED_COLUMNS` plus any extra provenance columns (``variant``, ``lr``, ...), which are
carried into the tables where they are constant within a group. Only runs whose files agree
with the manifest in their ``.json`` are read (`harness.results.verify_run`); any other run
file is reported (`ResultFileWarning`) and left out, never averaged.

Conventions shared by every function:
    - A run's ``status`` is ok, partial, failed, diverged or timed_out. Files without the
      column tell it by their metric rows: a non-zero ``failed`` / ``diverged`` /
      ``timed_out`` row, or ``meta_train_complete`` == 0 for partial.
    - A failed, diverged or timed-out run has no metrics: all its rows are left out of
      aggregates and it is counted in a ``failed`` column instead.
    - A partial run (meta-training stopped early) has real metrics of a shorter recipe: its
      group is keyed ``status`` 'partial', apart from the 'complete' runs of the same
      configuration, and is never ranked.
    - A re-run of the same (scenario, scenario_version, learner, preset, config_hash, seed)
      replaces the earlier ones: the run with the latest ``started_at`` is kept and the others
      are counted in ``duplicates_dropped``.
    - ``ci95`` is the half-width of the Student-t 95% confidence interval over seeds,
      t_{0.975, n-1} * sd / sqrt(n) with sd the sample standard deviation (ddof=1); NaN for n = 1.
"""

from __future__ import annotations

import difflib
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from harness.errors import HarnessError
from harness.fileio import atomic_write_text
from harness.results import STATUSES, verify_run

__all__ = [
    "CONFIG_KEYS",
    "GROUP_KEYS",
    "HIGHER_IS_BETTER",
    "ORACLE_METRICS",
    "ORACLE_SUFFIX",
    "PARTIAL_TITLE",
    "PRIMARY_METRICS",
    "README_END",
    "README_START",
    "REQUIRED_COLUMNS",
    "STATUS_METRICS",
    "ResultFileWarning",
    "aggregate",
    "headline_markdown",
    "is_higher_better",
    "leaderboard_markdown",
    "leaderboard_table",
    "load_runs",
    "oracle_drops",
    "oracle_drops_markdown",
    "paired_differences",
    "rank",
    "replace_readme_block",
    "results_markdown",
    "to_markdown",
    "unpaired_oracle_notes",
    "unpaired_oracle_runs",
    "write_leaderboard",
]

REQUIRED_COLUMNS: tuple[str, ...] = (
    "run_id",
    "scenario",
    "scenario_version",
    "stream_hash",
    "learner",
    "config_hash",
    "preset",
    "seed",
    "metric",
    "value",
    "n",
    "harness_version",
    "git_sha",
    "torch_version",
    "device",
    "started_at",
    "wall_s",
)
"""Columns every run CSV must have (docs/design.md D6)."""

STATUS_METRICS: tuple[str, ...] = ("failed", "diverged", "timed_out")
"""Metric rows that mark a run as not finished (also its `status`); never aggregated."""

CONFIG_KEYS: tuple[str, ...] = ("scenario", "scenario_version", "learner", "preset", "config_hash")
"""One configuration: seeds of the same recipe on the same scenario version."""

GROUP_KEYS: tuple[str, ...] = (*CONFIG_KEYS, "status")
"""One leaderboard entry: a configuration's 'complete' runs, or its 'partial' ones (meta-training
stopped early), which are never averaged or ranked with the complete ones."""

PARTIAL_TITLE = "Partial runs: meta-training stopped early (steps done of steps asked); not ranked"
"""Heading of the partial runs' table in ``leaderboard.md``."""

PRIMARY_METRICS: tuple[str, ...] = (
    "acc_final_macro",
    "meta_test_test_acc",
    "episode_acc",
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
    ("mse_", False),
    ("episode_mse_", False),
    ("episode_acc_", True),
    ("acc_", True),
    ("meta_test_", True),
)

# Identifier columns are text even when they look like numbers ("0123", "1e5" as a hash).
_TEXT_COLUMNS = (
    "run_id",
    "scenario",
    "scenario_version",
    "stream_hash",
    "learner",
    "config_hash",
    "preset",
    "metric",
    "harness_version",
    "git_sha",
    "torch_version",
    "device",
    "started_at",
    "status",
    "representation",
    "meta_seed",
    "source_diff",
)
_KEY_COLUMNS = (*CONFIG_KEYS, "run_id", "stream_hash", "metric")
_NUMERIC_COLUMNS = ("value", "seed", "n", "wall_s")
_PROVENANCE = ("harness_version", "git_sha", "torch_version", "device")
_SCENARIO = ["scenario", "scenario_version"]
_LEADERBOARD_FILES = frozenset({"leaderboard.csv", "leaderboard.md", "oracle_drop.csv"})
_STEPS = "steps done of asked"
_DROP_KEYS = [*CONFIG_KEYS, "oracle", "oracle_config_hash", "status"]

ORACLE_SUFFIX = "-iid"
"""The i.i.d. oracle of learner ``L`` is the learner ``L + ORACLE_SUFFIX`` (e.g. ``anml-iid``)."""

ORACLE_METRICS: tuple[str, ...] = ("meta_test_test_acc", "meta_test_train_acc")
"""Metrics whose relative drop below the i.i.d. oracle `oracle_drops` reports by default."""


# ----------------------------------------------------------------------------------------------
# Metric directions


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


# ----------------------------------------------------------------------------------------------
# Reading


class ResultFileWarning(UserWarning):
    """A run file that fails its checks (`load_runs`): it is left out of every table."""


class _Unreadable(Exception):
    """A run CSV that passes its manifest but not the checks on its content."""


def load_runs(path: Path, problems: list[tuple[Path, str]] | None = None) -> pd.DataFrame:
    """Read every valid run CSV under a folder (recursively) into one tidy frame.

    ``leaderboard.csv`` / ``leaderboard.md`` / ``oracle_drop.csv``, hidden files and the
    ``.json`` / ``.npz`` files beside each run are ignored. Each run is checked first
    (`harness.results.verify_run`): a run without its JSON or manifest (cut short, or written
    by harness < 0.2), or whose CSV does not match the manifest (truncated, edited or
    half-replaced), or whose CSV cannot be read as a run (unparsable, required columns missing,
    non-numeric numbers, unknown status) is left out with a `ResultFileWarning` naming the file
    and the reason; the others are still read. Identifier columns are read as text,
    ``value``, ``seed``, ``n`` and ``wall_s`` as numbers; extra columns are kept as they are.

    Args:
        path: a results folder, e.g. ``results/`` or ``results/omniglot-stream/``.
        problems: where given, each left-out file is appended as ``(path, reason)``.

    Returns:
        The rows of all valid run CSVs, concatenated (files in sorted path order).

    Raises:
        HarnessError: the folder does not exist or holds no run CSV, no valid one (the message
            gives the first reason), or only valid ones without rows.
    """
    folder = Path(path)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise HarnessError(
            f"results folder {folder} {what}; pass the folder holding <scenario>/<run_id>.csv"
        )
    files = sorted(
        p
        for p in folder.rglob("*.csv")
        if p.is_file()
        and p.name not in _LEADERBOARD_FILES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise HarnessError(
            f"no run CSV files under {folder}; run `harness run` first or pass the folder "
            "holding <scenario>/<run_id>.csv"
        )
    frames: list[pd.DataFrame] = []
    left_out: list[tuple[Path, str]] = []
    for file in files:
        try:
            reason = verify_run(file)
        except (AttributeError, TypeError, KeyError, ValueError) as e:
            # A JSON whose manifest has the wrong shape: reported like any other bad file.
            reason = f"its .json holds a malformed manifest ({type(e).__name__})"
        if not reason:
            try:
                frames.append(_read_run_csv(file))
                continue
            except _Unreadable as e:
                reason = str(e)
        left_out.append((file, reason))
        warnings.warn(ResultFileWarning(f"{file}: {reason}; left out"), stacklevel=2)
    if problems is not None:
        problems.extend(left_out)
    if not frames:
        first, why = left_out[0]
        raise HarnessError(
            f"no valid run file under {folder} ({len(left_out)} left out); first: {first}: {why}"
        )
    runs = pd.concat(frames, ignore_index=True, sort=False)
    if runs.empty:
        raise HarnessError(f"the run CSV files under {folder} hold no rows (only headers)")
    return runs


def _read_run_csv(file: Path) -> pd.DataFrame:
    """Read and check one run CSV; `_Unreadable` says why it is not a run."""
    try:
        df = pd.read_csv(file, dtype=dict.fromkeys(_TEXT_COLUMNS, str))
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _Unreadable(f"cannot be read as CSV: {reason}") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise _Unreadable(
            f"lacks required column(s): {', '.join(missing)} "
            f"(a run CSV needs: {', '.join(REQUIRED_COLUMNS)})"
        )
    for col in _NUMERIC_COLUMNS:
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() & df[col].notna()
        if bad.any():
            raise _Unreadable(f"column {col!r} holds non-numeric {df[col][bad].iloc[0]!r}")
        df[col] = num
    seed = df["seed"]
    if seed.isna().any() or (seed != seed.round()).any():
        raise _Unreadable("column 'seed' must hold integers in every row")
    df["seed"] = seed.astype("int64")
    if "status" in df.columns:
        unknown = sorted(set(df["status"].dropna()) - set(STATUSES))
        if unknown:
            raise _Unreadable(
                f"column 'status' holds unknown {unknown[0]!r} (known: {', '.join(STATUSES)})"
            )
    return df


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


def _t_half_width(sd: pd.Series, n: pd.Series) -> np.ndarray:
    """t_{0.975, n-1} * sd / sqrt(n); NaN where n < 2."""
    n = np.asarray(n, dtype=float)
    sd = np.asarray(sd, dtype=float)
    ok = n >= 2
    t = np.full(n.shape, np.nan)
    t[ok] = stats.t.ppf(0.975, n[ok] - 1)
    half = np.full(n.shape, np.nan)
    half[ok] = t[ok] * sd[ok] / np.sqrt(n[ok])
    return half


def _unknown(kind: str, name: str, known: Sequence[str]) -> HarnessError:
    """An error naming an unknown metric/learner with the closest known names."""
    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return HarnessError(
        f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known)) or 'none'})"
    )


# ----------------------------------------------------------------------------------------------
# Aggregation, ranks, paired differences


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

    # Configurations with no finished run: show them, with the metrics of their scenario.
    counts = _config_counts(per_run)
    all_failed = counts.loc[counts["n_runs"] == 0, list(GROUP_KEYS)]
    if not all_failed.empty:
        scenario_metrics = rows[[*_SCENARIO, "metric"]].drop_duplicates()
        empty = all_failed.merge(scenario_metrics, on=_SCENARIO)
        if not empty.empty:
            empty = empty.assign(mean=np.nan, sd=np.nan, n_seeds=0)
            out = pd.concat([out, empty], ignore_index=True)

    out["n_seeds"] = out["n_seeds"].astype("int64")
    out["ci95"] = _t_half_width(out["sd"], out["n_seeds"])
    out["ci_low"] = out["mean"] - out["ci95"]
    out["ci_high"] = out["mean"] + out["ci95"]
    out = out.merge(counts.drop(columns="n_runs"), on=list(GROUP_KEYS), how="left")
    carry = _extra_columns(df, [*out.columns, "rank", "rank_by"])
    out = out.merge(_carried(rows, keys, ["n", *carry]), on=keys, how="left")
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


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


def paired_differences(runs: pd.DataFrame, metric: str, baseline: str) -> pd.DataFrame:
    """Differences (learner - baseline) on identical streams, for every learner vs `baseline`.

    A learner's run is paired with the baseline's run of the same scenario, scenario_version,
    seed and stream_hash; runs whose stream_hash differs are never paired. Failed runs and
    superseded re-runs are left out first, and so are the baseline's partial runs (a shorter
    recipe is no reference). Only scenarios where the baseline has runs are used.

    Args:
        runs: tidy run rows, e.g. from `load_runs`.
        metric: the metric to compare.
        baseline: the learner id to compare against; it must have a single configuration
            (preset, config_hash) per scenario (filter `runs` first otherwise).

    Returns:
        One row per (scenario, scenario_version, learner, preset, config_hash, status) with
        ``baseline``, ``baseline_preset``, ``baseline_config_hash``, ``metric``, ``mean_diff``,
        ``sd_diff``, ``ci95`` (t half-width), ``ci_low``, ``ci_high``, ``n_pairs`` and
        ``p_value`` (two-sided paired t-test, `scipy.stats.ttest_rel`; NaN for n_pairs < 2).

    Raises:
        HarnessError: unknown metric or baseline, or an ambiguous baseline.
    """
    df = _prepare(runs)
    rows = _clean_rows(df, _run_table(df))
    if metric not in set(rows["metric"]):
        raise _unknown("metric", metric, sorted(set(rows["metric"])))
    rows = rows[(rows["metric"] == metric) & rows["value"].notna()]
    base = rows[rows["learner"] == baseline]
    if base.empty:
        raise _unknown("baseline learner", baseline, sorted(set(rows["learner"])))
    base = base[base["status"] == "complete"]
    base_configs = base[[*_SCENARIO, "preset", "config_hash"]].drop_duplicates()
    ambiguous = base_configs[base_configs.duplicated(_SCENARIO, keep=False)]
    if not ambiguous.empty:
        first = ambiguous.iloc[0]
        listed = ", ".join(
            f"{r.config_hash} (preset {r.preset})"
            for r in ambiguous[ambiguous["scenario"] == first["scenario"]].itertuples()
        )
        raise HarnessError(
            f"baseline {baseline!r} has several configurations in scenario "
            f"{first['scenario']!r}: {listed}; filter the runs to one, e.g. by preset"
        )

    pair_keys = [*_SCENARIO, "seed", "stream_hash"]
    base = base[[*pair_keys, "value", "preset", "config_hash"]].rename(
        columns={
            "value": "_base",
            "preset": "baseline_preset",
            "config_hash": "baseline_config_hash",
        }
    )
    others = rows[(rows["learner"] != baseline)]
    others = others[others.set_index(_SCENARIO).index.isin(base.set_index(_SCENARIO).index)]
    merged = others.merge(base, on=pair_keys, how="left")
    merged["_diff"] = merged["value"] - merged["_base"]
    base_info = base[[*_SCENARIO, "baseline_preset", "baseline_config_hash"]].drop_duplicates()

    records = []
    for key, group in merged.groupby(list(GROUP_KEYS), sort=True):
        paired = group.dropna(subset=["_base"])
        diff = paired["_diff"].to_numpy(dtype=float)
        n = diff.size
        p_value = math.nan
        if n >= 2:
            with warnings.catch_warnings():
                # identical differences give a zero variance; scipy warns and returns nan/0
                warnings.simplefilter("ignore", RuntimeWarning)
                p_value = float(
                    stats.ttest_rel(paired["value"].to_numpy(), paired["_base"].to_numpy()).pvalue
                )
        records.append(
            {
                **dict(zip(GROUP_KEYS, key, strict=True)),
                "baseline": baseline,
                "metric": metric,
                "mean_diff": float(diff.mean()) if n else math.nan,
                "sd_diff": float(diff.std(ddof=1)) if n >= 2 else math.nan,
                "n_pairs": n,
                "p_value": p_value,
            }
        )
    columns = [*GROUP_KEYS, "baseline", "metric", "mean_diff", "sd_diff", "n_pairs", "p_value"]
    out = pd.DataFrame.from_records(records, columns=columns)
    out["n_pairs"] = out["n_pairs"].astype("int64")
    out["ci95"] = _t_half_width(out["sd_diff"], out["n_pairs"])
    out["ci_low"] = out["mean_diff"] - out["ci95"]
    out["ci_high"] = out["mean_diff"] + out["ci95"]
    out = out.merge(base_info, on=_SCENARIO, how="left")
    order = [
        *GROUP_KEYS,
        "baseline",
        "baseline_preset",
        "baseline_config_hash",
        "metric",
        "mean_diff",
        "sd_diff",
        "ci95",
        "ci_low",
        "ci_high",
        "n_pairs",
        "p_value",
    ]
    return out[order]


def _stream_and_oracle(
    frame: pd.DataFrame, suffix: str, columns: list[str], rename: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split `frame` into the stream learners' rows, each with its oracle's id in ``oracle``
    (learner + `suffix`), and the oracles' rows: their `columns`, renamed by `rename` and with
    ``learner`` renamed to ``oracle``, ready to merge on ``oracle``."""
    is_oracle = frame["learner"].str.endswith(suffix)
    stream = frame[~is_oracle].assign(oracle=lambda d: d["learner"] + suffix)
    oracle = frame[is_oracle][columns].rename(columns={"learner": "oracle", **rename})
    return stream, oracle


def oracle_drops(
    runs: pd.DataFrame,
    metrics: Sequence[str] = ORACLE_METRICS,
    suffix: str = ORACLE_SUFFIX,
) -> pd.DataFrame:
    """Relative drop of each learner below its i.i.d. oracle, per seed, then over seeds.

    The oracle of learner ``L`` is the learner ``L + suffix`` (``anml`` -> ``anml-iid``): the
    same frozen representation with its output layer trained on the same data shuffled i.i.d.
    (OML/ANML meta-test). A run of ``L`` is paired with a run of the oracle on the same
    scenario, scenario_version, preset, seed, stream_hash and status group, and the same
    ``representation`` (the meta-trained network's key): runs whose stream or representation
    differs, or that do not record a representation, are never paired
    (`unpaired_oracle_runs` lists them). Failed runs and superseded re-runs are left out first
    (as in `aggregate`). Per pair, the drop is `harness.metrics.relative_drop` =
    (oracle - stream) / oracle; a pair whose oracle scored 0 has no drop (NaN) and is left
    out of every statistic of its row. Learners without any paired oracle run (or only pairs
    without a drop) get no row.

    Args:
        runs: tidy run rows, e.g. from `load_runs`.
        metrics: accuracies to compare (default `ORACLE_METRICS`); those the runs lack are
            skipped.
        suffix: how an oracle's learner id extends the learner's.

    Returns:
        One row per (scenario, scenario_version, learner, preset, config_hash, oracle,
        oracle_config_hash, status, metric) with ``mean_stream`` and ``mean_oracle`` (the
        learner's and the oracle's mean accuracy over the same pairs), ``mean_drop``,
        ``sd_drop`` (ddof=1), ``ci95`` (Student-t half-width, NaN for n_pairs < 2), ``ci_low``,
        ``ci_high`` and ``n_pairs`` (pairs with a defined drop), plus the provenance columns
        constant over both learners' runs of the row (e.g. ``scenario_params``). Empty (with
        these columns) when nothing pairs.

    Raises:
        HarnessError: required columns are missing, or a paired value is not an accuracy in
            [0, 1].
    """
    from harness.metrics import relative_drop

    df = _prepare(runs)
    rows = _clean_rows(df, _run_table(df))
    rows = rows[rows["metric"].isin(list(metrics)) & rows["value"].notna()]
    pair_keys = [*_SCENARIO, "preset", "seed", "stream_hash", "status", "representation", "metric"]
    stream, oracle = _stream_and_oracle(
        rows[rows["representation"] != ""],
        suffix,
        [*pair_keys, "learner", "config_hash", "run_id", "value"],
        {"config_hash": "oracle_config_hash", "run_id": "_oracle_run", "value": "_oracle_value"},
    )
    pairs = stream.merge(oracle, on=[*pair_keys, "oracle"], how="inner")

    drops = []
    for acc, ref, run_id, ref_id in zip(
        pairs["value"], pairs["_oracle_value"], pairs["run_id"], pairs["_oracle_run"], strict=True
    ):
        try:
            drops.append(relative_drop(acc, ref))
        except ValueError as e:
            raise HarnessError(f"runs {run_id} and {ref_id}: {e}") from None
    pairs["_drop"] = np.asarray(drops, dtype=float)
    pairs = pairs[pairs["_drop"].notna()]

    keys = [*_DROP_KEYS, "metric"]
    order = [
        *keys,
        "mean_stream",
        "mean_oracle",
        "mean_drop",
        "sd_drop",
        "ci95",
        "ci_low",
        "ci_high",
        "n_pairs",
    ]
    if pairs.empty:
        return pd.DataFrame(columns=order)
    grouped = pairs.groupby(keys, sort=True)
    out = pd.DataFrame(
        {
            "mean_stream": grouped["value"].mean(),
            "mean_oracle": grouped["_oracle_value"].mean(),
            "mean_drop": grouped["_drop"].mean(),
            "sd_drop": grouped["_drop"].std(ddof=1),
            "n_pairs": grouped["_drop"].count().astype("int64"),
        }
    ).reset_index()
    out["ci95"] = _t_half_width(out["sd_drop"], out["n_pairs"])
    out["ci_low"] = out["mean_drop"] - out["ci95"]
    out["ci_high"] = out["mean_drop"] + out["ci95"]
    out = out[order]

    # Provenance constant over both sides of a row (both learners' runs on the paired seeds).
    cols = [c for c in _extra_columns(df, order) if c in rows.columns]
    if cols:
        both = pd.concat(
            [
                pairs[[*keys, "run_id"]],
                pairs[[*keys, "_oracle_run"]].rename(columns={"_oracle_run": "run_id"}),
            ],
            ignore_index=True,
        ).merge(rows[["run_id", "metric", *cols]], on=["run_id", "metric"], how="left")
        out = out.merge(_carried(both, keys, cols), on=keys, how="left")
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


def unpaired_oracle_runs(
    runs: pd.DataFrame,
    metrics: Sequence[str] = ORACLE_METRICS,
    suffix: str = ORACLE_SUFFIX,
) -> pd.DataFrame:
    """Runs of a learner ``L`` that have an oracle run (``L + suffix``) on the same stream but
    are not paired with any (`oracle_drops`), and why.

    Considered: finished, kept runs reporting one of `metrics`, on the same scenario,
    scenario_version, preset, seed and stream_hash. A run paired with at least one of its
    oracle's runs is not listed.

    Returns:
        One row per unpaired run of ``L``: the `CONFIG_KEYS`, ``status``, ``seed``,
        ``run_id``, ``representation``, ``oracle``, ``oracle_run_id``,
        ``oracle_representation`` (of the first oracle run on the stream) and ``reason``:
        'representation differs', 'representation not recorded' (a run written before rows
        recorded it, or of a learner without one) or 'one of them is partial' (the same network
        key, but meta-training stopped early in only one of the two runs). Sorted by
        scenario, learner, preset, config_hash and seed.
    """
    df = _prepare(runs)
    rows = _clean_rows(df, _run_table(df))
    rows = rows[rows["metric"].isin(list(metrics)) & rows["value"].notna()]
    per_run = rows.drop_duplicates("run_id")[
        [*GROUP_KEYS, "seed", "stream_hash", "run_id", "representation"]
    ]
    stream_keys = [*_SCENARIO, "preset", "seed", "stream_hash"]
    stream, oracle = _stream_and_oracle(
        per_run,
        suffix,
        [*stream_keys, "learner", "run_id", "representation", "status"],
        {
            "run_id": "oracle_run_id",
            "representation": "oracle_representation",
            "status": "_oracle_status",
        },
    )
    both = stream.merge(oracle, on=[*stream_keys, "oracle"], how="inner")
    same_rep = (both["representation"] != "") & (
        both["representation"] == both["oracle_representation"]
    )
    both["_paired"] = same_rep & (both["status"] == both["_oracle_status"])
    both["reason"] = np.select(
        [same_rep, (both["representation"] == "") | (both["oracle_representation"] == "")],
        ["one of them is partial", "representation not recorded"],
        "representation differs",
    )
    paired_ids = set(both.loc[both["_paired"], "run_id"])
    out = both[~both["run_id"].isin(paired_ids)].sort_values(
        ["run_id", "oracle_run_id"], kind="stable"
    )
    columns = [
        *GROUP_KEYS,
        "seed",
        "run_id",
        "representation",
        "oracle",
        "oracle_run_id",
        "oracle_representation",
        "reason",
    ]
    out = out.drop_duplicates("run_id")[columns]
    order = ["scenario", "scenario_version", "learner", "preset", "config_hash", "seed"]
    return out.sort_values(order, kind="stable").reset_index(drop=True)


def unpaired_oracle_notes(unpaired: pd.DataFrame) -> list[str]:
    """One line per learner configuration of `unpaired_oracle_runs`, e.g. ``anml (quick) and
    anml-iid: not paired: representation differs (seeds 0, 2)``; the scenario leads the line
    when the runs span several."""
    if unpaired.empty:
        return []
    several = unpaired["scenario"].nunique() > 1
    lines = []
    keys = ["scenario", "scenario_version", "learner", "preset", "config_hash", "oracle"]
    for key, group in unpaired.groupby(keys, sort=True):
        scenario, _, learner, preset, _, oracle = key
        reasons = []
        for reason, sub in group.groupby("reason", sort=True):
            seeds = sorted(int(s) for s in set(sub["seed"]))
            label = "seed" if len(seeds) == 1 else "seeds"
            reasons.append(f"{reason} ({label} {', '.join(str(s) for s in seeds)})")
        lead = f"{scenario}: " if several else ""
        lines.append(f"{lead}{learner} ({preset}) and {oracle}: not paired: {'; '.join(reasons)}")
    return lines


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

    # Primary metric per scenario.
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
    table["rank_by"] = [
        chosen.get((s, v), "")
        for s, v in zip(table["scenario"], table["scenario_version"], strict=True)
    ]

    # Wide metric columns.
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
    wide = wide[[f"{m}_{stat}" for m in order for stat in ("mean", "ci95")]].reset_index()
    table = table.merge(wide, on=list(GROUP_KEYS), how="left")

    rows = _clean_rows(df, per_run)
    taken = [*table.columns, "rank", "mean", "sd", "ci95", "ci_low", "ci_high", "n"]
    carried = _carried(rows, list(GROUP_KEYS), _extra_columns(df, taken))
    table = table.merge(carried, on=list(GROUP_KEYS), how="left")

    # Rank per scenario by its primary metric, among the complete entries run with the same
    # scenario parameters (a 20-way episode set is not ranked against a 5-way one, a
    # meta-training stopped early not against finished ones).
    params = table["scenario_params"] if "scenario_params" in table else ""
    table["_params"] = pd.Series(params, index=table.index).fillna("").astype(str)
    table["rank"] = pd.Series(pd.NA, index=table.index, dtype="Int64")
    complete = table[table["status"] == "complete"]
    for (scen, version, _), idx in complete.groupby([*_SCENARIO, "_params"]).groups.items():
        metric = chosen.get((scen, version))
        if metric is None:
            continue
        higher = higher_is_better if higher_is_better is not None and primary_metric else None
        if higher is None:
            higher = is_higher_better(metric)
        table.loc[idx, "rank"] = _rank_within(table.loc[idx], f"{metric}_mean", higher)

    front = [*CONFIG_KEYS, "rank", "status", "rank_by", "n_seeds", "failed", "duplicates_dropped"]
    table = table.sort_values(
        [*_SCENARIO, "status", "_params", "rank", "learner", "preset", "config_hash"],
        na_position="last",
    )
    table = table[[*front, *[c for c in table.columns if c not in (*front, "_params")]]]
    return table.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Presentation helpers (strings only; nothing is printed)


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


# ----------------------------------------------------------------------------------------------
# Leaderboard Markdown and writing

_DROP_NOTE = (
    "(oracle - stream) / oracle per seed, on the same stream; mean ± 95% CI over "
    "seeds. The oracle trains the same output layer on the same frozen features with "
    "the same samples shuffled i.i.d. (OML/ANML).\n\n"
)


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


# ----------------------------------------------------------------------------------------------
# The generated results page and the README's headline table

README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"
HEADLINE_SCENARIO = "omniglot-stream"
HEADLINE_METRICS = ("meta_test_test_acc", "acc_final_macro")


def _scenario_folders(root: Path) -> list[Path]:
    """The folders directly under `root` that hold a run CSV, sorted by name."""
    folder = Path(root)
    if not folder.is_dir():
        raise HarnessError(
            f"results root {folder} is not a folder; pass the folder holding <scenario>/ folders"
        )
    found = [
        d
        for d in sorted(folder.iterdir())
        if d.is_dir()
        and not d.name.startswith(".")
        and any(p.name not in _LEADERBOARD_FILES for p in d.rglob("*.csv"))
    ]
    if not found:
        raise HarnessError(f"no <scenario>/ folder with run CSV files under {folder}")
    return found


def results_markdown(root: Path, problems: list[tuple[Path, str]] | None = None) -> str:
    """The results page: for each scenario folder under `root` (sorted), its title and
    `leaderboard_markdown` (complete runs, partial runs, the oracle drops and the unpaired
    runs), and the run files left out by `load_runs`, named relative to `root`.

    The same files give the same page, byte for byte. Nothing is written.

    Args:
        root: a results root, e.g. ``published``.
        problems: where given, every left-out file is appended as ``(path, reason)``.

    Raises:
        HarnessError: `root` is not a folder or holds no scenario folder with run CSVs, or as
            `leaderboard_table`.
    """
    root = Path(root)
    lines = [
        f"_Generated by `harness report {root.as_posix()}` from the run files; do not edit by "
        "hand: re-run the command._",
        "",
        "# Results",
        "",
        "Mean ± 95% CI (Student t) over seeds, per configuration; ranks within a scenario, "
        "its version and its parameters. Only runs whose files match their manifest are "
        "read.",
        "",
    ]
    for folder in _scenario_folders(root):
        left_out: list[tuple[Path, str]] = []
        lines += [f"## {folder.name}", ""]
        try:
            runs = load_runs(folder, left_out)
        except HarnessError:
            if not left_out:
                raise
            runs = None
            lines += ["No valid run.", ""]
        if runs is not None:
            table = leaderboard_table(runs)
            body = leaderboard_markdown(table, oracle_drops(runs), unpaired_oracle_runs(runs), 3)
            lines += [body.rstrip("\n"), ""]
        if left_out:
            lines += ["### Run files left out", ""]
            lines += [
                f"- `{path.relative_to(root).as_posix()}`: {_escape(why)}" for path, why in left_out
            ]
            lines.append("")
        if problems is not None:
            problems.extend(left_out)
    return "\n".join(lines)


def headline_markdown(root: Path) -> str:
    """A compact table of the complete runs in ``root/omniglot-stream`` for the README: learner,
    preset, the scenario parameters that differ between rows (e.g. n_classes), seeds, and
    `HEADLINE_METRICS` as mean ± 95% CI over seeds, in leaderboard order.

    Raises:
        HarnessError: the folder is missing or holds no valid, complete run.
    """
    folder = Path(root) / HEADLINE_SCENARIO
    if not folder.is_dir():
        raise HarnessError(
            f"no {HEADLINE_SCENARIO}/ folder under {root} for the headline table; run "
            f"{HEADLINE_SCENARIO} into {root} first"
        )
    table = leaderboard_table(load_runs(folder))
    table = table[(table["status"] == "complete") & (table["n_seeds"] > 0)].reset_index(drop=True)
    if table.empty:
        raise HarnessError(f"no complete run under {folder} for the headline table")
    raw = table.get("scenario_params", pd.Series("", index=table.index))
    params = [json.loads(p) if isinstance(p, str) and p else {} for p in raw]
    varying = sorted(
        {k for p in params for k in p if len({json.dumps(q.get(k)) for q in params}) > 1}
    )
    out = pd.DataFrame({"learner": table["learner"], "preset": table["preset"]})
    if pd.DataFrame({**out, "_p": raw.fillna("").astype(str)}).duplicated().any():
        out["config"] = table["config_hash"].str[:8]  # two recipes of one learner
    for k in varying:
        out[k] = ["" if p.get(k) is None else str(p.get(k)) for p in params]
    out["seeds"] = table["n_seeds"]
    for m in HEADLINE_METRICS:
        if f"{m}_mean" in table:
            out[f"{m}_mean"] = table[f"{m}_mean"]
            out[f"{m}_ci95"] = table[f"{m}_ci95"]
    note = (
        f"Complete runs in `{folder.as_posix()}`, mean ± 95% CI over seeds; generated by "
        f"`harness report {Path(root).as_posix()}`.\n\n"
    )
    return note + to_markdown(out)


def replace_readme_block(text: str, block: str, where: str = "the README") -> str:
    """`text` with the lines between the line `README_START` and the line `README_END`
    replaced by `block`; everything else, the marker lines included, is kept byte for byte.

    Raises:
        HarnessError: the markers are missing, repeated or in the wrong order.
    """
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == README_START]
    ends = [i for i, line in enumerate(lines) if line.strip() == README_END]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise HarnessError(
            f"{where} needs one line {README_START} and, below it, one line {README_END} "
            f"around the results table (found {len(starts)} and {len(ends)}); add them"
        )
    if not lines[starts[0]].endswith("\n"):
        raise HarnessError(f"{where}: the line {README_START} must end with a line break")
    body = block if block.endswith("\n") or not block else block + "\n"
    return "".join(lines[: starts[0] + 1]) + body + "".join(lines[ends[0] :])
