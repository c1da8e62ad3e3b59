"""The leaderboard on the command line: left-out run files on stderr, partial runs apart,
runs not paired with their oracle, and `harness report`."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pandas as pd
from rich.console import Console
from typer.testing import CliRunner

from harness import leaderboard as lb
from harness.cli import app
from harness.cli_tables import leaderboard_rich as _leaderboard_rich
from harness.cli_tables import oracle_rich as _oracle_rich

sys.path.insert(0, str(Path(__file__).parent))
from test_leaderboard import (  # noqa: E402
    DAMAGED,
    MISMATCH,
    SCEN,
    damage,
    omniglot_runs,
    write_partial_fixture,
    write_run,
)

runner = CliRunner()


def render(renderable: object) -> str:
    buf = io.StringIO()
    Console(file=buf, width=200).print(renderable)
    return buf.getvalue()


def test_leaderboard_prints_each_left_out_file_as_one_warning_line(tmp_path: Path) -> None:
    for seed, acc in enumerate([0.5, 0.7]):
        write_run(tmp_path, f"a{seed}", "anml", seed, {"acc_final_macro": acc})
    bad = write_run(tmp_path, "a2", "anml", 2, DAMAGED)
    damage("cut_in_last_value", bad)
    alone = write_run(tmp_path, "a3", "anml", 3, DAMAGED)
    alone.with_suffix(".json").unlink()
    res = runner.invoke(app, ["leaderboard", str(tmp_path / SCEN)])
    assert res.exit_code == 0, res.output
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")]
    assert warnings == [
        f"warning: {bad}: {MISMATCH} (6 data lines, 7 written): truncated, edited or "
        "half-replaced; left out",
        f"warning: {alone}: its .json (with the manifest) is missing: an interrupted write or "
        "a foreign file; left out",
    ]
    assert "warning" not in res.stdout
    # (0.5, 0.7): 0.600 ± 12.706205 * 0.1; the damaged runs (0.99) are not in it.
    assert "0.600 ± 1.271" in res.stdout
    # Nothing valid left: exit 2 with one error line after the warnings.
    (tmp_path / SCEN / "a0.json").unlink()
    (tmp_path / SCEN / "a1.json").unlink()
    res = runner.invoke(app, ["leaderboard", str(tmp_path / SCEN)])
    assert res.exit_code == 2
    errors = [ln for ln in res.stderr.splitlines() if not ln.startswith("warning:")]
    assert len(errors) == 1 and errors[0].startswith("error: no valid run file under")
    assert res.stderr.count("warning:") == 4 and "Traceback" not in res.output


def test_terminal_shows_partial_runs_apart_with_their_steps(tmp_path: Path) -> None:
    write_partial_fixture(tmp_path, status_column=True)
    table = lb.leaderboard_table(lb.load_runs(tmp_path))
    lines = render(_leaderboard_rich(table, "board")).splitlines()
    cut = next(i for i, ln in enumerate(lines) if "partial runs: meta-training stopped" in ln)
    complete, partial = lines[:cut], lines[cut:]
    assert any(" 1 │ anml " in ln and "0.600 ± 1.271" in ln for ln in complete)
    assert any(" 2 │ finetune " in ln for ln in complete)
    assert not any("0.900" in ln for ln in complete)
    header = next(ln for ln in partial if "learner" in ln)
    assert "rank" not in header and "meta-steps" in header
    (only,) = [ln for ln in partial if "│ anml " in ln]
    assert "30 of 100" in only and "0.900" in only
    # Nothing partial: one table, as before.
    text = render(_leaderboard_rich(table[table["status"] == "complete"], "board"))
    assert "partial" not in text


def test_terminal_says_which_runs_are_not_paired_with_their_oracle(tmp_path: Path) -> None:
    for learner, acc, rep in (("anml", 0.6, "net-a"), ("anml-iid", 0.8, "net-b")):
        write_run(tmp_path, learner, learner, 0, {"meta_test_test_acc": acc}, representation=rep)
    runs = lb.load_runs(tmp_path)
    text = render(_oracle_rich(lb.oracle_drops(runs), lb.unpaired_oracle_runs(runs)))
    assert text.strip() == "anml (quick) and anml-iid: not paired: representation differs (seed 0)"
    res = runner.invoke(app, ["leaderboard", str(tmp_path / SCEN)])
    assert res.exit_code == 0 and "not paired: representation differs (seed 0)" in res.stdout


def test_report_writes_the_page_and_the_readme_block(tmp_path: Path) -> None:
    root = tmp_path / "published"
    omniglot_runs(root)
    for seed, acc in enumerate([0.5, 0.7]):
        write_run(root, f"s{seed}", "anml", seed, {"acc_final_macro": acc})
    readme = tmp_path / "README.md"
    head, tail = "# T\r\n\nText ü\n<!-- results:start -->\n", "<!-- results:end -->\nend"
    readme.write_bytes((head + "stale\n" + tail).encode())
    page = tmp_path / "docs" / "results.md"
    args = ["report", str(root), "--out", str(page), "--readme", str(readme)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert page.read_text(encoding="utf-8") == lb.results_markdown(root)
    text = readme.read_bytes().decode()
    assert text == head + lb.headline_markdown(root) + tail
    first = (page.read_bytes(), readme.read_bytes())
    assert runner.invoke(app, args).exit_code == 0
    assert (page.read_bytes(), readme.read_bytes()) == first
    # Without the markers: one error line, and nothing is written.
    readme.write_text("no block here\n")
    page.unlink()
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {readme} needs one line <!-- results:start --> and, below it, one line "
        "<!-- results:end --> around the results table (found 0 and 0); add them"
    ]
    assert not page.exists() and readme.read_text() == "no block here\n"


def test_a_time_limited_run_is_listed_as_partial_and_exits_0(tmp_path: Path) -> None:
    """A real MAML run stopped by its time limit after one of four meta-steps: kept, shown
    apart from the complete run of the same learner, never ranked."""
    base = [
        "run",
        "--scenario",
        "sinusoid-fewshot",
        "--learner",
        "maml",
        "--baselines",
        "none",
        "--out",
        str(tmp_path / "res"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--quiet",
        "--set",
        "test_episodes=2,val_episodes=0,meta_batch=2,meta_steps=4",
    ]
    res = runner.invoke(app, [*base, "--set", "time_limit_s=1e-9"])
    assert res.exit_code == 0, res.output
    assert "maml seed 0 partial: meta-training stopped early" in res.stderr
    res = runner.invoke(app, base)  # resumes the partial checkpoint and finishes
    assert res.exit_code == 0, res.output
    folder = tmp_path / "res" / "sinusoid-fewshot"
    board = pd.read_csv(folder / "leaderboard.csv")
    assert board["status"].tolist() == ["complete", "partial"]
    assert board["rank"].tolist()[0] == 1 and pd.isna(board["rank"].tolist()[1])
    md = (folder / "leaderboard.md").read_text(encoding="utf-8")
    assert f"## {lb.PARTIAL_TITLE}" in md and "| 1 of 4 |" in md
