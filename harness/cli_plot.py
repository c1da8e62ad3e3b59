"""`harness plot RESULTS_DIR [--out DIR]`: the figures of a results folder as PNG and SVG
(`harness.plots`); this module only prints. Registered by `harness.cli` as the ``plot``
command."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def plot_cmd(
    results_dir: Annotated[Path, typer.Argument(
        help="A results folder: one scenario's (results/omniglot-stream) or a root of them.")],
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Where to write the figures (default: RESULTS_DIR/figures).")] = None,
    only: Annotated[str | None, typer.Option(
        "--only", help="Comma-separated shell patterns of figure names to draw, e.g. "
                       "'*accuracy-vs-classes,*prequential-n_classes-100' (default: all).")
                    ] = None,
    formats: Annotated[str, typer.Option(
        "--formats", help="Comma-separated file formats: png, svg.")] = "png,svg",
) -> None:
    """Draw the figures of a results folder (PNG and SVG): accuracy vs n_classes, the accuracy
    matrix, accuracy vs samples seen, per-class accuracy, MSE per function, few-shot scores."""
    from harness.errors import HarnessError
    from harness.leaderboard import ResultFileWarning
    from harness.plots import plot_results

    debug = os.environ.get("HARNESS_DEBUG", "").lower() in ("1", "true", "yes")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResultFileWarning)
            report = plot_results(results_dir, out_dir,
                                  only.split(",") if only is not None else None,
                                  [f.strip() for f in formats.split(",") if f.strip()])
    except HarnessError as e:
        if debug:
            raise
        line = " ".join(str(e).split())
        err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for w in caught:
        if issubclass(w.category, ResultFileWarning):
            err.print(f"warning: {w.message}", markup=False, highlight=False, soft_wrap=True)
    names = report.figures
    kinds = " and ".join(f.upper() for f in report.formats)
    out.print(f"wrote {len(names)} figure(s), {kinds}, to {escape(str(report.out))}:",
              highlight=False)
    for name in names:
        out.print(f"  {escape(name)}", highlight=False)
    for name, why in report.skipped:
        out.print(f"skipped {escape(name)}: {escape(why)}", highlight=False, soft_wrap=True)
