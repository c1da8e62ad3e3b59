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


LONG_IDS = ["anml-pretrain", "sparse-relu-maml", "my_learners.toy:Configured"]
METRICS = ["meta_test_test_acc", "acc_final_macro", "forgetting_max", "online_acc", "wall_s"]


def _narrow(*renderables: object, width: int = 80) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    for r in renderables:
        console.print(r)
    text = console.export_text()
    assert max(len(ln) for ln in text.splitlines()) <= width, text
    return text


def _long_id_runs(root: Path) -> pd.DataFrame:
    """Every long id on seeds 0-2 with every key metric, and each one's i.i.d. oracle."""
    for learner in LONG_IDS:
        for seed in range(3):
            metrics = {m: 0.5 + 0.01 * seed + 0.1 * LONG_IDS.index(learner) for m in METRICS}
            for name, acc in ((learner, 0.5), (f"{learner}-iid", 0.7)):
                write_run(root, f"{name.replace(':', '_')}-s{seed}", name, seed,
                          {**metrics, "meta_test_test_acc": acc + 0.01 * seed},
                          representation="net")
    return lb.load_runs(root)


def test_terminal_tables_fit_80_columns_and_never_cut_an_id(tmp_path: Path) -> None:
    from harness.cli_tables import results_table
    from harness.run_config import RunResult

    runs = _long_id_runs(tmp_path)
    board = _narrow(_leaderboard_rich(lb.leaderboard_table(runs), "leaderboard"))
    drops = _narrow(_oracle_rich(lb.oracle_drops(runs), lb.unpaired_oracle_runs(runs)))
    results = [RunResult(f"{i}-run", i, SCEN, 0, "ok", dict.fromkeys(METRICS, 0.5),
                         {"lr": 1e-3}) for i in LONG_IDS]
    made = _narrow(results_table(results, "synthetic-stream, seed 0"))
    for text in (board, drops, made):
        for learner in LONG_IDS:
            assert f" {learner} " in text, text
        assert "…" not in text
    assert f" {LONG_IDS[2]}-iid " in board
    # mean ± ci may take two lines, the headline metric stays; what is left out is named.
    assert "ranked by acc_final_macro (higher is better)" in " ".join(board.split())
    assert "acc_final_" in board and "not shown for the terminal's width" in board
    # Wide enough, everything on one line per row as before.
    wide = _narrow(_leaderboard_rich(lb.leaderboard_table(runs), "leaderboard"), width=200)
    assert "not shown" not in wide and "0.510 ± 0.025" in wide


def test_leaderboard_title_names_the_ranking_metric(tmp_path: Path) -> None:
    runs = _long_id_runs(tmp_path)
    res = runner.invoke(app, ["leaderboard", str(tmp_path / SCEN), "--metric", "forgetting_max"])
    assert res.exit_code == 0, res.output
    assert "ranked by forgetting_max (lower is better)" in " ".join(res.stdout.split())
    text = render(_leaderboard_rich(lb.leaderboard_table(runs, primary_metric="online_acc"),
                                    "t"))
    assert "ranked by online_acc (higher is better)" in text
    header = next(ln for ln in text.splitlines() if "learner" in ln)
    assert header.index("online_acc") < header.index("meta_test_test_acc"), "ranked first"


def test_leaderboard_table_tells_two_configs_of_one_learner_apart() -> None:
    import io

    import pandas as pd
    from rich.console import Console

    from harness.cli_tables import leaderboard_rich as _leaderboard_rich

    table = pd.DataFrame({
        "rank": [1, 2, 3], "learner": ["maml", "maml", "anil"], "preset": ["quick"] * 3,
        "config_hash": ["aaaa1111bbbb", "cccc2222dddd", "eeee3333ffff"], "n_seeds": [1, 1, 1],
        "failed": [0, 0, 0], "scenario_params": ["{}"] * 3,
        "episode_acc_mean": [0.9, 0.8, 0.7], "episode_acc_ci95": [float("nan")] * 3})
    buf = io.StringIO()
    Console(file=buf, width=200).print(_leaderboard_rich(table, "t"))
    text = buf.getvalue()
    assert "aaaa1111" in text and "cccc2222" in text and "config" in text
    assert "failed" not in text, "no failed column when nothing failed"
    buf = io.StringIO()
    Console(file=buf, width=200).print(_leaderboard_rich(table[table.learner == "anil"], "t"))
    assert "config" not in buf.getvalue(), "one configuration per learner: no config column"


def test_leaderboard_table_marks_meta_training_stopped_by_a_time_limit() -> None:
    """A slice of a long run (time_limit_s) is ranked with the finished ones, so the table
    must say how far its meta-training got: from meta_train_complete, or for older rows from
    steps done < the configured meta_steps."""
    import io

    import pandas as pd
    from rich.console import Console

    from harness.cli_tables import leaderboard_rich as _leaderboard_rich

    table = pd.DataFrame({
        "rank": [1, 2, 3], "learner": ["maml", "maml++", "anil"], "preset": ["paper"] * 3,
        "config_hash": ["a" * 12, "b" * 12, "c" * 12], "n_seeds": [1, 1, 1], "failed": [0] * 3,
        "scenario_params": ["{}"] * 3, "meta_steps": [60000, 75000, 60000],
        "meta_steps_done_mean": [3113.0, 1047.0, 60000.0],
        "meta_train_complete_mean": [0.0, float("nan"), 1.0],
        "episode_acc_mean": [0.83, 0.75, 0.95], "episode_acc_ci95": [float("nan")] * 3})
    buf = io.StringIO()
    Console(file=buf, width=200).print(_leaderboard_rich(table, "t"))
    lines = buf.getvalue().splitlines()
    assert "meta-steps" in lines[2]
    row = {name: next(ln for ln in lines if f" {name} " in ln)
           for name in ("maml", "maml++", "anil")}
    assert "3113 (stopped)" in row["maml"] and "1047 (stopped)" in row["maml++"]
    assert "60000" in row["anil"] and "stopped" not in row["anil"]
    buf = io.StringIO()
    Console(file=buf, width=200).print(_leaderboard_rich(table[table.learner == "anil"], "t"))
    assert "meta-steps" not in buf.getvalue(), "nothing stopped: no column"
