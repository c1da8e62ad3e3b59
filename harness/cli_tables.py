"""The CLI's terminal tables (rich): a command's runs, the leaderboard and the drop below the
i.i.d. oracle. Only the CLI imports this module; the files are written by harness.leaderboard."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table


def results_table(results: list[Any], title: str) -> Table:
    keys = ["meta_test_test_acc", "acc_final_macro", "forgetting_max", "online_acc",
            "episode_acc", "mse_final", "wall_s"]
    present = [k for k in keys if any(k in r.metrics for r in results)]
    table = Table(title=title)
    for col in ["learner", "seed", "status", "lr", *present]:
        table.add_column(col, justify="right" if col not in ("learner", "status") else "left")
    for r in results:
        lr = r.extra.get("lr", "")
        cells = [escape(r.learner), str(r.seed), r.status,
                 f"{lr:.0e}" if isinstance(lr, float) else ""]
        cells += [f"{r.metrics[k]:.3f}" if k in r.metrics else "" for k in present]
        table.add_row(*cells)
    return table


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
        self.metrics = [m for m in KEY_METRICS if f"{m}_mean" in table.columns]
        # Failed or diverged runs: a column only where there are any.
        self.failed = "failed" in table.columns and bool((table["failed"].fillna(0) > 0).any())
        # Two configurations of one learner (e.g. different meta_steps): tell them apart.
        same = ["learner", "preset", *(["status"] if "status" in table.columns else [])]
        self.config = "config_hash" in table.columns and bool(table.duplicated(same).any())
        self.cut, self.asked, self.done = _steps(table)

    def _cells(self, i: int, row: Any, ranked: bool, stopped: bool) -> list[str]:
        import pandas as pd

        cells = ["-" if pd.isna(row["rank"]) else str(row["rank"])] if ranked else []
        cells += [str(row["learner"]), str(row["preset"])]
        cells += [str(row["config_hash"])[:8]] if self.config else []
        cells += [str(self.params[i].get(k, "")) for k in self.varying]
        cells.append(str(row["n_seeds"]))
        if self.failed:
            cells.append(str(int(row["failed"])))
        if stopped:
            d, a = self.done.iloc[i], self.asked.iloc[i]
            if not ranked:
                cells.append("" if pd.isna(d) else f"{d:.0f}" if pd.isna(a)
                             else f"{d:.0f} of {a:.0f}")
            else:
                cells.append("" if pd.isna(d) else f"{d:.0f}"
                             f"{' (stopped)' if self.cut.iloc[i] else ''}")
        for m in self.metrics:
            mean, half = row[f"{m}_mean"], row[f"{m}_ci95"]
            cells.append("" if pd.isna(mean) else f"{mean:.3f}" if pd.isna(half)
                         else f"{mean:.3f} ± {half:.3f}")
        return cells

    def render(self, rows: Any, name: str, ranked: bool) -> Table:
        rich_table = Table(title=name)
        stopped = not ranked or bool(self.cut[rows].any())
        for col in [*(["rank"] if ranked else []), "learner", "preset",
                    *(["config"] if self.config else []), *self.varying, "seeds",
                    *(["failed"] if self.failed else []), *(["meta-steps"] if stopped else []),
                    *self.metrics]:
            rich_table.add_column(col, justify="left" if col in ("learner", "preset")
                                  else "right")
        for i, (_, row) in enumerate(self.table.iterrows()):
            if rows.iloc[i]:
                rich_table.add_row(*self._cells(i, row, ranked, stopped))
        return rich_table


def leaderboard_rich(table: Any, title: str) -> Any:
    """The leaderboard's key columns as `mean ± ci95`; scenario parameters only where they
    differ between rows. Partial runs (meta-training stopped early, `status` 'partial') come
    in a second table, unranked, with their meta-steps done of asked."""
    import pandas as pd
    from rich.console import Group

    board = _Board(table)
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
    import pandas as pd
    from rich.console import Group
    from rich.text import Text

    from harness.leaderboard import unpaired_oracle_notes

    parts: list[Any] = []
    if not drops.empty:
        table = Table(title="drop below the i.i.d. oracle: (oracle - stream) / oracle")
        for col in ("learner", "oracle", "pairs", "metric", "stream", "oracle acc", "drop"):
            table.add_column(col, justify="left" if col in ("learner", "oracle", "metric")
                             else "right")
        for _, r in drops.iterrows():
            drop = (f"{r['mean_drop']:.3f}" if pd.isna(r["ci95"])
                    else f"{r['mean_drop']:.3f} ± {r['ci95']:.3f}")
            learner = str(r["learner"]) + (" (partial)" if r.get("status") == "partial" else "")
            table.add_row(learner, str(r["oracle"]), str(r["n_pairs"]),
                          str(r["metric"]).removeprefix("meta_test_"), f"{r['mean_stream']:.3f}",
                          f"{r['mean_oracle']:.3f}", drop)
        parts.append(table)
    if unpaired is not None:
        parts += [Text(note) for note in unpaired_oracle_notes(unpaired)]
    return Group(*parts)
