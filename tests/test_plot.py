"""`harness plot`: every figure drawn from a copy of the committed runs, as valid PNG and SVG
files whose data are the runs' (lines = learners, points = the leaderboard's means, the
matrices = the runs' arrays); figures that do not apply are skipped and named; matplotlib is
optional."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import typer
from conftest import need
from typer.testing import CliRunner

from harness import leaderboard as lb
from harness.errors import HarnessError
from harness.results import load_arrays

need("matplotlib")

from harness.cli_plot import plot_cmd  # noqa: E402
from harness.plots import NOT_RECORDED, plot_results  # noqa: E402
from harness.plots import figures as F  # noqa: E402
from harness.plots.data import gather  # noqa: E402

PUBLISHED = Path(__file__).resolve().parent.parent / "published"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A copy of four published scenario folders (published/ is written by sweeps), without
    their leaderboards; omniglot-stream with seeds 0 and 1 only, to keep the test short."""
    root = tmp_path_factory.mktemp("published")
    out = {}
    for name in ("omniglot-stream", "sine-incremental", "omniglot-fewshot", "video-frames"):
        skip = ["leaderboard.*", "oracle_drop.csv", ".*"]
        skip += ["*-s[2-9]-*"] if name == "omniglot-stream" else []
        out[name] = Path(shutil.copytree(PUBLISHED / name, root / name,
                                         ignore=shutil.ignore_patterns(*skip)))
    return out


def _gather(folder: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.ResultFileWarning)  # a run caught mid-write
        return gather(folder)[0]


def _board(folder: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.ResultFileWarning)
        table = lb.leaderboard_table(lb.load_runs(folder))
    return table[(table["status"] == "complete") & (table["n_seeds"] > 0)]


def _check_files(paths: list[Path]) -> None:
    assert paths and len(paths) % 2 == 0
    for path in paths:
        data = path.read_bytes()
        if path.suffix == ".png":
            assert data.startswith(PNG) and len(data) > 20_000, path.name
        else:
            assert path.suffix == ".svg" and ET.fromstring(data).tag.endswith("svg"), path.name


@pytest.mark.parametrize("name", ["omniglot-stream", "sine-incremental", "omniglot-fewshot",
                                  "video-frames"])
def test_every_figure_is_a_valid_png_and_svg(name: str, copies, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.ResultFileWarning)
        report = plot_results(copies[name], tmp_path / "figs")
    _check_files(report.written)
    assert {p.parent for p in report.written} == {tmp_path / "figs"}
    assert sorted(p.name for p in report.written) == sorted(
        f"{f}.{ext}" for f in report.figures for ext in ("png", "svg"))
    assert NOT_RECORDED in report.skipped
    kinds = {
        "omniglot-stream": ["accuracy-vs-classes", "accuracy-matrix", "prequential",
                            "per-class"],
        "sine-incremental": ["accuracy-matrix", "prequential", "mse-per-function"],
        "omniglot-fewshot": ["fewshot"],
        "video-frames": ["accuracy-matrix", "prequential"],
    }[name]
    drawn = {k for k in kinds for f in report.figures if f.startswith(f"{name}-{k}")}
    assert drawn == set(kinds)
    skipped = {s for s, _ in report.skipped}
    if name == "video-frames":  # one n_classes, labels not in stream order
        assert {"video-frames-accuracy-vs-classes", "video-frames-per-class"} <= skipped
    if name == "omniglot-stream":  # 10 classes are one experience: no matrix
        assert "omniglot-stream-accuracy-matrix (n_classes=10)" in skipped


def test_accuracy_vs_classes_holds_the_leaderboard_means(copies) -> None:
    folder = copies["omniglot-stream"]
    scenario = _gather(folder)
    [(_, fig)] = F.accuracy_vs_classes(scenario)
    ax = fig.axes[0]
    board = _board(folder)
    assert len(ax.get_lines()) == board["learner"].nunique()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        line.get_label() for line in ax.get_lines()]
    for line in ax.get_lines():
        rows = board[board["learner"] == line.get_label()]
        n = [lb.parse_params(p)["n_classes"] for p in rows["scenario_params"]]
        want = dict(zip(n, rows["meta_test_test_acc_mean"], strict=True))
        x, y = line.get_data()
        assert list(x) == sorted(want) and list(y) == pytest.approx([want[k] for k in x])
    assert "classes in the stream" in ax.get_xlabel() and "0-1" in ax.get_ylabel()
    title = fig._suptitle.get_text()
    assert "omniglot-stream" in title and "preset quick" in title
    assert "seeds 0-1" in title and "harness 0.2.0" in title


def test_the_stream_figures_draw_one_line_per_learner(copies) -> None:
    scenario = _gather(copies["omniglot-stream"])
    variant = scenario.variants[-1]  # the largest n_classes
    board = _board(copies["omniglot-stream"])
    learners = board.loc[board["scenario_params"] == board["scenario_params"].iloc[-1],
                         "learner"].tolist()
    assert [line.label for line in variant.lines] == learners
    [(_, fig)] = F.prequential(scenario, variant)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == learners
    # The last point of the running mean is online_acc, averaged over the seeds.
    for drawn, line in zip(ax.get_lines(), variant.lines, strict=True):
        assert drawn.get_ydata()[-1] == pytest.approx(line.board["online_acc_mean"], abs=1e-6)
    [(_, fig)] = F.accuracy_matrix(scenario, variant)
    images = [im for a in fig.axes for im in a.get_images()]
    assert len(images) == len(learners)
    first = variant.lines[0]
    assert np.array_equal(images[0].get_array(), load_arrays(first.csvs[0])["R"])
    [(_, fig)] = F.per_class(scenario, variant)
    drawn = fig.axes[0].get_lines()
    assert len(drawn) == len(learners)
    per = np.mean([load_arrays(c)["per_class_test"] for c in first.csvs], axis=0)
    window = max(1, round(per.size / 20))
    assert drawn[0].get_ydata()[0] == pytest.approx(per[:window].mean())


def test_mse_per_function_is_the_last_row_of_R(copies) -> None:
    folder = copies["sine-incremental"]
    scenario = _gather(folder)
    [(_, fig)] = F.mse_per_function(scenario, scenario.variants[0])
    ax = fig.axes[0]
    board = _board(folder).set_index("learner")
    bars = ax.containers
    assert len(bars) == len(board)
    for container, label in zip(bars, [t.get_text() for t in ax.get_legend().get_texts()],
                                strict=True):
        y = container.lines[0].get_ydata()  # R[-1, j] mean over seeds = mse_exp<j>
        want = [board.loc[label, f"mse_exp{j}_mean"] for j in range(len(y))]
        assert list(y) == pytest.approx(want)
    assert "MSE" in ax.get_ylabel() and "function" in ax.get_xlabel()


def test_fewshot_points_and_seed_dots(copies) -> None:
    folder = copies["omniglot-fewshot"]
    scenario = _gather(folder)
    [(_, fig)] = F.fewshot(scenario, scenario.variants[0])
    ax = fig.axes[0]
    board = _board(folder)
    mean, dots = ax.get_lines()[0], ax.get_lines()[-1]
    assert mean.get_ydata()[0] == pytest.approx(board["episode_acc_mean"].iloc[0])
    runs = lb.load_runs(folder)
    seeds = runs.loc[runs["metric"] == "episode_acc", "value"]
    assert sorted(dots.get_ydata()) == pytest.approx(sorted(seeds))
    assert [t.get_text() for t in ax.get_xticklabels()] == board["learner"].tolist()


def test_the_command_names_what_it_wrote_and_skipped(copies, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(plot_cmd)
    runner = CliRunner()
    folder = tmp_path / "sine"
    shutil.copytree(copies["sine-incremental"], folder)
    res = runner.invoke(app, [str(folder)])
    assert res.exit_code == 0, res.output
    assert "wrote 3 figure(s), PNG and SVG" in res.output
    assert "sine-incremental-mse-per-function" in res.output
    assert "skipped meta-training-loss: meta-training loss curves are not recorded" in res.output
    assert len(list((folder / "figures").glob("*.png"))) == 3
    res = runner.invoke(app, [str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output
    # --only draws just the figures whose names match; an empty pattern is bad input.
    only = tmp_path / "only"
    res = runner.invoke(app, [str(folder), "--out", str(only), "--only", "*mse-per-function*"])
    assert res.exit_code == 0 and "wrote 1 figure(s)" in res.output, res.output
    assert [p.name for p in sorted(only.iterdir())] == [
        "sine-incremental-mse-per-function.png", "sine-incremental-mse-per-function.svg"]
    res = runner.invoke(app, [str(folder), "--out", str(only), "--only", "x,"])
    assert res.exit_code == 2 and "--only" in res.output


def test_without_matplotlib(copies, monkeypatch: pytest.MonkeyPatch) -> None:
    code = ("import sys; sys.modules['matplotlib'] = None; "
            "import harness.plots, harness.cli_plot; print('imported')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.stdout.strip() == "imported", done.stderr
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(HarnessError, match=r"pip install -e '\.\[plots\]'"):
        plot_results(copies["omniglot-fewshot"])


def test_error_over_time_marks_the_regime_changes(tmp_path: Path) -> None:
    from harness import api

    need("statsmodels")
    for learner in ("persistence", "seasonal-naive"):
        for seed in (0, 1):
            res = api.run("timeseries-stream", learner, seed=seed, out_dir=tmp_path,
                          progress=False, series="nile", val_fraction=0.1)
            assert res.status == "ok", res.error
    folder = tmp_path / "timeseries-stream"
    scenario = _gather(folder)
    [variant] = scenario.variants
    [(_, fig)] = F.error_over_time(scenario, variant)
    ax = fig.axes[0]
    curves = [line for line in ax.get_lines() if line.get_label() != "regime change"]
    assert [c.get_label() for c in curves] == [line.label for line in variant.lines]
    marks = [line for line in ax.get_lines() if line.get_label() == "regime change"]
    assert [m.get_xdata()[0] for m in marks] == [7.0]  # the Nile: the new level from 1899
    log = load_arrays(variant.lines[0].csvs[0])["prequential"]
    window = max(1, len(log) // 60)
    assert np.allclose(curves[0].get_ydata(), np.convolve(log, np.ones(window) / window,
                                                          mode="valid"))
    report = plot_results(folder, tmp_path / "figs")
    assert any(f.startswith("timeseries-stream-error-over-time") for f in report.figures)
    assert any(s.startswith("timeseries-stream-mse-per-function") for s, _ in report.skipped)
