"""The commands and printing that read results: what `run`/`compare` print after their runs,
`harness leaderboard DIR` and `harness report ROOT`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from harness import cli_tables as tables
from harness.cli_common import DebugOpt, Format, err, guard, out

BOARD = "mean ± 95% CI over seeds"


def print_left_out(problems: list[tuple[Path, str]]) -> None:
    """One line on stderr per run file `load_runs` left out."""
    for path, reason in problems:
        err.print(f"warning: {path}: {reason}; left out", markup=False, highlight=False,
                  soft_wrap=True)


def load_runs_warning(folder: Path) -> Any:
    """`load_runs`, with each left-out run file printed as one warning line on stderr."""
    import warnings

    from harness.leaderboard import ResultFileWarning, load_runs

    problems: list[tuple[Path, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResultFileWarning)  # printed below, once each
        try:
            return load_runs(folder, problems)
        finally:
            print_left_out(problems)


def _say_outcomes(results: list[Any]) -> None:
    for r in results:
        if r.note:  # a re-run made with other provenance replaced an earlier row
            err.print(f"note: {r.note}", markup=False, highlight=False, soft_wrap=True)
        if r.status == "partial":  # real numbers of a shorter recipe: kept, not ranked
            err.print(f"[yellow]{escape(r.learner)} seed {r.seed} partial:[/] meta-training "
                      "stopped early; listed apart from the complete runs, not ranked",
                      soft_wrap=True)
        elif r.status != "ok":
            first = (r.error.strip().splitlines() or [""])[0]
            err.print(f"[red]{escape(r.learner)} seed {r.seed} {r.status}:[/] {escape(first)} "
                      f"(run {r.run_id}; traceback in its .json)", highlight=False,
                      soft_wrap=True)


def finish(results: list[Any], out_dir: Path, scenario: str, title: str) -> None:
    """After `run`/`compare`: the runs, the folder's leaderboard (written too), the drop below
    the oracle of the runs just made, one line per run that did not end ok; exit 1 if any
    failed."""
    from harness.leaderboard import (
        leaderboard_table,
        oracle_drops,
        unpaired_oracle_runs,
        write_leaderboard,
    )
    from harness.results import safe_id

    out.print(tables.results_table(results, title))
    folder = out_dir / safe_id(scenario)
    runs = load_runs_warning(folder)
    csv_path, md_path = write_leaderboard(folder, runs)
    out.print(tables.leaderboard_rich(leaderboard_table(runs), f"leaderboard {folder} ({BOARD})"))
    # The drop of the runs just made, where an oracle ran on the same streams.
    made = runs[runs["run_id"].isin({r.run_id for r in results})]
    drops, unpaired = oracle_drops(made), unpaired_oracle_runs(made)
    if not drops.empty or not unpaired.empty:
        out.print(tables.oracle_rich(drops, unpaired))
    drop_csv = folder / "oracle_drop.csv"
    also = f", {drop_csv}" if drop_csv.exists() else ""
    out.print(f"results: {folder}  leaderboard: {csv_path}, {md_path}{also}", markup=False,
              highlight=False, soft_wrap=True)
    _say_outcomes(results)
    if any(r.status not in ("ok", "partial") for r in results):
        raise typer.Exit(1)


def show_leaderboard(folder: Path) -> None:
    """Write and print the leaderboard of `folder` (after a sweep); nothing for no runs."""
    from harness.leaderboard import leaderboard_table, write_leaderboard

    runs = load_runs_warning(folder)
    if runs.empty:
        return
    write_leaderboard(folder, runs)
    out.print(tables.leaderboard_rich(leaderboard_table(runs), f"leaderboard {folder} ({BOARD})"))


def leaderboard_cmd(
    directory: Annotated[Path, typer.Argument(help="Results folder, e.g. results/omniglot-stream")],
    fmt: Annotated[Format, typer.Option(
        "--format", help="table: the terminal table; md: the Markdown of leaderboard.md; csv: "
                         "the CSV of leaderboard.csv.")] = Format.table,
    metric: Annotated[str | None, typer.Option(
        "--metric", help="Metric to rank by (default: the scenario's headline metric).")] = None,
    debug: DebugOpt = False,
) -> None:
    """Aggregate runs over seeds (mean, 95% CI, rank); write leaderboard.csv and .md."""
    with guard(debug):
        from harness.leaderboard import (
            leaderboard_table,
            oracle_drops,
            unpaired_oracle_runs,
            write_leaderboard,
        )

        runs = load_runs_warning(directory)
        table = leaderboard_table(runs, primary_metric=metric)
        csv_path, md_path = write_leaderboard(directory, runs, primary_metric=metric)
        if fmt is not Format.table:  # the bytes of the file just written, to paste or pipe
            path = csv_path if fmt is Format.csv else md_path
            out.print(path.read_text(encoding="utf-8"), end="", markup=False, highlight=False,
                      soft_wrap=True)
        else:
            out.print(tables.leaderboard_rich(table, f"{directory} ({BOARD})"))
            drops, unpaired = oracle_drops(runs), unpaired_oracle_runs(runs)
            if not drops.empty or not unpaired.empty:
                out.print(tables.oracle_rich(drops, unpaired))
        err.print(f"wrote {csv_path} and {md_path}", markup=False, highlight=False,
                  soft_wrap=True)


def _drift_warnings(root: Path) -> None:
    from harness.experiment import recipe_drift

    runs = sorted(p.with_suffix(".json") for p in Path(root).glob("*/*.csv")
                  if p.with_suffix(".json").exists())
    for run_id, then, now in recipe_drift(runs):
        err.print(f"warning: {run_id} was made with another recipe than its preset's current "
                  f"one (config {then}, now {now}); re-run it", markup=False, highlight=False,
                  soft_wrap=True)


def _new_readme(readme: Path, root: Path) -> str:
    from harness.errors import HarnessError
    from harness.leaderboard import headline_markdown, replace_readme_block

    try:  # bytes: line endings outside the block are kept as they are
        old = readme.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise HarnessError(f"cannot read {readme} ({type(e).__name__}); pass the README that "
                           "holds the results block") from None
    return replace_readme_block(old, headline_markdown(root), str(readme))


def report_cmd(
    root: Annotated[Path, typer.Argument(help="Results root holding <scenario>/ folders, "
                                              "e.g. published")],
    page: Annotated[Path, typer.Option("--out", help="The results page to write.")
                    ] = Path("docs/results.md"),
    readme: Annotated[Path | None, typer.Option(
        "--readme", help="Also put the headline table (omniglot-stream) in this file, between "
                         "the lines <!-- results:start --> and <!-- results:end -->.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Write every scenario folder's leaderboard files, the results page and, with --readme,
    the README's headline table; the same run files give the same bytes."""
    with guard(debug):
        import warnings

        from harness.fileio import atomic_write_bytes, atomic_write_text
        from harness.leaderboard import ResultFileWarning, results_markdown, write_leaderboards

        problems: list[tuple[Path, str]] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResultFileWarning)  # printed below, once each
            text = results_markdown(root, problems)
            _drift_warnings(root)
            print_left_out(problems)
            new_readme = _new_readme(readme, root) if readme is not None else None
        # Nothing is written unless everything could be made.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResultFileWarning)  # printed above
            write_leaderboards(root)
        atomic_write_text(page, text)
        if new_readme is not None and readme is not None:
            atomic_write_bytes(readme, new_readme.encode("utf-8"))
        also = f" and the results block of {readme}" if readme is not None else ""
        err.print(f"wrote {page}{also}", markup=False, highlight=False, soft_wrap=True)
