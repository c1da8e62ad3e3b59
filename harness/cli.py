"""The `harness` command line (DESIGN.md D10): parse, call one library function, render.

This is the only module that prints. Exit codes: 0 success, 2 bad input (one line on stderr),
1 a failed or diverged run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Benchmark harness for continual and online learning.")


@app.callback()
def _setup(threads: Annotated[int, typer.Option(
        "--threads", envvar="HARNESS_THREADS",
        help="torch CPU threads; 0 (default) = every core this process may use. Measured on "
             "2 free cores, 2 threads make meta-training 1.5-1.9x faster than 1; on a machine "
             "busy with other jobs use 1 (more threads than free cores stall).")] = 0,
           ) -> None:
    if threads < 0:
        _fail(f"--threads must be >= 0 (0 = all available cores), got {threads}", 2)
    import os

    import torch

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))


# Wide when piped, so tables in logs are not cut; a terminal sets its own width.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Scenario or learner parameter KEY=VALUE (repeatable; prefix scenario. or "
                  "learner. to disambiguate).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Results root directory.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the stream and the learner.")]
PresetOpt = Annotated[str, typer.Option("--preset", help="quick (CPU, minutes) | paper | ...")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N")]
CacheOpt = Annotated[Path | None, typer.Option("--cache-dir", help="Checkpoint cache.")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="User-supplied data.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
EvalEveryOpt = Annotated[int, typer.Option("--eval-every", help="Also evaluate every N samples.")]
NoTuneOpt = Annotated[bool, typer.Option("--no-tune", help="Keep the configured lr (no search).")]


def _fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def _guard() -> Iterator[None]:
    """Turn the library's errors into one line on stderr and an exit code, never a traceback."""
    from harness.errors import DivergedError, HarnessError

    try:
        yield
    except HarnessError as e:
        _fail(str(e), 2)
    except DivergedError as e:
        _fail(f"run diverged: {e}", 1)
    except KeyboardInterrupt:
        _fail("interrupted; finished runs and checkpoints are kept, re-run to resume", 130)


def _parse_sets(pairs: list[str] | None) -> dict[str, str]:
    from harness.errors import HarnessError

    result: dict[str, str] = {}
    expanded: list[str] = []
    for pair in pairs or []:
        parts = pair.split(",")
        # `--set ways=5,shots=1` sets two keys; `--set lr_grid=1e-3,1e-2` is one list value.
        expanded.extend(parts if len(parts) > 1 and all("=" in p for p in parts) else [pair])
    for pair in expanded:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--set {pair!r}: write KEY=VALUE, e.g. --set n_classes=600")
        result[key.strip()] = value.strip()
    return result


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[str, int, int, dict[str, float]], None] | None]:
    """A rich progress bar per phase, with rate and ETA; nothing when quiet or not a tty."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), console=err, transient=True)
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int, info: dict[str, float]) -> None:
        if phase not in tasks or (done < bars.tasks[tasks[phase]].completed):
            if phase in tasks:
                bars.remove_task(tasks[phase])
            tasks[phase] = bars.add_task(phase, total=total, info="")
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in info.items())
        bars.update(tasks[phase], completed=done, total=total, info=text)

    with bars:
        yield update


def _results_table(results: list[Any], title: str) -> Table:
    keys = ["meta_test_test_acc", "acc_final_macro", "forgetting_max", "online_acc",
            "episode_acc", "mse_final", "wall_s"]
    present = [k for k in keys if any(k in r.metrics for r in results)]
    table = Table(title=title)
    for col in ["learner", "seed", "status", "lr", *present]:
        table.add_column(col, justify="right" if col not in ("learner", "status") else "left")
    for r in results:
        lr = r.extra.get("lr", "")
        cells = [r.learner, str(r.seed), r.status, f"{lr:.0e}" if isinstance(lr, float) else ""]
        cells += [f"{r.metrics[k]:.3f}" if k in r.metrics else "" for k in present]
        table.add_row(*cells)
    return table


KEY_METRICS = ["meta_test_test_acc", "acc_final_macro", "forgetting_max", "online_acc",
               "episode_acc", "episode_mse", "mse_final", "wall_s"]


def _leaderboard_rich(table: Any, title: str) -> Table:
    """The leaderboard's key columns as `mean ± ci95`; scenario parameters only where they
    differ between rows."""
    import json

    import pandas as pd

    rich_table = Table(title=title)
    params = [json.loads(p) if isinstance(p, str) and p else {}
              for p in table.get("scenario_params", pd.Series([""] * len(table)))]
    varying = sorted({k for p in params for k in p if len({str(q.get(k)) for q in params}) > 1})
    metrics = [m for m in KEY_METRICS if f"{m}_mean" in table.columns]
    # Failed or diverged runs: a column only where there are any (a group of only those has
    # no rank and no metrics).
    failed = "failed" in table.columns and bool((table["failed"].fillna(0) > 0).any())
    # Two configurations of one learner (e.g. different meta_steps): tell them apart.
    config = "config_hash" in table.columns and bool(
        table.duplicated(["learner", "preset"]).any())
    # Meta-training stopped by a time limit (a slice of a long run): say how far it got. Rows
    # written before `meta_train_complete` existed tell it by steps done < meta_steps.
    cut = pd.Series(False, index=table.index)
    if "meta_train_complete_mean" in table.columns:
        cut |= table["meta_train_complete_mean"] < 1
    if {"meta_steps_done_mean", "meta_steps"} <= set(table.columns):
        cut |= table["meta_steps_done_mean"] < pd.to_numeric(table["meta_steps"], errors="coerce")
    stopped = bool(cut.any())
    for col in ["rank", "learner", "preset", *(["config"] if config else []), *varying,
                "seeds", *(["failed"] if failed else []),
                *(["meta-steps"] if stopped else []), *metrics]:
        rich_table.add_column(col, justify="left" if col in ("learner", "preset") else "right")
    for i, (_, row) in enumerate(table.iterrows()):
        rank = "-" if pd.isna(row["rank"]) else str(row["rank"])
        cells = [rank, str(row["learner"]), str(row["preset"])]
        cells += [str(row["config_hash"])[:8]] if config else []
        cells += [str(params[i].get(k, "")) for k in varying]
        cells.append(str(row["n_seeds"]))
        if failed:
            cells.append(str(int(row["failed"])))
        if stopped:
            done = row.get("meta_steps_done_mean")
            note = " (stopped)" if cut.iloc[i] else ""
            cells.append("" if pd.isna(done) else f"{done:.0f}{note}")
        for m in metrics:
            mean, half = row[f"{m}_mean"], row[f"{m}_ci95"]
            cells.append("" if pd.isna(mean) else f"{mean:.3f}" if pd.isna(half)
                         else f"{mean:.3f} ± {half:.3f}")
        rich_table.add_row(*cells)
    return rich_table


def _oracle_rich(drops: Any) -> Table:
    """The relative drop below the i.i.d. oracle (`oracle_drops`): one row per learner and
    metric, the learner's and the oracle's mean accuracy and the drop as `mean ± ci95`."""
    import pandas as pd

    table = Table(title="drop below the i.i.d. oracle: (oracle - stream) / oracle")
    for col in ("learner", "oracle", "pairs", "metric", "stream", "oracle acc", "drop"):
        table.add_column(col, justify="left" if col in ("learner", "oracle", "metric")
                         else "right")
    for _, r in drops.iterrows():
        drop = (f"{r['mean_drop']:.3f}" if pd.isna(r["ci95"])
                else f"{r['mean_drop']:.3f} ± {r['ci95']:.3f}")
        table.add_row(str(r["learner"]), str(r["oracle"]), str(r["n_pairs"]),
                      str(r["metric"]).removeprefix("meta_test_"), f"{r['mean_stream']:.3f}",
                      f"{r['mean_oracle']:.3f}", drop)
    return table


def _finish(results: list[Any], out_dir: Path, scenario: str, title: str) -> None:
    from harness.leaderboard import leaderboard_table, load_runs, oracle_drops, write_leaderboard
    from harness.results import safe_id

    out.print(_results_table(results, title))
    folder = out_dir / safe_id(scenario)
    runs = load_runs(folder)
    csv_path, md_path = write_leaderboard(folder, runs)
    out.print(_leaderboard_rich(leaderboard_table(runs),
                                f"leaderboard {folder} (mean ± 95% CI over seeds)"))
    # The drop of the runs just made, where an oracle ran on the same streams.
    drops = oracle_drops(runs[runs["run_id"].isin({r.run_id for r in results})])
    if not drops.empty:
        out.print(_oracle_rich(drops))
    drop_csv = folder / "oracle_drop.csv"
    also = f", {drop_csv}" if drop_csv.exists() else ""
    out.print(f"results: {folder}  leaderboard: {csv_path}, {md_path}{also}", soft_wrap=True)
    for r in results:
        if r.status != "ok":
            err.print(f"[red]{r.learner} seed {r.seed} {r.status}:[/] {r.error}")
    if any(r.status != "ok" for r in results):
        raise typer.Exit(1)


@app.command("list")
def list_cmd(what: Annotated[str, typer.Argument(help="scenarios | learners | all")] = "all"
             ) -> None:
    """List registered scenarios and learners, one line each."""
    with _guard():
        from harness.errors import HarnessError
        from harness.registry import list_learners, list_scenarios

        if what not in ("scenarios", "learners", "all"):
            raise HarnessError(f"harness list {what!r}: choose scenarios, learners or all")
        if what in ("scenarios", "all"):
            out.print("[bold]scenarios[/]")
            for e in list_scenarios():
                out.print(f"  {e.id:<24} {e.summary}", highlight=False, soft_wrap=True)
        if what in ("learners", "all"):
            out.print("[bold]learners[/]")
            for e in list_learners():
                out.print(f"  {e.id:<24} {e.summary}", highlight=False, soft_wrap=True)


def _run_config(scenario: str, learner: str, seed: int, preset: str, device: str, out_dir: Path,
                cache_dir: Path | None, data_dir: Path | None, sets: list[str] | None,
                eval_every: int, no_tune: bool) -> Any:
    from harness.experiment import RunConfig

    return RunConfig(scenario=scenario, learner=learner, seed=seed, preset=preset,
                     device=device, out_dir=out_dir, cache_dir=cache_dir, data_dir=data_dir,
                     overrides=_parse_sets(sets), eval_every=eval_every, tune_lr=not no_tune)


@app.command()
def run(
    scenario: Annotated[str, typer.Option("--scenario", help="Scenario id.")],
    learner: Annotated[str, typer.Option("--learner", help="Learner id or module:Class.")],
    seed: SeedOpt = 0, preset: PresetOpt = "quick", device: DeviceOpt = "cpu",
    out_dir: OutOpt = Path("results"), cache_dir: CacheOpt = None, data_dir: DataOpt = None,
    sets: SetOpt = None, eval_every: EvalEveryOpt = 0, no_tune: NoTuneOpt = False,
    quiet: QuietOpt = False,
    baselines: Annotated[str | None, typer.Option(
        "--baselines", help="Reference learners run on the same stream (default: the "
                            "learner's own list; 'none' for none).")] = None,
) -> None:
    """Run one learner on one scenario (and its reference baselines on the same stream)."""
    with _guard():
        from harness.experiment import compare
        from harness.registry import get_learner

        cfg = _run_config(scenario, learner, seed, preset, device, out_dir, cache_dir, data_dir,
                          sets, eval_every, no_tune)
        refs = list(get_learner(learner).compare_with) if baselines is None else (
            [] if baselines.strip() == "none" else [b.strip() for b in baselines.split(",")])
        with _progress(quiet) as progress:
            results = compare(cfg, [learner, *[r for r in refs if r != learner]], [seed],
                              progress)
        _finish(results, out_dir, results[0].scenario, f"{scenario}, seed {seed}")


@app.command("compare")
def compare_cmd(
    scenario: Annotated[str, typer.Option("--scenario", help="Scenario id.")],
    learners: Annotated[str, typer.Option("--learners", help="Comma-separated learner ids.")],
    seeds: Annotated[str, typer.Option("--seeds", help="0-4 or 0,1,2")] = "0",
    preset: PresetOpt = "quick", device: DeviceOpt = "cpu", out_dir: OutOpt = Path("results"),
    cache_dir: CacheOpt = None, data_dir: DataOpt = None, sets: SetOpt = None,
    eval_every: EvalEveryOpt = 0, no_tune: NoTuneOpt = False, quiet: QuietOpt = False,
) -> None:
    """Run several learners on identical streams for each seed; write the leaderboard."""
    with _guard():
        from harness.experiment import compare, parse_seeds

        names = [n.strip() for n in learners.split(",") if n.strip()]
        seed_list = parse_seeds(seeds)
        cfg = _run_config(scenario, names[0] if names else "", seed_list[0], preset, device,
                          out_dir, cache_dir, data_dir, sets, eval_every, no_tune)
        with _progress(quiet) as progress:
            results = compare(cfg, names, seed_list, progress)
        _finish(results, out_dir, results[0].scenario, f"{scenario}, seeds {seeds}")


@app.command()
def leaderboard(
    directory: Annotated[Path, typer.Argument(help="Results folder, e.g. results/omniglot-stream")],
    fmt: Annotated[str, typer.Option("--format", help="md | csv")] = "md",
    metric: Annotated[str | None, typer.Option("--metric", help="Primary metric to rank by.")
                      ] = None,
) -> None:
    """Aggregate runs over seeds (mean, 95% CI, rank); write leaderboard.csv and .md."""
    with _guard():
        from harness.errors import HarnessError
        from harness.leaderboard import leaderboard_table, load_runs, write_leaderboard

        if fmt not in ("md", "csv"):
            raise HarnessError(f"--format {fmt!r}: choose md or csv")
        runs = load_runs(directory)
        table = leaderboard_table(runs, primary_metric=metric)
        csv_path, md_path = write_leaderboard(directory, runs, primary_metric=metric)
        if fmt == "csv":
            out.print(table.to_csv(index=False), markup=False, highlight=False, soft_wrap=True)
        else:
            out.print(_leaderboard_rich(table, f"{directory} (mean ± 95% CI over seeds)"))
        err.print(f"wrote {csv_path} and {md_path}")


@app.command()
def check(
    target: Annotated[str, typer.Argument(help="module:Class of your learner, or a learner id")],
    scenario: Annotated[str, typer.Option("--scenario", help="Scenario to check on.")
                        ] = "synthetic-stream",
) -> None:
    """Run the conformance checks on a learner (yours or a registered one)."""
    with _guard():
        from harness.check import check_learner

        results = check_learner(target, scenario)
        table = Table(title=f"harness check {target} on {scenario}")
        for col in ("check", "result", "detail"):
            table.add_column(col)
        for r in results:
            table.add_row(r.name, "[green]ok[/]" if r.ok else "[red]FAIL[/]", r.detail)
        out.print(table)
        failed = [r for r in results if not r.ok]
        if failed:
            _fail(f"{len(failed)} check(s) failed; first: {failed[0].name}: {failed[0].detail}",
                  1)


def main() -> None:  # pragma: no cover - console entry
    app()
