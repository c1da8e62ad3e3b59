"""The figures of `harness plot`, drawn with matplotlib's object API on the Agg canvas (no
pyplot, no global state). matplotlib is imported inside the functions, so that importing
`harness.plots` works without it; `figure` says how to install it when it is missing.

Every maker takes a `Scenario` (or one of its `Variant`s) and returns ``(name, Figure)`` pairs,
or ``(name, reason)`` for a figure that does not apply.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.metrics import t_ci95_half_width
from harness.plots.data import Line, Scenario, Variant, caption

ACC_METRICS = ("meta_test_test_acc", "acc_final_macro")
"""Accuracy after the stream, for the accuracy-vs-classes figure: the first one reported."""

STREAM_ORDERED_LABELS = ("omniglot-stream", "synthetic-stream")
"""Scenarios whose class label k is the k-th class of the stream (labels are given in stream
order), so that ``per_class_test[k]`` is the class at position k."""

Made = tuple[str, Any]


def figure(ncols: int = 1, nrows: int = 1, width: float = 7.5, height: float = 4.5) -> Any:
    """A new `Figure` with an Agg canvas and constrained layout, and its axes (an array when
    there are several).

    Raises:
        HarnessError: matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise HarnessError(
            "harness plot needs matplotlib: pip install -e '.[plots]'"
        ) from None
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes if axes.size > 1 else axes[0, 0]


def _color(scenario: Scenario, line: Line) -> Any:
    from matplotlib import colormaps

    n = len(scenario.colors)
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return cmap(scenario.colors.get(line.label, 0) % cmap.N)


def _finish(fig: Any, ax: Any, text: str) -> Any:
    """The caption on top and the legend to the right of the axes."""
    fig.suptitle(text, fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    ax.grid(True, alpha=0.3)
    return fig


def _stream_kind(variant: Variant) -> str:
    """'classification' or 'regression' for a stream scenario, '' for any other."""
    present = variant.metrics()
    if "mse_final" in present:
        return "regression"
    return "classification" if present & set(ACC_METRICS) else ""


# ----------------------------------------------------------------------------------------------
# (a) accuracy vs number of classes


def accuracy_vs_classes(scenario: Scenario) -> list[Made]:
    """Accuracy after the stream against ``n_classes``, mean and 95% CI band over seeds, one
    line per learner (the OML/ANML figure); only where the folder holds several n_classes."""
    name = f"{scenario.name}-accuracy-vs-classes"
    if "n_classes" not in scenario.keys:
        return [(name, "needs runs at several n_classes")]
    metric = next((m for m in ACC_METRICS if any(m in v.metrics() for v in scenario.variants)), "")
    if not metric:
        return [(name, "not a classification stream")]
    fig, ax = figure()
    by_label: dict[str, list[tuple[float, float, float, Line]]] = {}
    for v in scenario.variants:
        for line in v.lines:
            mean, half = line.board.get(f"{metric}_mean"), line.board.get(f"{metric}_ci95")
            point = (float(v.params["n_classes"]), float(mean), float(half), line)
            by_label.setdefault(line.label, []).append(point)
    for label, points in sorted(by_label.items(), key=lambda kv: -max(p[1] for p in kv[1])):
        x, y, h, lines = zip(*sorted(points, key=lambda p: p[0]), strict=True)
        color = _color(scenario, lines[0])
        ax.plot(x, y, marker="o", ms=4, color=color, label=label)
        ax.fill_between(x, np.subtract(y, h), np.add(y, h), color=color, alpha=0.15, lw=0)
    ax.set_xlabel("classes in the stream (n_classes)")
    ax.set_ylabel(f"{metric} (accuracy, 0-1)")
    ax.set_xticks(sorted({float(v.params["n_classes"]) for v in scenario.variants}))
    ax.set_ylim(0, 1)
    seeds = [s for v in scenario.variants for line in v.lines for s in line.seeds]
    text = caption(_whole(scenario), f"{metric} vs n_classes, mean ± 95% CI over seeds", seeds)
    return [(name, _finish(fig, ax, text))]


def _whole(scenario: Scenario) -> Variant:
    """All variants of `scenario` as one, for a caption."""
    lines = tuple(line for v in scenario.variants for line in v.lines)
    versions = tuple(sorted({x for v in scenario.variants for x in v.versions}))
    return Variant(scenario.name, {}, "", lines, versions)


# ----------------------------------------------------------------------------------------------
# (b) the accuracy matrix R


def accuracy_matrix(scenario: Scenario, variant: Variant) -> list[Made]:
    """R[i, j] of each learner's first seed as a heatmap, one panel per learner, one colour
    scale (accuracy 0-1, or MSE from 0 for regression streams; brighter is better)."""
    name = _name(scenario, "accuracy-matrix", variant)
    kind = _stream_kind(variant)
    if not kind:
        return [(name, "no accuracy matrix (not a stream scenario)")]
    mats = [(line, line.arrays(0).get("R")) for line in variant.lines]
    mats = [(line, R) for line, R in mats if R is not None and R.ndim == 2 and R.shape[0] > 1]
    if not mats:
        return [(name, "one experience: no matrix to draw")]
    ncols = len(mats) if len(mats) <= 3 else math.ceil(math.sqrt(len(mats)))
    nrows = -(-len(mats) // ncols)
    fig, axes = figure(ncols, nrows, 3.3 * ncols + 1.0, 3.0 * nrows + 0.8)
    axes = np.atleast_1d(axes).ravel()
    top = 1.0 if kind == "classification" else max(float(np.nanmax(R)) for _, R in mats)
    cmap = "viridis" if kind == "classification" else "viridis_r"  # bright: better
    from matplotlib.ticker import MaxNLocator

    image = None
    for k, (ax, (line, R)) in enumerate(zip(axes, mats, strict=False)):
        image = ax.imshow(R, vmin=0.0, vmax=top, cmap=cmap, origin="upper")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{line.label} (seed {line.seeds[0]})", fontsize=9)
        if k + ncols >= len(mats):  # the lowest panel of its column
            ax.set_xlabel("test set of experience j")
        if k % ncols == 0:
            ax.set_ylabel("after training on experience i")
    for ax in axes[len(mats) :]:
        ax.set_axis_off()
    unit = "accuracy (0-1)" if kind == "classification" else "MSE"
    fig.colorbar(image, ax=list(axes[: len(mats)]), shrink=0.8, label=f"R[i, j]: {unit}")
    what = "accuracy matrix R" if kind == "classification" else "MSE matrix"
    seeds = [line.seeds[0] for line, _ in mats]
    fig.suptitle(caption(variant, f"{what} of each learner's first seed", seeds), fontsize=9)
    return [(name, fig)]


def _name(scenario: Scenario, kind: str, variant: Variant) -> str:
    return f"{scenario.name}-{kind}" + (f"-{variant.slug}" if variant.slug else "")


# ----------------------------------------------------------------------------------------------
# (c) accuracy vs samples seen


def _band(ax: Any, x: Any, curves: list[np.ndarray], color: Any, label: str) -> float:
    """Mean of `curves` (truncated to the shortest) with its 95% t band over them; the
    smallest mean."""
    n = min(len(c) for c in curves)
    stack = np.stack([c[:n] for c in curves])
    mean = stack.mean(axis=0)
    ax.plot(x[:n], mean, color=color, label=label, lw=1.4)
    if len(curves) > 1:
        half = t_ci95_half_width(stack.std(axis=0, ddof=1), np.full(n, len(curves)))
        ax.fill_between(x[:n], mean - half, mean + half, color=color, alpha=0.15, lw=0)
    return float(np.min(mean))


def prequential(scenario: Scenario, variant: Variant) -> list[Made]:
    """The running mean of the prequential log (accuracy, or squared error, of each sample
    predicted before it is learned) against samples seen; mean and 95% band over seeds."""
    name = _name(scenario, "prequential", variant)
    kind = _stream_kind(variant)
    if not kind:
        return [(name, "no prequential log (not a stream scenario)")]
    fig, ax = figure()
    lowest: list[float] = []
    for line in variant.lines:
        curves = []
        for i in range(len(line.seeds)):
            log = np.asarray(line.arrays(i).get("prequential", np.zeros(0)), dtype=float)
            if log.size:
                curves.append(np.cumsum(log) / np.arange(1, log.size + 1))
        if curves:
            n = min(len(c) for c in curves)
            keep = np.unique(np.linspace(0, n - 1, min(n, 1500)).astype(int))
            x = keep + 1.0
            lowest.append(_band(ax, x, [c[keep] for c in curves], _color(scenario, line),
                                line.label))
    ax.set_xlabel("training samples seen")
    if kind == "classification":
        ax.set_ylabel("online accuracy (0-1), running mean")
        ax.set_ylim(0, 1)
    else:  # the first samples' errors are orders of magnitude above the rest
        ax.set_yscale("log")
        if lowest and min(lowest) > 0:  # a band reaching below 0 must not stretch the axis
            ax.set_ylim(bottom=min(lowest) / 3)
        ax.set_ylabel("online MSE (log scale), running mean")
    what = "accuracy" if kind == "classification" else "MSE"
    text = caption(variant, f"prequential {what} vs samples seen, mean ± 95% CI over seeds")
    return [(name, _finish(fig, ax, text))]


# ----------------------------------------------------------------------------------------------
# (d) per-class final accuracy by stream position


def per_class(scenario: Scenario, variant: Variant) -> list[Made]:
    """Final test accuracy of each class against its position in the stream (the forgetting
    profile): mean over seeds, smoothed over a window of classes."""
    name = _name(scenario, "per-class", variant)
    if scenario.name not in STREAM_ORDERED_LABELS:
        return [(name, "class labels are not in stream order in this scenario")]
    profiles = []
    for line in variant.lines:
        per = [np.asarray(line.arrays(i).get("per_class_test", []), float) for i in
               range(len(line.seeds))]
        per = [p for p in per if p.size > 1]
        if per:
            n = min(p.size for p in per)
            profiles.append((line, np.nanmean(np.stack([p[:n] for p in per]), axis=0)))
    if not profiles:
        return [(name, "no per-class test accuracy")]
    n = max(p.size for _, p in profiles)
    window = max(1, round(n / 20))
    fig, ax = figure()
    for line, p in profiles:
        kernel = np.ones(window) / window
        smooth = np.convolve(np.nan_to_num(p), kernel, mode="valid")
        x = np.arange(smooth.size) + (window + 1) / 2
        ax.plot(x, smooth, color=_color(scenario, line), label=line.label, lw=1.4)
    ax.set_xlabel("class position in the stream (1 = learned first)")
    ax.set_ylabel(f"final test accuracy (0-1), mean of {window} classes")
    ax.set_ylim(0, 1)
    ax.set_xlim(1, n)
    text = caption(variant, "per-class test accuracy after the stream, mean over seeds")
    return [(name, _finish(fig, ax, text))]


# ----------------------------------------------------------------------------------------------
# (e) MSE per function


def mse_per_function(scenario: Scenario, variant: Variant) -> list[Made]:
    """Regression streams: each function's MSE after the stream (R[-1, j]), mean and 95% CI
    over seeds, one line per learner."""
    name = _name(scenario, "mse-per-function", variant)
    if _stream_kind(variant) != "regression":
        return [(name, "not a regression stream")]
    if "skill_persistence" in variant.metrics():
        return [(name, "a forecasting stream: see its error-over-time figure")]
    fig, ax = figure()
    for k, line in enumerate(variant.lines):
        rows = np.stack([line.arrays(i)["R"][-1] for i in range(len(line.seeds))])
        mean = rows.mean(axis=0)
        half = np.zeros_like(mean)
        if len(rows) > 1:
            half = t_ci95_half_width(rows.std(axis=0, ddof=1), np.full(mean.size, len(rows)))
        x = np.arange(1, mean.size + 1) + (k - (len(variant.lines) - 1) / 2) * 0.08
        ax.errorbar(x, mean, yerr=half, marker="o", ms=4, capsize=2, lw=1.2,
                    color=_color(scenario, line), label=line.label)
    ax.set_xlabel("function j, in stream order (1 = learned first)")
    ax.set_ylabel("MSE on function j after the stream")
    ax.set_xticks(np.arange(1, mean.size + 1))
    ax.set_ylim(bottom=0)
    text = caption(variant, "MSE per function after the stream, mean ± 95% CI over seeds")
    return [(name, _finish(fig, ax, text))]


# ----------------------------------------------------------------------------------------------
# (f) few-shot accuracy


def fewshot(scenario: Scenario, variant: Variant) -> list[Made]:
    """Few-shot scenarios: the test-episode score per learner (``episode_acc`` or
    ``episode_mse``), its mean with a 95% CI bar over seeds (over the test episodes where a
    learner has one seed), and each seed's score as a dot beside it."""
    name = _name(scenario, "fewshot", variant)
    present = variant.metrics()
    metric = next((m for m in ("episode_acc", "episode_mse") if m in present), "")
    if not metric:
        return [(name, "not a few-shot scenario")]
    fig, ax = figure(width=max(6.0, 1.2 * len(variant.lines) + 3.0), height=4.2)
    episodes = False
    for k, line in enumerate(variant.lines):
        mean, half = line.board.get(f"{metric}_mean"), line.board.get(f"{metric}_ci95")
        if np.isnan(half) and len(line.seeds) == 1:
            half, episodes = line.board.get(f"{metric}_ci95_mean", np.nan), True
        color = _color(scenario, line)
        ax.errorbar(k, mean, yerr=half, fmt="o", ms=7, capsize=6, lw=1.6, color=color,
                    label="mean ± 95% CI" if k == 0 else None)
        dots = line.values.get(metric, pd.Series(dtype=float)).to_numpy(dtype=float)
        ax.plot(np.full(dots.size, k + 0.15), dots, ".", color="0.35", ms=5,
                label="one seed" if k == 0 else None)
    ax.set_xticks(range(len(variant.lines)), [line.label for line in variant.lines])
    ax.set_xlim(-0.6, len(variant.lines) - 0.4)
    unit = "query accuracy (0-1)" if metric == "episode_acc" else "query MSE"
    ax.set_ylabel(f"{metric}: {unit}")
    ax.set_xlabel("learner")
    ci = "95% CI over seeds" + ("; one seed: over its test episodes" if episodes else "")
    text = caption(variant, f"few-shot {metric}, mean ± {ci}")
    return [(name, _finish(fig, ax, text))]


# ----------------------------------------------------------------------------------------------
# (h) forecasting error over time, regime changes marked


def error_over_time(scenario: Scenario, variant: Variant) -> list[Made]:
    """Forecasting streams: the prequential squared error in a moving window of `window`
    samples (local, not cumulative, so recovery after a change shows), mean and 95% band over
    seeds, one line per learner; the scenario's regime changes as dashed vertical lines."""
    name = _name(scenario, "error-over-time", variant)
    if "skill_persistence" not in variant.metrics():
        return [(name, "not a forecasting stream")]
    fig, ax = figure(width=9.0)
    changes: np.ndarray = np.zeros(0)
    n_min = min((len(line.arrays(0).get("prequential", [])) for line in variant.lines),
                default=0)
    window = max(1, n_min // 60)
    lowest: list[float] = []
    for line in variant.lines:
        curves = []
        for i in range(len(line.seeds)):
            arrays = line.arrays(i)
            log = np.asarray(arrays.get("prequential", np.zeros(0)), dtype=float)
            changes = np.asarray(arrays.get("change_points", changes))
            if log.size >= window:
                curves.append(np.convolve(log, np.ones(window) / window, mode="valid"))
        if curves:
            x = np.arange(curves[0].size) + window / 2
            lowest.append(_band(ax, x, curves, _color(scenario, line), line.label))
    for k, c in enumerate(changes):
        ax.axvline(float(c), color="0.3", ls="--", lw=0.8,
                   label="regime change" if k == 0 else None)
    ax.set_yscale("log")
    if lowest and min(lowest) > 0:
        ax.set_ylim(bottom=min(lowest) / 3)
    ax.set_xlabel("training samples seen")
    ax.set_ylabel(f"prequential MSE, mean of {window} samples (log scale)")
    text = caption(variant, f"prequential error over time ({window}-sample window), "
                   "mean ± 95% CI over seeds; dashed: regime changes")
    return [(name, _finish(fig, ax, text))]
