"""The published tables are what the harness makes from the committed rows: the leaderboards
in published/, docs/results.md and the README's headline table (rebuild: bash published/make.sh)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from harness.leaderboard import (
    headline_markdown,
    load_runs,
    replace_readme_block,
    results_markdown,
    write_leaderboard,
)
from harness.results import verify_run

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "published"
SCENARIOS = sorted(p for p in PUBLISHED.iterdir() if p.is_dir() and p.name != "grids")


def test_every_published_run_verifies_and_holds_no_absolute_path() -> None:
    csvs = [p for d in SCENARIOS for p in d.glob("*.csv") if p.with_suffix(".json").exists()]
    assert len(csvs) >= 70
    for csv in csvs:
        assert verify_run(csv, check_npz=True) == "", csv.name
        for f in (csv, csv.with_suffix(".json")):
            assert '"/' not in f.read_text() and ",/" not in f.read_text(), f.name


@pytest.mark.parametrize("folder", SCENARIOS, ids=lambda p: p.name)
def test_committed_leaderboards_equal_what_the_command_makes(folder: Path, tmp_path: Path):
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("leaderboard.*",
                                                                "oracle_drop.csv"))
    write_leaderboard(copy, load_runs(copy))
    for name in ("leaderboard.csv", "leaderboard.md", "oracle_drop.csv"):
        made, committed = copy / name, folder / name
        assert made.exists() == committed.exists(), name
        if made.exists():
            assert made.read_text() == committed.read_text(), f"{folder.name}/{name}"


def test_results_page_and_readme_table_are_generated_from_the_rows(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # as `harness report published` is run, from the repository root
    assert (ROOT / "docs" / "results.md").read_text() == results_markdown(Path("published"))
    readme = (ROOT / "README.md").read_text()
    assert replace_readme_block(readme, headline_markdown(Path("published"))) == readme


@pytest.mark.slow
def test_published_rows_use_the_current_recipes_and_a_stale_one_is_named(tmp_path) -> None:
    from harness.experiment import recipe_drift

    runs = sorted(p.with_suffix(".json") for d in SCENARIOS for p in d.glob("*.csv")
                  if p.with_suffix(".json").exists())
    assert recipe_drift(runs) == []
    stale = tmp_path / runs[0].name
    stale.write_text(runs[0].read_text().replace('"config_hash": "', '"config_hash": "0', 1))
    (run_id, then, now), = recipe_drift([stale])
    assert then.startswith("0") and now != then


@pytest.mark.slow
def test_every_published_run_is_a_cell_of_a_committed_grid() -> None:
    """published/ holds what published/grids/*.toml produce and nothing else (exploratory or
    hand-made runs would be rows no grid can rebuild). The GPU grid is planned where torch sees
    a GPU; its rows may be absent until a GPU sweep made them."""
    import torch

    from harness.experiment import RunConfig
    from harness.sweep import load_grid, plan_cells

    base = RunConfig(scenario="", learner="", out_dir=PUBLISHED)
    planned = set()
    for grid in sorted((PUBLISHED / "grids").glob("*.toml")):
        if grid.stem == "gpu" and not torch.cuda.is_available():
            continue
        cells, options = load_grid(grid)
        assert options.get("out") == "published", grid
        planned |= {p.csv.relative_to(PUBLISHED) for p in plan_cells(cells, base)}
    runs = {p.relative_to(PUBLISHED) for p in PUBLISHED.glob("*/*.csv")
            if p.name not in ("leaderboard.csv", "oracle_drop.csv")}
    assert runs, "no published runs"
    assert runs <= planned, sorted(runs - planned)[:10]


@pytest.mark.slow  # draws 26 figures, about 40 s
def test_committed_figures_are_what_the_command_draws_from_the_rows(tmp_path: Path) -> None:
    from conftest import need

    need("matplotlib")  # the plots extra draws the figures
    from harness.plots import plot_results

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"!\[[^\]]*\]\((docs/figures/[\w.-]+\.png)\)", readme)
    assert len(shown) == 2 and all((ROOT / p).is_file() for p in shown)
    assert "harness plot published --out docs/figures --formats png" in (
        ROOT / "published" / "make.sh").read_text()
    report = plot_results(ROOT / "published", tmp_path, formats=["png"])
    committed = sorted(p.name for p in (ROOT / "docs" / "figures").iterdir())
    assert sorted(p.name for p in report.written) == committed
    for path in report.written:  # Agg draws the same pixels from the same rows
        assert path.read_bytes() == (ROOT / "docs" / "figures" / path.name).read_bytes(), path
