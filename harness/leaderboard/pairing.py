"""Paired statistics on identical streams: differences against a baseline learner
(`paired_differences`) and the relative drop of a learner below its i.i.d. oracle
(`oracle_drops`), with the runs that have an oracle on their stream but are not paired with it
(`unpaired_oracle_runs`, `unpaired_oracle_notes`).

Computation only: every function takes and returns pandas objects (or strings) and prints
nothing. Failed runs and superseded re-runs are left out first, as in `aggregate`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from harness.errors import HarnessError
from harness.leaderboard.aggregate import (
    _SCENARIO,
    CONFIG_KEYS,
    GROUP_KEYS,
    _carried,
    _extra_columns,
    _finished_rows,
    _unknown,
    _valued,
    _with_ci,
)
from harness.metrics import relative_drop

ORACLE_SUFFIX = "-iid"
"""The i.i.d. oracle of learner ``L`` is the learner ``L + ORACLE_SUFFIX`` (e.g. ``anml-iid``)."""

ORACLE_METRICS: tuple[str, ...] = ("meta_test_test_acc", "meta_test_train_acc")
"""Metrics whose relative drop below the i.i.d. oracle `oracle_drops` reports by default."""

_DROP_KEYS = [*CONFIG_KEYS, "oracle", "oracle_config_hash", "status"]
_DROP_STATS = ["mean_stream", "mean_oracle", "mean_drop", "sd_drop", "ci95", "ci_low", "ci_high"]
_BASE_PAIR_KEYS = [*_SCENARIO, "seed", "stream_hash"]


# ----------------------------------------------------------------------------------------------
# Paired differences against a baseline


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
    _, rows = _finished_rows(runs)
    if metric not in set(rows["metric"]):
        raise _unknown("metric", metric, sorted(set(rows["metric"])))
    rows = _valued(rows, [metric])
    base = _baseline_rows(rows, baseline)
    others = rows[(rows["learner"] != baseline)]
    others = others[others.set_index(_SCENARIO).index.isin(base.set_index(_SCENARIO).index)]
    merged = others.merge(base, on=_BASE_PAIR_KEYS, how="left")
    merged["_diff"] = merged["value"] - merged["_base"]
    base_info = base[[*_SCENARIO, "baseline_preset", "baseline_config_hash"]].drop_duplicates()

    records = [
        {
            **dict(zip(GROUP_KEYS, key, strict=True)),
            "baseline": baseline,
            "metric": metric,
            **_paired_stats(group),
        }
        for key, group in merged.groupby(list(GROUP_KEYS), sort=True)
    ]
    columns = [*GROUP_KEYS, "baseline", "metric", "mean_diff", "sd_diff", "n_pairs", "p_value"]
    out = pd.DataFrame.from_records(records, columns=columns)
    out["n_pairs"] = out["n_pairs"].astype("int64")
    out = _with_ci(out, "mean_diff", "sd_diff", "n_pairs")
    out = out.merge(base_info, on=_SCENARIO, how="left")
    baseline_columns = ["baseline", "baseline_preset", "baseline_config_hash", "metric"]
    stats_columns = ["mean_diff", "sd_diff", "ci95", "ci_low", "ci_high", "n_pairs", "p_value"]
    return out[[*GROUP_KEYS, *baseline_columns, *stats_columns]]


def _baseline_rows(rows: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """The baseline's complete rows, keyed by `_BASE_PAIR_KEYS`, with its value in ``_base``
    and its ``baseline_preset`` and ``baseline_config_hash``.

    Raises:
        HarnessError: the baseline has no rows, or several configurations in a scenario.
    """
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
    return base[[*_BASE_PAIR_KEYS, "value", "preset", "config_hash"]].rename(
        columns={
            "value": "_base",
            "preset": "baseline_preset",
            "config_hash": "baseline_config_hash",
        }
    )


def _paired_stats(group: pd.DataFrame) -> dict[str, float | int]:
    """``mean_diff``, ``sd_diff``, ``n_pairs`` and ``p_value`` of one learner's differences
    (the rows that have a baseline value)."""
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
    return {
        "mean_diff": float(diff.mean()) if n else math.nan,
        "sd_diff": float(diff.std(ddof=1)) if n >= 2 else math.nan,
        "n_pairs": n,
        "p_value": p_value,
    }


# ----------------------------------------------------------------------------------------------
# The i.i.d. oracle


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
    df, rows = _finished_rows(runs)
    rows = _valued(rows, metrics)
    pairs = _drop_pairs(rows, suffix)
    keys = [*_DROP_KEYS, "metric"]
    order = [*keys, *_DROP_STATS, "n_pairs"]
    if pairs.empty:
        return pd.DataFrame(columns=order)
    out = _drop_stats(pairs, keys)[order]
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


def _drop_pairs(rows: pd.DataFrame, suffix: str) -> pd.DataFrame:
    """Stream rows paired with their oracle's (``_oracle_run``, ``_oracle_value``) and the
    relative drop in ``_drop``; pairs without a drop are left out."""
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
    return pairs[pairs["_drop"].notna()]


def _drop_stats(pairs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group of `keys`: the means, ``sd_drop``, ``n_pairs`` and the CI of the drop."""
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
    return _with_ci(out, "mean_drop", "sd_drop", "n_pairs")


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
    _, rows = _finished_rows(runs)
    rows = _valued(rows, metrics)
    per_run = rows.drop_duplicates("run_id")[
        [*GROUP_KEYS, "seed", "stream_hash", "run_id", "representation"]
    ]
    both = _oracle_candidates(per_run, suffix)
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


def _oracle_candidates(per_run: pd.DataFrame, suffix: str) -> pd.DataFrame:
    """Each stream run with each oracle run on its stream: whether they pair (``_paired``) and
    the ``reason`` they would not."""
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
    return both


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
