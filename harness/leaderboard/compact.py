"""The leaderboard in Markdown, as people paste it (``leaderboard.md``, each scenario of
docs/results.md): `leaderboard_markdown` writes one compact table per scenario variant (one set
of scenario parameters, in numeric order), titled with the scenario, the parameters that tell
its variants apart and the metric that ranks, with rank, learner, preset, seeds, the failed
runs where there are any, and the scenario's headline metrics (`shown_metrics`) as
``mean ± 95% CI``; then the partial runs, unranked, the drop below the i.i.d. oracle and the
runs not paired with it. The wide table, every metric and provenance column, is
``leaderboard.csv``.

Strings only; nothing is written or printed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.leaderboard.aggregate import _SCENARIO, is_higher_better
from harness.leaderboard.markdown import (
    _cell,
    _escape,
    missing,
    oracle_drops_markdown,
    pm,
    table_lines,
    to_markdown,
)
from harness.leaderboard.pairing import unpaired_oracle_notes
from harness.leaderboard.variants import (
    format_value,
    parse_params,
    variant_label,
    varying_keys,
)

PARTIAL_TITLE = "Partial runs: meta-training stopped early (steps done of steps asked); not ranked"
"""Heading of the partial runs' table in ``leaderboard.md``."""

EPISODE_MARK = "†"
"""Marks a cell whose CI is over the test episodes of its one seed, not over seeds."""

MAX_OTHER_METRICS = 5
"""Metrics shown beside the ranking one, at most."""

_STREAM_CLASSIFICATION = (
    "meta_test_test_acc",
    "acc_final_macro",
    "acc_final_micro",
    "forgetting_max",
    "online_acc",
    "acc_sequence_majority",
    "meta_test_train_acc",
)
_STREAM_REGRESSION = ("mse_final", "mse_increase", "online_mse")
_FORECASTING = ("skill_persistence", "online_mse", "test_skill_persistence", "mase",
                "online_mae", "recovery_steps", "mse_after_change", "mse_final")
_MSE_SET = re.compile(r"mse_(\d+)shot_(\d+)step")
_MSE_EXP = re.compile(r"mse_exp(\d+)")

_STEPS = "steps done of asked"
_EPISODE_NOTE = (
    f"{EPISODE_MARK} one seed: the 95% CI over its test episodes (1.96 s/√n), not over seeds.\n"
)
_DROP_NOTE = (
    "(oracle - stream) / oracle per seed, on the same stream; mean ± 95% CI over "
    "seeds. The oracle trains the same output layer on the same frozen features with "
    "the same samples shuffled i.i.d. (OML/ANML).\n\n"
)


# ----------------------------------------------------------------------------------------------
# Which metrics


def shown_metrics(table: pd.DataFrame, rank_by: str = "") -> list[str]:
    """The metrics of a compact table: `rank_by` first, then up to `MAX_OTHER_METRICS` of the
    scenario kind's headline metrics that `table` (a `leaderboard_table`) holds values of:

    - few-shot regression (``episode_mse``): ``episode_mse`` and the ``mse_<K>shot_<S>step``
      set, by K then S;
    - few-shot classification (``episode_acc``): ``episode_acc`` and each further episode set;
    - forecasting streams (``skill_persistence``): ``skill_persistence``, ``online_mse``,
      ``test_skill_persistence``, ``mase``, ``online_mae``, ``recovery_steps``,
      ``mse_after_change``, ``mse_final``;
    - regression streams (``mse_final``): ``mse_final``, ``mse_increase``, ``online_mse``, the
      first and the last function's ``mse_exp<j>``;
    - classification streams: ``meta_test_test_acc``, ``acc_final_macro``,
      ``acc_final_micro``, ``forgetting_max``, ``online_acc``, ``acc_sequence_majority``,
      ``meta_test_train_acc``.

    A metric with the same mean and CI as one already shown in every row is left out (e.g.
    ``acc_final_micro``, by definition ``meta_test_test_acc``).
    """
    present = {
        c[: -len("_mean")]
        for c in table.columns
        if c.endswith("_mean")
        and f"{c[: -len('_mean')]}_ci95" in table.columns
        and table[c].notna().any()
    }
    shown = [rank_by] if rank_by else []
    others = 0
    for m in _candidates(present):
        if others == MAX_OTHER_METRICS:
            break
        if m in present and m not in shown and not any(_same(table, m, s) for s in shown):
            shown.append(m)
            others += 1
    return shown


def _same(table: pd.DataFrame, a: str, b: str) -> bool:
    """Whether metrics `a` and `b` hold the same means and CIs in every row of `table` (e.g.
    ``acc_final_macro`` and ``meta_test_test_acc`` when every class has as many test images):
    one column is enough."""
    if f"{b}_mean" not in table:
        return False
    cols = [[f"{m}_mean", f"{m}_ci95"] for m in (a, b)]
    x, y = (table[c].to_numpy(dtype=float) for c in cols)
    return bool(np.allclose(x, y, rtol=0, atol=1e-9, equal_nan=True))


def _candidates(present: set[str]) -> list[str]:
    """The headline metrics of the scenario kind that reports `present`, in order."""
    numbers = lambda m: [int(x) for x in re.findall(r"\d+", m)]  # noqa: E731
    mse_set = sorted((m for m in present if _MSE_SET.fullmatch(m)), key=numbers)
    if "episode_mse" in present or mse_set:
        return ["episode_mse", *mse_set]
    if "episode_acc" in present:
        sets = sorted(
            m for m in present if m.startswith("episode_acc_") and not m.endswith("_ci95")
        )
        return ["episode_acc", *sets]
    if "skill_persistence" in present:
        return list(_FORECASTING)
    if "mse_final" in present:
        exps = sorted((m for m in present if _MSE_EXP.fullmatch(m)), key=numbers)
        return [*_STREAM_REGRESSION, *exps[:1], *exps[-1:]]
    return list(_STREAM_CLASSIFICATION)


# ----------------------------------------------------------------------------------------------
# The Markdown


def leaderboard_markdown(
    table: pd.DataFrame,
    drops: pd.DataFrame | None = None,
    unpaired: pd.DataFrame | None = None,
    level: int = 2,
) -> str:
    """The leaderboard as Markdown: per scenario variant of the complete groups of
    `leaderboard_table` (in its order: parameters numerically, then rank), a heading naming the
    scenario, the parameters that differ between its variants and the ranking metric, a line
    with the scenario version and all its parameters, and the compact table (`shown_metrics`,
    ``mean ± 95% CI`` over seeds; for one seed, the CI over test episodes where the run records
    one, marked `EPISODE_MARK`); then, under the heading `PARTIAL_TITLE`, the partial groups
    (unranked, with steps done of steps asked); then the oracle drops (`oracle_drops`) and one
    line per learner not paired with its oracle (`unpaired_oracle_runs`), each section where
    there is something to show.

    Args:
        table: a `leaderboard_table`.
        drops: an `oracle_drops` table, or None.
        unpaired: an `unpaired_oracle_runs` table, or None.
        level: Markdown level of the section headings (2 = ``##``).
    """
    heading = "#" * level
    partial = table["status"] == "partial" if "status" in table.columns else table.index < 0
    parts = []
    if table.empty:
        parts.append(to_markdown(table))
    if not partial.all():
        parts += _variant_sections(table, ~partial, heading)
    if partial.any():
        parts.append(f"{heading} {PARTIAL_TITLE}\n\n" + _partial_section(table, partial))
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


def _scenarios(table: pd.DataFrame, rows: pd.Series) -> Iterable[tuple[pd.DataFrame, list[str]]]:
    """Per scenario and version of ``table[rows]`` (in table order): its rows, and the
    parameters that differ between the variants of all its rows in `table`."""
    for (scenario, version), sub in table[rows].groupby(_SCENARIO, sort=False):
        every = table[(table["scenario"] == scenario) & (table["scenario_version"] == version)]
        params = [parse_params(p) for p in _params_column(every)]
        yield sub, varying_keys(params)


def _params_column(rows: pd.DataFrame) -> pd.Series:
    return rows.get("scenario_params", pd.Series("", index=rows.index)).fillna("").astype(str)


def _variant_sections(table: pd.DataFrame, complete: pd.Series, heading: str) -> list[str]:
    """One titled compact table per scenario variant of the ``table[complete]`` rows."""
    sections = []
    for rows, keys in _scenarios(table, complete):
        rank_by = str(rows["rank_by"].iloc[0]) if "rank_by" in rows else ""
        metrics = shown_metrics(rows, rank_by)
        for _, variant in rows.groupby(_params_column(rows), sort=False):
            board, marked = _board(variant, metrics, [], ranked=True)
            sections.append(
                _title(variant.iloc[0], keys, rank_by, heading)
                + board
                + (f"\n{_EPISODE_NOTE}" if marked else "")
            )
    return sections


def _title(first: pd.Series, keys: list[str], rank_by: str, heading: str) -> str:
    """The heading of one variant's table (`first`: one of its rows; `keys`: the parameters
    that tell the scenario's variants apart) and the line with its version and parameters."""
    every = parse_params(first.get("scenario_params", ""))
    label = variant_label(every, keys)
    title = f"{first['scenario']}{', ' + label if label else ''}"
    if rank_by:
        try:
            better = "higher" if is_higher_better(rank_by) else "lower"
            title += f": ranked by {rank_by} ({better} is better)"
        except HarnessError:
            title += f": ranked by {rank_by}"
    listed = variant_label(every, sorted(every))
    about = f"Scenario version {first['scenario_version']}"
    about += f"; parameters `{listed}`" if listed else ""
    return (
        f"{heading} {_escape(title)}\n\n{_escape(about)}. Mean ± 95% CI (Student t) over seeds.\n\n"
    )


def _partial_section(table: pd.DataFrame, partial: pd.Series) -> str:
    """The partial groups: per scenario (named where there are several), a compact table with
    the parameters that tell its variants apart and the meta-steps done of asked."""
    groups = list(_scenarios(table, partial))
    parts = []
    for rows, keys in groups:
        rank_by = str(rows["rank_by"].iloc[0]) if "rank_by" in rows else ""
        first = rows.iloc[0]
        lead = f"{first['scenario']} (version {first['scenario_version']}):\n\n"
        board, marked = _board(rows, shown_metrics(rows, rank_by), keys, ranked=False)
        parts.append(
            (lead if len(groups) > 1 else "") + board + (f"\n{_EPISODE_NOTE}" if marked else "")
        )
    return "\n".join(parts)


def _board(
    rows: pd.DataFrame, metrics: list[str], keys: list[str], ranked: bool
) -> tuple[str, bool]:
    """A compact table of `rows` and whether a cell holds an episode CI (`EPISODE_MARK`):
    rank (when `ranked`), learner, preset, the config hash where one learner and preset has
    several, the parameters `keys`, seeds, failed (where any failed), the meta-steps done of
    asked (when not `ranked`) and each of `metrics`."""
    rows = rows.reset_index(drop=True)
    params = [parse_params(p) for p in _params_column(rows)]
    cols: list[tuple[str, bool, list[str]]] = []
    if ranked:
        cols.append(("rank", True, [_cell(r) for r in rows["rank"]]))
    cols += [(c, False, rows[c].astype(str).tolist()) for c in ("learner", "preset")]
    same = rows[["learner", "preset"]].assign(_p=[json.dumps(p, sort_keys=True) for p in params])
    if same.duplicated().any():
        cols.append(("config", False, rows["config_hash"].astype(str).str[:8].tolist()))
    cols += [(k, False, [format_value(p[k]) if k in p else "" for p in params]) for k in keys]
    cols.append(("seeds", True, [_cell(n) for n in rows["n_seeds"]]))
    if "failed" in rows and (rows["failed"].fillna(0) > 0).any():
        cols.append(("failed", True, [_cell(n) for n in rows["failed"]]))
    if not ranked:
        cols.append((_STEPS, True, _steps(rows)))
    marked = False
    for m in metrics:
        cells = [_metric_cell(r, m) for _, r in rows.iterrows()]
        marked = marked or any(c.endswith(EPISODE_MARK) for c in cells)
        cols.append((m, True, cells))
    headers, right, columns = zip(*cols, strict=True)
    return table_lines(headers, list(zip(*columns, strict=True)), right), marked


def _metric_cell(row: pd.Series, metric: str) -> str:
    """``mean ± ci95`` over seeds; for one seed with a per-episode CI (``<metric>_ci95``
    rows), ``mean ± that CI`` marked `EPISODE_MARK`."""
    mean, half = row.get(f"{metric}_mean"), row.get(f"{metric}_ci95")
    episodes = row.get(f"{metric}_ci95_mean")
    if missing(half) and row.get("n_seeds") == 1 and not missing(mean) and not missing(episodes):
        return f"{pm(mean, episodes)} {EPISODE_MARK}"
    return pm(mean, half)


def _steps(rows: pd.DataFrame) -> list[str]:
    """Per row, the meta-steps done of asked (means over seeds)."""
    nan = pd.Series(float("nan"), index=rows.index)
    done = rows.get("meta_steps_done_mean", nan)
    asked = rows.get("meta_steps_asked_mean", nan)
    return [
        "" if missing(d) else f"{d:g}" if missing(a) else f"{d:g} of {a:g}"
        for d, a in zip(done, asked, strict=True)
    ]
