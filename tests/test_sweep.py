"""Sweeps: grid files, resuming after kill -9 (of the sweep and of a worker), failed cells kept
and retried on request, one checkpoint trained once by concurrent workers, concurrent sweeps
into one folder, and the same rows from every executor (serial, local pool, submitit's
LocalExecutor, a local Ray cluster)."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import need
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import HarnessError
from harness.experiment import RunConfig, execute
from harness.results import verify_run
from harness.sweep import LocalPool, Ray, Serial, Submitit, load_grid, plan_cells, run_sweep

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
TINY = "n_classes = 4, train_per_class = 10, test_per_class = 5"
GRID = f"""
[[grid]]
scenario = "synthetic-stream"
learner = ["finetune", "ncm"]
seed = "0-1"
set = {{ {TINY} }}

[[cell]]
scenario = "synthetic-stream"
learner = "replay"
seed = 0
set = {{ {TINY} }}
"""
# Columns and metrics that measure time, memory or the code tree, not the result.
VOLATILE_COLUMNS = {"started_at", "wall_s", "git_sha", "source_diff", "harness_version"}
VOLATILE_METRICS = {"wall_s", "peak_rss_mb", "samples_per_s", "meta_train_s"}


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def _grid(tmp_path: Path, text: str = GRID) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def _base(out: Path, cache: Path) -> RunConfig:
    return RunConfig(scenario="", learner="", out_dir=out, cache_dir=cache)


def _rows(out: Path) -> dict[str, list[tuple]]:
    """Every run's rows without its volatile cells, by run id."""
    table: dict[str, list[tuple]] = {}
    for path in sorted(out.glob("*/*.csv")):
        if path.name.startswith("leaderboard") or path.name == "oracle_drop.csv":
            continue
        assert verify_run(path) == "", path
        with path.open(newline="") as f:
            table[path.stem] = [
                tuple((k, "" if k in VOLATILE_COLUMNS or (k == "value" and r["metric"] in
                                                           VOLATILE_METRICS) else v)
                      for k, v in sorted(r.items())) for r in csv.DictReader(f)]
    return table


def test_a_grid_expands_to_the_product_plus_single_cells(tmp_path: Path) -> None:
    cells, options = load_grid(_grid(tmp_path, 'out = "x"\n' + GRID))
    assert options == {"out": "x"}
    assert len(cells) == 2 * 2 + 1
    assert {(c.learner, c.seed) for c in cells} == {
        ("finetune", 0), ("finetune", 1), ("ncm", 0), ("ncm", 1), ("replay", 0)}
    assert all(dict(c.overrides)["n_classes"] == "4" for c in cells)
    grid = _grid(tmp_path, GRID.replace('seed = "0-1"', "seed = [0, 1, 2]").replace(
        "set = {", "preset = ['quick', 'conv4']\nset = { lr = [0.1, 0.01], ", 1))
    assert len(load_grid(grid)[0]) == 2 * 3 * 2 * 2 + 1


@pytest.mark.parametrize("text,says", [
    ("[[grid]]\nscenario = 'synthetic-stream'\nlearner = 'ncm'\n", "no seed"),
    ("[[grid]]\nscenario = 'synthetic-stream'\nlearner = 'ncm'\nseed = 0\nseeds = 1\n",
     "unknown key(s) seeds"),
    ("[[grid]]\nscenario = 'synthetic-stream'\nlearner = 'ncm'\nseed = '3-1'\n", "low to high"),
    ("out = 'x'\n", "has no cells"),
    ("[[grid]\n", "grid.toml"),
    ("[[grid]]\nscenario = 'synthetic-stream'\nlearner = 'ncm'\nseed = 0\nset = { n_clases = 4 }\n",
     "n_clases: no scenario or learner of the grid has this parameter"),
])
def test_a_bad_grid_is_one_line_saying_what_is_wrong(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(HarnessError, match=None) as e:
        cells, _ = load_grid(_grid(tmp_path, text))
        plan_cells(cells, _base(tmp_path / "out", tmp_path / "c"))
    assert says in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_dry_run_names_the_run_ids_execute_writes(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    res = runner.invoke(app, ["sweep", str(grid), "--out", str(tmp_path / "o"), "--dry-run"])
    assert res.exit_code == 0, res.output
    cells, _ = load_grid(grid)
    planned = plan_cells(cells, _base(tmp_path / "o", tmp_path / "c"))
    assert [p.state for p in planned] == ["missing"] * 5
    made = execute(planned[0].run)
    assert made.run_id == planned[0].run_id and made.csv_path == planned[0].csv
    assert not list((tmp_path / "o").rglob("ncm*.csv"))  # the dry run wrote nothing


def test_a_sweep_run_again_skips_what_is_done_and_keeps_its_files(tmp_path: Path) -> None:
    grid, out = _grid(tmp_path), tmp_path / "o"
    args = ["sweep", str(grid), "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--quiet"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    first = _rows(out)
    assert len(first) == 5
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*.csv")
              if not p.name.startswith("leaderboard")}
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (out / "synthetic-stream" / "leaderboard.csv").exists()


def test_a_failed_cell_is_kept_and_retried_on_request(tmp_path: Path) -> None:
    grid = _grid(tmp_path, GRID.replace('["finetune", "ncm"]',
                                        '["finetune", "my_learners.faulty:ObserveKeyError"]'))
    cells, _ = load_grid(grid)
    base = _base(tmp_path / "o", tmp_path / "c")
    summary = run_sweep(plan_cells(cells, base), Serial())
    counts = summary.counts()
    assert counts == {"ok": 3, "failed": 2} and not summary.ok
    again = run_sweep(plan_cells(cells, base), Serial())
    assert again.counts() == {"skipped": 3, "failed": 2}  # kept, not re-run
    assert all(o["wall_s"] == 0.0 for o in again.outcomes.values())
    retried = run_sweep(plan_cells(cells, base), Serial(), retry_failed=True)
    assert retried.counts() == {"skipped": 3, "failed": 2}
    assert sum(o["wall_s"] > 0 for o in retried.outcomes.values()) == 2


def test_workers_that_need_one_checkpoint_train_it_once(tmp_path: Path) -> None:
    """ncm and slda share the pre-trained backbone: two workers, one training."""
    grid = _grid(tmp_path, GRID.replace('["finetune", "ncm"]', '["ncm", "slda"]')
                 .replace('seed = "0-1"', "seed = 0"))
    cells, _ = load_grid(grid)
    summary = run_sweep(plan_cells(cells, _base(tmp_path / "o", tmp_path / "c")),
                        LocalPool(workers=2, threads=1))
    assert summary.counts()["ok"] == 3
    assert len(list((tmp_path / "c" / "checkpoints").glob("*.safetensors"))) == 1
    import json

    cached = [json.loads(p.read_text())["meta_train"]["checkpoint_cached"]
              for p in (tmp_path / "o").glob("*/*.json") if not p.stem.startswith("replay")]
    assert sorted(cached) == [False, True]


def _sweep_process(grid: Path, out: Path, cache: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", "from harness.cli import app; app(prog_name='harness')", "sweep",
         str(grid), "--out", str(out), "--cache-dir", str(cache), "--quiet", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)


def _pool_workers(pid: int) -> list[int]:
    """The pids of the process pool's workers under `pid` (not multiprocessing's helpers)."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    out = []
    for child in children.stdout.split():
        cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            out.append(int(child))
    return out


def _wait_for_runs(out: Path, n: int, proc: subprocess.Popen, limit: float = 120) -> None:
    t0 = time.time()
    while len([p for p in out.glob("*/*.csv") if not p.name.startswith("leader")]) < n:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.time() - t0 < limit
        time.sleep(0.05)


# SlowObserve sleeps 0.5 s per sample: 12 samples, no lr search, about 6 s a cell.
SLOW_GRID = GRID.replace('["finetune", "ncm"]', '["finetune", "my_learners.faulty:SlowObserve"]'
                         ).replace("train_per_class = 10", "train_per_class = 3").replace(
                             "seed = ", "tune_lr = false\nseed = ")


@pytest.mark.slow
def test_a_sweep_killed_twice_finishes_each_cell_once_as_an_uninterrupted_one(
        tmp_path: Path) -> None:
    grid, cache = _grid(tmp_path, SLOW_GRID), tmp_path / "c"
    ref = run_sweep(plan_cells(load_grid(grid)[0], _base(tmp_path / "ref", cache)), Serial())
    assert ref.ok
    out = tmp_path / "o"
    # kill -9 of the sweep process (and its pool) after its first finished cell
    proc = _sweep_process(grid, out, cache, "--executor", "local", "--workers", "2")
    _wait_for_runs(out, 1, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # kill -9 of one worker: its cell is run again by a new one
    proc = _sweep_process(grid, out, cache, "--executor", "local", "--workers", "2")
    _wait_for_runs(out, 2, proc)
    workers = _pool_workers(proc.pid)
    assert workers, "no pool worker found"
    os.kill(workers[0], signal.SIGKILL)
    assert proc.wait(timeout=300) in (0, 1)
    # started again: nothing left to do, every cell present once, as the uninterrupted run
    proc = _sweep_process(grid, out, cache)
    assert proc.wait(timeout=300) == 0, proc.stdout.read() if proc.stdout else ""
    assert _rows(out) == _rows(tmp_path / "ref")
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_two_sweeps_into_one_folder_run_each_cell_once(tmp_path: Path) -> None:
    grid, out, cache = _grid(tmp_path, SLOW_GRID), tmp_path / "o", tmp_path / "c"
    a = _sweep_process(grid, out, cache)
    b = _sweep_process(grid, out, cache)
    assert a.wait(timeout=300) == 0 and b.wait(timeout=300) == 0
    rows = _rows(out)
    assert len(rows) == 5
    for path in out.glob("*/*.json"):
        import json

        meta = json.loads(path.read_text())
        assert "previous" not in meta or meta["previous"] is None, path  # written once


def _executors(tmp_path: Path) -> dict[str, object]:
    ray_tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # Ray's socket paths must be short
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return {
        "local": LocalPool(workers=2, threads=1),
        "submitit": Submitit(folder=tmp_path / "logs", cluster="local", cells_per_job=2,
                             poll_s=0.2),
        "ray": Ray(num_cpus=1, init={"num_cpus": 2, "object_store_memory": 80 * 1024**2,
                                     "_temp_dir": ray_tmp}),
    }, ray_tmp


@pytest.mark.slow
def test_every_executor_writes_the_rows_of_the_serial_run(tmp_path: Path) -> None:
    need("submitit")
    need("ray")
    cells, _ = load_grid(_grid(tmp_path))
    cache = tmp_path / "c"
    serial = run_sweep(plan_cells(cells, _base(tmp_path / "serial", cache)), Serial())
    assert serial.ok
    want = _rows(tmp_path / "serial")
    executors, ray_tmp = _executors(tmp_path)
    try:
        for name, ex in executors.items():
            summary = run_sweep(plan_cells(cells, _base(tmp_path / name, cache)), ex)
            assert summary.counts() == {"ok": 5}, (name, summary.outcomes)
            assert _rows(tmp_path / name) == want, name
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
