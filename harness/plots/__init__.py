"""`harness plot`: the figures of a results folder, each written as PNG and SVG.

`plot_results(folder, out)` draws, from the run files the leaderboard reads (complete runs, the
latest re-run of each seed, failed runs left out):

(a) ``<scenario>-accuracy-vs-classes``: accuracy after the stream against n_classes, mean and
    95% CI band over seeds, one line per learner (the OML/ANML figure); where the folder holds
    several n_classes;
(b) ``<scenario>-accuracy-matrix-<variant>``: R[i, j] of each learner's first seed, one panel
    per learner (stream scenarios with two experiences or more);
(c) ``<scenario>-prequential-<variant>``: the running mean of the prequential log against
    samples seen, one line per learner (stream scenarios);
(d) ``<scenario>-per-class-<variant>``: final test accuracy of each class by its position in
    the stream, the forgetting profile (scenarios labelled in stream order,
    `figures.STREAM_ORDERED_LABELS`);
(e) ``<scenario>-mse-per-function-<variant>``: each function's MSE after the stream
    (regression streams, e.g. sine-incremental);
(f) ``<scenario>-fewshot-<variant>``: the test-episode score per learner with its CI
    (few-shot scenarios);
(g) meta-training loss curves: not drawn; the run files do not record them;
(h) ``<scenario>-error-over-time-<variant>``: the prequential error in a moving window, the
    scenario's regime changes marked (forecasting streams).

Every figure has labelled axes with units, a legend and a caption (what, scenario and variant,
presets, seeds, harness versions). A figure that does not apply is listed in
`PlotReport.skipped` with the reason. matplotlib (the ``plots`` extra) is imported only when
drawing; nothing here prints.
"""

from __future__ import annotations

import fnmatch
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.fileio import atomic_write_bytes
from harness.plots.data import Scenario, Variant, gather
from harness.plots.figures import (
    accuracy_matrix,
    accuracy_vs_classes,
    error_over_time,
    fewshot,
    figure,
    mse_per_function,
    per_class,
    prequential,
)

FORMATS = ("png", "svg")
"""Each figure is written in these formats."""

NOT_RECORDED = (
    "meta-training-loss",
    "meta-training loss curves are not recorded in the run files",
)
"""The figure (g) and why it is never drawn."""

_PER_VARIANT: tuple[Callable[[Scenario, Variant], list[tuple[str, Any]]], ...] = (
    accuracy_matrix,
    prequential,
    per_class,
    mse_per_function,
    fewshot,
    error_over_time,
)


@dataclass
class PlotReport:
    """What `plot_results` did: the files written and the figures skipped, with why."""

    out: Path
    formats: tuple[str, ...] = FORMATS
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def figures(self) -> list[str]:
        """The names of the figures written (one per set of formats)."""
        return list(dict.fromkeys(p.stem for p in self.written))


def plot_results(folder: Path, out: Path | None = None, only: Sequence[str] | None = None,
                 formats: Sequence[str] = FORMATS) -> PlotReport:
    """Draw every figure that applies to the runs under `folder` into `out` (default
    ``folder/figures``, created), in `formats` (PNG at 150 dpi, SVG), each file written
    atomically; with `only`, just the figures whose name matches one of its shell patterns
    (`fnmatch`).

    Raises:
        HarnessError: no valid complete run under `folder` (as `load_runs`), an unknown format
            or an empty pattern, or matplotlib is missing (the message says
            ``pip install -e '.[plots]'``).
    """
    if not formats or any(f not in FORMATS for f in formats):
        raise HarnessError(f"figure formats are {', '.join(FORMATS)} (got "
                           f"{', '.join(formats) or 'none'}); pass e.g. --formats png")
    wanted = _matcher(only)
    folder = Path(folder)
    out = Path(out) if out is not None else folder / "figures"
    scenarios = gather(folder)
    figure()  # fails early, with the install hint, where matplotlib is missing
    report = PlotReport(out, formats=tuple(formats))
    skipped: dict[tuple[str, str], list[str]] = {}
    for scenario in scenarios:
        _save_all(report, accuracy_vs_classes(scenario), skipped, wanted)
        for variant in scenario.variants:
            for make in _PER_VARIANT:
                _save_all(report, make(scenario, variant), skipped, wanted, variant)
        for (name, why), labels in skipped.items():
            every = len(labels) == len(scenario.variants) or labels == [""]
            report.skipped.append((name if every else f"{name} ({', '.join(labels)})", why))
        skipped.clear()
    report.skipped.append(NOT_RECORDED)
    return report


def _matcher(only: Sequence[str] | None) -> Callable[[str], bool]:
    """Whether a figure name is asked for.

    Raises:
        HarnessError: an empty pattern.
    """
    patterns = [p.strip() for p in only] if only else []
    if any(not p for p in patterns):
        raise HarnessError("--only takes figure-name patterns, e.g. '*accuracy-vs-classes'; "
                           "an empty one was given")
    return lambda name: not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _save_all(
    report: PlotReport,
    made: Iterable[tuple[str, Any]],
    skipped: dict[tuple[str, str], list[str]],
    wanted: Callable[[str], bool],
    variant: Variant | None = None,
) -> None:
    """Write each figure of `made` that is `wanted`; a skipped one is noted in `skipped` under
    its name without the variant, with the variants (labels) it was skipped for."""
    slug = variant.slug if variant is not None else ""
    for name, fig in made:
        if not wanted(name):
            continue
        if isinstance(fig, str):
            base = name.removesuffix(f"-{slug}") if slug else name
            skipped.setdefault((base, fig), []).append(variant.label if variant else "")
            continue
        report.out.mkdir(parents=True, exist_ok=True)
        for fmt in report.formats:
            path = report.out / f"{name}.{fmt}"
            atomic_write_bytes(path, _render(fig, fmt))
            report.written.append(path)


def _render(fig: Any, fmt: str) -> bytes:
    """The figure's bytes; the SVG without a date and with fixed ids, so that the same runs
    give the same file."""
    import matplotlib

    buf = io.BytesIO()
    meta = {"Date": None} if fmt == "svg" else {}
    with matplotlib.rc_context({"svg.hashsalt": "harness"}):
        fig.savefig(buf, format=fmt, dpi=150, metadata=meta)
    return buf.getvalue()


__all__ = ["FORMATS", "NOT_RECORDED", "PlotReport", "plot_results"]
