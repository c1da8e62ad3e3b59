"""One learner against named opponents, per scenario variant, on identical streams: paired
differences over seeds with their 95% CI and a verdict (`head_to_head`, `head_to_head_markdown`).

An opponent is a learner id, or a family `prefix*` (e.g. ``river:*``) that stands for the
family's best configuration on that variant by its mean. The metric is the variant's ranking
metric (`PRIMARY_METRICS`). A verdict says `wins` or `loses` only where the CI of the paired
difference excludes 0; otherwise `no clear difference`.

Computation and strings only; nothing is printed or written.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.leaderboard.aggregate import (
    PRIMARY_METRICS,
    _finished_rows,
    is_higher_better,
)
from harness.leaderboard.compact import _params_column
from harness.leaderboard.markdown import _escape, pm, to_markdown
from harness.leaderboard.pairing import paired_differences

COLUMNS = ["scenario", "scenario_version", "scenario_params", "learner", "opponent", "metric",
           "mean", "opponent_mean", "mean_diff", "ci95", "ci_low", "ci_high", "n_pairs",
           "verdict"]


def _variants(rows: pd.DataFrame) -> list[pd.DataFrame]:
    keyed = rows.assign(scenario_params=_params_column(rows))
    return [g for _, g in keyed.groupby(["scenario", "scenario_version", "scenario_params"],
                                        sort=True)]


def _metric(rows: pd.DataFrame) -> str:
    present = set(rows["metric"])
    return next((m for m in PRIMARY_METRICS if m in present), "")


def _means(rows: pd.DataFrame, metric: str) -> pd.Series:
    """Mean of `metric` per learner over its complete runs."""
    done = rows[(rows["metric"] == metric) & (rows["status"] == "complete")]
    return done.groupby("learner")["value"].mean()


def _resolve(opponent: str, means: pd.Series, higher: bool) -> str:
    """The learner an opponent names on one variant ('' when it has no complete run there)."""
    if not opponent.endswith("*"):
        return opponent if opponent in means.index else ""
    family = means[[str(x).startswith(opponent[:-1]) for x in means.index]].dropna()
    if family.empty:
        return ""
    return str(family.idxmax() if higher else family.idxmin())


def head_to_head(runs: pd.DataFrame, learner: str, opponents: Sequence[str]) -> pd.DataFrame:
    """`learner` against each opponent on every scenario variant where both have complete
    runs: the paired difference (learner - opponent) of the variant's ranking metric over the
    seeds both ran on the same stream (`paired_differences`), and the verdict in the
    metric's direction. Columns `COLUMNS`; empty when nothing pairs."""
    _, rows = _finished_rows(runs)
    records = []
    for variant in _variants(rows):
        metric = _metric(variant)
        if not metric:
            continue
        higher = is_higher_better(metric)
        means = _means(variant, metric)
        if learner not in means.index:
            continue
        for opponent in opponents:
            other = _resolve(opponent, means, higher)
            if not other or other == learner:
                continue
            pair = variant[variant["learner"].isin([learner, other])]
            diff = paired_differences(pair, metric, other)
            diff = diff[(diff["learner"] == learner) & (diff["status"] == "complete")]
            if diff.empty or int(diff["n_pairs"].iloc[0]) == 0:
                continue
            d = diff.iloc[0]
            records.append({
                "scenario": variant["scenario"].iloc[0],
                "scenario_version": variant["scenario_version"].iloc[0],
                "scenario_params": variant["scenario_params"].iloc[0],
                "learner": learner, "opponent": other, "metric": metric,
                "mean": float(means[learner]), "opponent_mean": float(means[other]),
                "mean_diff": float(d["mean_diff"]), "ci95": float(d["ci95"]),
                "ci_low": float(d["ci_low"]), "ci_high": float(d["ci_high"]),
                "n_pairs": int(d["n_pairs"]),
                "verdict": verdict(float(d["ci_low"]), float(d["ci_high"]), higher),
            })
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def verdict(ci_low: float, ci_high: float, higher_is_better: bool) -> str:
    """'wins' / 'loses' when the CI of (learner - opponent) excludes 0, in the metric's
    direction; 'no clear difference' otherwise (also for a single pair, whose CI is NaN).
    A zero-width CI (identical differences on every seed) counts as excluding 0 when the
    difference is not 0."""
    if np.isnan(ci_low) or np.isnan(ci_high) or ci_low <= 0.0 <= ci_high:
        return "no clear difference"
    above = ci_low > 0.0
    return "wins" if above == higher_is_better else "loses"


def head_to_head_markdown(table: pd.DataFrame, level: int = 3) -> str:
    """`head_to_head`'s table as Markdown, one table per scenario variant."""
    if table.empty:
        return ""
    parts = []
    for (scenario, params), rows in table.groupby(["scenario", "scenario_params"], sort=False):
        first = rows.iloc[0]
        better = "higher" if is_higher_better(first["metric"]) else "lower"
        title = f"{'#' * level} {scenario}" + (f" `{params}`" if params else "")
        lead = (f"{first['learner']} against each opponent on the same streams: "
                f"{first['metric']} ({better} is better), paired difference "
                f"({first['learner']} - opponent) with its 95% CI over seeds.")
        body = pd.DataFrame({
            "opponent": rows["opponent"],
            first["learner"]: [f"{v:.4g}" for v in rows["mean"]],
            "opponent's": [f"{v:.4g}" for v in rows["opponent_mean"]],
            "difference": [pm(m, h) for m, h in zip(rows["mean_diff"], rows["ci95"],
                                                     strict=True)],
            "seeds": rows["n_pairs"],
            "verdict": rows["verdict"],
        })
        parts.append(f"{_escape(title)}\n\n{_escape(lead)}\n\n{to_markdown(body)}")
    return "\n\n".join(parts) + "\n"
