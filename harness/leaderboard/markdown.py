"""Markdown tables without the `tabulate` package: `to_markdown` (any `leaderboard_table`-shaped
frame, every column), the cell formats shared by every Markdown table of the leaderboard, and
`oracle_drops_markdown` (the drop below the i.i.d. oracle).

Strings only; nothing is written or printed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.leaderboard.pairing import _DROP_KEYS
from harness.leaderboard.variants import (
    format_value,
    params_sort_key,
    parse_params,
    varying_keys,
)


def table_lines(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]
) -> str:
    """A Markdown table of text cells (``|`` escaped); `right` marks right-aligned columns.
    Ends with a newline."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(_escape(c) for c in cells) + " |"

    lines = [line(headers), "| " + " | ".join("---:" if r else "---" for r in right) + " |"]
    lines += [line(r) for r in rows]
    return "\n".join(lines) + "\n"


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
            cells = [pm(m, h) for m, h in zip(table[col], table[f"{metric}_ci95"], strict=True)]
            headers.append(metric)
            right.append(True)
        else:
            cells = [_cell(v) for v in table[col]]
            headers.append(name)
            right.append(pd.api.types.is_numeric_dtype(table[col]))
        columns.append(cells)
    return table_lines(headers, list(zip(*columns, strict=True)) if columns else [], right)


def missing(v: object) -> bool:
    """Whether a cell value is missing (None, NA or NaN)."""
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def pm(mean: object, half: object) -> str:
    """``mean ± half`` to 3 decimals; the mean alone where `half` is missing; '' without a
    mean."""
    if missing(mean):
        return ""
    if missing(half):
        return f"{float(mean):.3f}"
    return f"{float(mean):.3f} ± {float(half):.3f}"


def _pm3(mean: object) -> str:
    return pm(mean, math.nan)


def _cell(v: object) -> str:
    if missing(v):
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


def oracle_drops_markdown(drops: pd.DataFrame) -> str:
    """Render `oracle_drops` as a small Markdown table: one row per learner configuration,
    oracle configuration and status; the scenario and its version only where the rows span
    several; the scenario parameters that differ between rows, one column each (rows in their
    numeric order); n_pairs (the most of any metric), and per metric the learner's and the
    oracle's mean (3 decimals) and ``<metric>_drop`` as mean ± ci95."""
    keys = [k for k in _DROP_KEYS if k in drops.columns or drops.empty]
    if drops.empty:
        return to_markdown(pd.DataFrame(columns=[*keys, "n_pairs"]))
    present = list(dict.fromkeys(drops["metric"]))
    wide = drops[keys].drop_duplicates().reset_index(drop=True)
    if "scenario_params" in drops.columns:
        params = drops.groupby(keys, sort=False)["scenario_params"].first().reset_index()
        wide = _with_param_columns(wide.merge(params, on=keys, how="left"))
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
    single = [k for k in ("scenario", "scenario_version") if wide[k].nunique() <= 1]
    return to_markdown(wide.drop(columns=single))


def _with_param_columns(wide: pd.DataFrame) -> pd.DataFrame:
    """`wide` sorted by its ``scenario_params`` (numerically), with that JSON column replaced by
    one text column per parameter that differs between rows."""
    key = wide[["scenario", "scenario_version", "scenario_params"]].fillna("").astype(str)
    key = key.values.tolist()
    order = sorted(range(len(wide)), key=lambda i: (key[i][:2], params_sort_key(key[i][2])))
    wide = wide.iloc[order].reset_index(drop=True)
    params = [parse_params(p) for p in wide["scenario_params"]]
    for k in varying_keys(params):
        wide[k] = [format_value(p[k]) if k in p else "" for p in params]
    return wide.drop(columns="scenario_params")
