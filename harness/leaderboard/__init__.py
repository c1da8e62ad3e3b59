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
      t_{0.975, n-1} * sd / sqrt(n) with sd the sample standard deviation (ddof=1); NaN for n = 1
      (`harness.metrics.t_ci95_half_width`).

Modules (every public name is importable from `harness.leaderboard`):
    - `load`: the row schema of a run CSV (from `harness.results.COLUMNS`) and `load_runs`.
    - `aggregate`: run statuses, re-runs, per-configuration counts, `aggregate` and `rank`.
    - `pairing`: `paired_differences` and the i.i.d. oracle's `oracle_drops`.
    - `variants`: scenario parameters: parsing, numeric order, labels.
    - `markdown`: Markdown tables and cells (`to_markdown`, `oracle_drops_markdown`).
    - `compact`: ``leaderboard.md``, one compact table per scenario variant
      (`leaderboard_markdown`, `shown_metrics`).
    - `render`: `leaderboard_table`, `leaderboard_text` (Markdown or CSV text) and
      `write_leaderboard`.
    - `report`: the results page and the README's headline table.
"""

from harness.leaderboard.aggregate import (
    CONFIG_KEYS,
    GROUP_KEYS,
    HIGHER_IS_BETTER,
    PRIMARY_METRICS,
    STATUS_METRICS,
    aggregate,
    is_higher_better,
    kept_runs,
    rank,
)
from harness.leaderboard.compact import (
    EPISODE_MARK,
    MAX_OTHER_METRICS,
    PARTIAL_TITLE,
    leaderboard_markdown,
    shown_metrics,
)
from harness.leaderboard.load import REQUIRED_COLUMNS, ResultFileWarning, load_runs
from harness.leaderboard.markdown import oracle_drops_markdown, to_markdown
from harness.leaderboard.pairing import (
    ORACLE_METRICS,
    ORACLE_SUFFIX,
    oracle_drops,
    paired_differences,
    unpaired_oracle_notes,
    unpaired_oracle_runs,
)
from harness.leaderboard.render import (
    FORMATS,
    leaderboard_table,
    leaderboard_text,
    write_leaderboard,
)
from harness.leaderboard.report import (
    HEADLINE_METRICS,
    HEADLINE_SCENARIO,
    README_END,
    README_START,
    headline_markdown,
    replace_readme_block,
    results_markdown,
    write_leaderboards,
)
from harness.leaderboard.variants import (
    params_sort_key,
    parse_params,
    variant_label,
    varying_keys,
)

__all__ = [
    "CONFIG_KEYS",
    "EPISODE_MARK",
    "FORMATS",
    "GROUP_KEYS",
    "HEADLINE_METRICS",
    "HEADLINE_SCENARIO",
    "HIGHER_IS_BETTER",
    "MAX_OTHER_METRICS",
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
    "kept_runs",
    "leaderboard_markdown",
    "leaderboard_table",
    "leaderboard_text",
    "load_runs",
    "oracle_drops",
    "oracle_drops_markdown",
    "paired_differences",
    "params_sort_key",
    "parse_params",
    "rank",
    "replace_readme_block",
    "results_markdown",
    "shown_metrics",
    "write_leaderboards",
    "to_markdown",
    "unpaired_oracle_notes",
    "unpaired_oracle_runs",
    "variant_label",
    "varying_keys",
    "write_leaderboard",
]
