"""The CLI's terminal tables (rich): a command's runs, the leaderboard and the drop below the
i.i.d. oracle. Only the CLI imports this module; the files are written by harness.leaderboard.

Every table fits the terminal (`FitTable`): an id (a learner, a run id, a scenario parameter)
is never cut; a metric's `mean ± ci` may wrap onto two lines and its header at underscores;
when even that is too wide, the least important columns are left out, and the caption names
them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

_BORDER = 3
"""Cells per column besides its content: the padding on each side and one border."""


@dataclass
class Col:
    """One column: its header, its cells as text (never markup), and how it may give way."""

    name: str
    cells: list[str] = field(default_factory=list)
    wrap: bool = False
    """A metric value: may wrap (`mean ±` / `ci`), its header at underscores."""
    priority: int = 1
    """Left out lowest first (the rightmost of equals first) when the table is too wide."""
    keep: bool = False
    """An id: never left out, never cut."""
    justify: str = "right"

    def natural(self) -> int:
        return max([cell_len(self.name), *(cell_len(c) for c in self.cells)])

    def minimum(self) -> int:
        if not self.wrap:
            return self.natural()
        pieces = re.findall(r"[^_]+_?|_", self.name) or [""]
        least = max(cell_len(p) for p in pieces)
        for c in self.cells:
            mean, sep, ci = c.partition(" ± ")
            words = [mean + " ±", ci] if sep else c.split()
            least = max(least, *(cell_len(w) for w in words or [""]))
        return least


def _header(name: str, width: int) -> str:
    """`name` broken after underscores into lines of at most `width` cells."""
    lines = [""]
    for piece in re.findall(r"[^_]+_?|_", name):
        if lines[-1] and cell_len(lines[-1] + piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)


@dataclass
class FitTable:
    """A table built for the width it is printed at (a rich renderable)."""

    title: str
    cols: list[Col]
    caption: str = ""

    def __rich_console__(self, console: Any, options: Any) -> Any:
        yield self.table(options.max_width)

    def table(self, width: int) -> Table:
        cols, dropped = list(self.cols), []
        while True:
            extra = _BORDER * len(cols) + 1
            if sum(c.natural() for c in cols) + extra <= width:
                return self._build(cols, dropped, {})
            optional = [c for c in cols if not c.keep]
            if sum(c.minimum() for c in cols) + extra <= width or not optional:
                return self._build(cols, dropped, self._widths(cols, width - extra))
            victim = min(reversed(optional), key=lambda c: c.priority)
            cols.remove(victim)
            dropped.append(victim.name)

    @staticmethod
    def _widths(cols: list[Col], room: int) -> dict[str, int]:
        """Widths of the wrapping columns: each its minimum, the room left shared out."""
        widths = {c.name: c.minimum() for c in cols if c.wrap}
        spare = room - sum(c.minimum() for c in cols)
        growing = [c for c in cols if c.wrap]
        while spare > 0 and growing:
            for c in list(growing):
                if spare <= 0:
                    break
                if widths[c.name] >= c.natural():
                    growing.remove(c)
                    continue
                widths[c.name] += 1
                spare -= 1
        return widths

    def _build(self, cols: list[Col], dropped: list[str], widths: dict[str, int]) -> Table:
        caption = self.caption
        if dropped:
            caption = (f"{caption}; " if caption else "") + (
                f"not shown for the terminal's width: {', '.join(dropped)}")
        table = Table(title=Text(self.title), caption=Text(caption) if caption else None)
        for c in cols:
            w = widths.get(c.name)
            table.add_column(Text(_header(c.name, w) if w else c.name), justify=c.justify,
                             no_wrap=w is None, min_width=None if w else c.natural(), width=w)
        for i in range(len(self.cols[0].cells) if self.cols else 0):
            table.add_row(*[Text(c.cells[i]) for c in cols])
        return table


def _mean_ci(mean: Any, half: Any) -> str:
    import pandas as pd

    return ("" if pd.isna(mean) else f"{mean:.3f}" if pd.isna(half)
            else f"{mean:.3f} ± {half:.3f}")


RESULT_METRICS = ["meta_test_test_acc", "acc_final_macro", "forgetting_max", "online_acc",
                  "episode_acc", "mse_final", "wall_s"]


def results_table(results: list[Any], title: str) -> FitTable:
    """A command's runs: learner, seed, status, the lr chosen and the key metrics."""
    present = [k for k in RESULT_METRICS if any(k in r.metrics for r in results)]
    lrs = [r.extra.get("lr", "") for r in results]
    cols = [Col("learner", [r.learner for r in results], keep=True, justify="left"),
            Col("seed", [str(r.seed) for r in results], keep=True),
            Col("status", [r.status for r in results], priority=8, justify="left"),
            Col("lr", [f"{lr:.0e}" if isinstance(lr, float) else "" for lr in lrs], priority=2)]
    for i, k in enumerate(present):  # the first (the headline metric) outlasts the lr
        cols.append(Col(k, [f"{r.metrics[k]:.3f}" if k in r.metrics else "" for r in results],
                        wrap=True, priority=0 if k == "wall_s" else 3 if i == 0 else 1))
    return FitTable(title, cols)


KEY_METRICS = ["meta_test_test_acc", "acc_final_macro", "forgetting_max", "online_acc",
               "episode_acc", "episode_mse", "mse_final", "wall_s"]


def _steps(table: Any) -> tuple[Any, Any, Any]:
    """(stopped, asked, done) per row: meta-training stopped by a time limit, in rows without a
    status too (older tables); rows written before `meta_train_complete` existed tell it by
    steps done < meta_steps."""
    import pandas as pd

    cut = pd.Series(False, index=table.index)
    if "meta_train_complete_mean" in table.columns:
        cut |= table["meta_train_complete_mean"] < 1
    asked = pd.Series(float("nan"), index=table.index)
    if "meta_steps" in table.columns:
        asked = pd.to_numeric(table["meta_steps"], errors="coerce")
    if "meta_steps_asked_mean" in table.columns:
        asked = table["meta_steps_asked_mean"].fillna(asked)
    if "meta_steps_done_mean" in table.columns:
        cut |= table["meta_steps_done_mean"] < asked
    done = table.get("meta_steps_done_mean", pd.Series(float("nan"), index=table.index))
    return cut, asked, done


def ranked_by(table: Any) -> list[str]:
    """The metrics the leaderboard `table` ranks by (its `rank_by` column), in order."""
    if "rank_by" not in table.columns:
        return []
    return [str(m) for m in dict.fromkeys(table["rank_by"].dropna()) if str(m)]


def ranking_note(table: Any) -> str:
    """'ranked by meta_test_test_acc (higher is better)', or '' for a table without ranks."""
    from harness.errors import HarnessError
    from harness.leaderboard import is_higher_better

    notes = []
    for m in ranked_by(table):
        try:
            notes.append(f"{m} ({'higher' if is_higher_better(m) else 'lower'} is better)")
        except HarnessError:
            notes.append(m)
    return f"ranked by {', '.join(notes)}" if notes else ""


class _Board:
    """The terminal view of one leaderboard table: which columns it needs, and its rows."""

    def __init__(self, table: Any) -> None:
        import json

        import pandas as pd

        self.table = table
        self.params = [json.loads(p) if isinstance(p, str) and p else {}
                       for p in table.get("scenario_params", pd.Series([""] * len(table)))]
        self.varying = sorted({k for p in self.params for k in p
                               if len({str(q.get(k)) for q in self.params}) > 1})
        self.ranked = [m for m in ranked_by(table) if f"{m}_mean" in table.columns]
        self.metrics = list(dict.fromkeys(
            [*self.ranked, *(m for m in KEY_METRICS if f"{m}_mean" in table.columns)]))
        # Failed or diverged runs: a column only where there are any.
        self.failed = "failed" in table.columns and bool((table["failed"].fillna(0) > 0).any())
        # Two configurations of one learner (e.g. different meta_steps): tell them apart.
        same = ["learner", "preset", *(["status"] if "status" in table.columns else [])]
        self.config = "config_hash" in table.columns and bool(table.duplicated(same).any())
        self.cut, self.asked, self.done = _steps(table)

    def _steps_cell(self, i: int, ranked: bool) -> str:
        import pandas as pd

        d, a = self.done.iloc[i], self.asked.iloc[i]
        if not ranked:
            return "" if pd.isna(d) else f"{d:.0f}" if pd.isna(a) else f"{d:.0f} of {a:.0f}"
        return "" if pd.isna(d) else f"{d:.0f}{' (stopped)' if self.cut.iloc[i] else ''}"

    def render(self, rows: Any, name: str, ranked: bool) -> FitTable:
        import pandas as pd

        idx = [i for i in range(len(self.table)) if rows.iloc[i]]
        t = self.table.iloc[idx]
        cols = [Col("rank", ["-" if pd.isna(r) else str(r) for r in t["rank"]], keep=True)
                ] if ranked else []
        cols += [Col("learner", [str(x) for x in t["learner"]], keep=True, justify="left"),
                 Col("preset", [str(x) for x in t["preset"]], priority=3, justify="left")]
        if self.config:
            cols.append(Col("config", [str(x)[:8] for x in t["config_hash"]], keep=True))
        cols += [Col(k, [str(self.params[i].get(k, "")) for i in idx], keep=True)
                 for k in self.varying]
        cols.append(Col("seeds", [str(x) for x in t["n_seeds"]], priority=2))
        if self.failed:
            cols.append(Col("failed", [str(int(x)) for x in t["failed"]], priority=6))
        if not ranked or bool(self.cut[rows].any()):
            cols.append(Col("meta-steps", [self._steps_cell(i, ranked) for i in idx],
                            priority=5))
        for m in self.metrics:
            cols.append(Col(m, [_mean_ci(a, b) for a, b in zip(t[f"{m}_mean"], t[f"{m}_ci95"],
                                                                 strict=True)],
                            wrap=True, keep=m in self.ranked, priority=0 if m == "wall_s" else 1))
        return FitTable(name, cols)


def leaderboard_rich(table: Any, title: str) -> Any:
    """The leaderboard's key columns as `mean ± ci95`, the ranked metric first and named in
    the title; scenario parameters only where they differ between rows. Partial runs
    (meta-training stopped early, `status` 'partial') come in a second table, unranked, with
    their meta-steps done of asked."""
    import pandas as pd
    from rich.console import Group

    board = _Board(table)
    note = ranking_note(table)
    title = f"{title}; {note}" if note else title
    partial = (table["status"] == "partial" if "status" in table.columns
               else pd.Series(False, index=table.index))
    if not partial.any():
        return board.render(~partial, title, True)
    parts = [board.render(~partial, title, True)] if (~partial).any() else []
    parts.append(board.render(partial, "partial runs: meta-training stopped early (steps done "
                                       "of steps asked); not ranked", False))
    return Group(*parts)


def oracle_rich(drops: Any, unpaired: Any = None) -> Any:
    """The relative drop below the i.i.d. oracle (`oracle_drops`): one row per learner and
    metric, the learner's and the oracle's mean accuracy and the drop as `mean ± ci95`; then
    one line per learner whose runs have an oracle on the same stream but are not paired with
    it (`unpaired_oracle_runs`, e.g. 'not paired: representation differs')."""
    from rich.console import Group

    from harness.leaderboard import unpaired_oracle_notes

    parts: list[Any] = []
    if not drops.empty:
        rows = [r for _, r in drops.iterrows()]
        cols = [Col("learner", [str(r["learner"]) + (" (partial)" if r.get("status") ==
                                                     "partial" else "") for r in rows],
                    keep=True, justify="left"),
                Col("oracle", [str(r["oracle"]) for r in rows], priority=7, justify="left"),
                Col("pairs", [str(r["n_pairs"]) for r in rows], priority=2),
                Col("metric", [str(r["metric"]).removeprefix("meta_test_") for r in rows],
                    keep=True, justify="left"),
                Col("stream", [f"{r['mean_stream']:.3f}" for r in rows], priority=4),
                Col("oracle acc", [f"{r['mean_oracle']:.3f}" for r in rows], priority=3),
                Col("drop", [_mean_ci(r["mean_drop"], r["ci95"]) for r in rows], wrap=True,
                    keep=True)]
        parts.append(FitTable("drop below the i.i.d. oracle: (oracle - stream) / oracle", cols))
    if unpaired is not None:
        parts += [Text(note) for note in unpaired_oracle_notes(unpaired)]
    return Group(*parts)
