"""The `harness` command line (docs/design.md D10): parse, call one library function, render.

This is the only module that prints. Exit codes: 0 success, 2 bad input (one line on stderr,
also for a usage error such as an unknown option), 1 a failed or diverged run. `--debug` (or
HARNESS_DEBUG=1) shows the full traceback instead of the one line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from harness import cli_inputs as inputs
from harness import cli_sweep
from harness import cli_tables as tables

try:  # a typer that carries its own click (0.29): usage errors derive from TyperException
    from typer import TyperException as _UsageError
except ImportError:  # older typer on the click package
    from click import ClickException as _UsageError


class _OneLineErrors(TyperGroup):
    """Click's usage errors (unknown option, missing option, a bad number) as one line on
    stderr and exit code 2, like every other bad input; the console entry and tests alike."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # `harness` alone: the help
                e.show()
                sys.exit(e.exit_code)
            ctx = getattr(e, "ctx", None)
            see = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            _error_line(e.format_message() + see)
            sys.exit(e.exit_code)
        except typer.Abort:
            _error_line("aborted")
            sys.exit(1)
        # Without standalone mode click returns the code of a typer.Exit, else the command's
        # return value (None).
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=_OneLineErrors,
                  rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Benchmark harness for continual and online learning.")


_THREADS = [0]
"""--threads as given (0: not given): a sweep's local workers get it too."""


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
    _THREADS[0] = threads


# Wide when piped, so tables in logs are not cut; a terminal sets its own width.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Scenario or learner parameter KEY=VALUE (repeatable; prefix scenario. or "
                  "learner. to disambiguate).")]
# --out and --cache-dir as text: a Path turns '' into '.', and '' must be refused.
OutOpt = Annotated[str, typer.Option("--out", help="Results root directory.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the stream and the learner "
                                                     "(0 to 2147483647).")]
PresetOpt = Annotated[str, typer.Option("--preset", help="quick (CPU, minutes) | paper | ...")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N | mps")]
CacheOpt = Annotated[str | None, typer.Option("--cache-dir", help="Checkpoint cache.")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="User-supplied data.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
EvalEveryOpt = Annotated[int, typer.Option("--eval-every", help="Also evaluate every N samples.")]
NoTuneOpt = Annotated[bool, typer.Option("--no-tune", help="Keep the configured lr (no search).")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", help="Wall-clock limit of each run in seconds (0 = none); a run past it is "
                      "recorded as timed_out.")]
DebugOpt = Annotated[bool, typer.Option(
    "--debug", envvar="HARNESS_DEBUG",
    help="On an error, show the full traceback instead of the one-line message.")]


def _error_line(message: str) -> None:
    """`error: message` on stderr, on one line, printed as given (no rich markup)."""
    line = " ".join(message.split())
    err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)


def _fail(message: str, code: int) -> None:
    _error_line(message)
    raise typer.Exit(code)


@contextmanager
def _guard(debug: bool = False) -> Iterator[None]:
    """Turn the library's errors into one line on stderr and an exit code, never a traceback;
    with `debug` (--debug, or HARNESS_DEBUG=1 for every command) they propagate whole."""
    from harness.errors import DivergedError, HarnessError

    if debug or os.environ.get("HARNESS_DEBUG", "").lower() in ("1", "true", "yes"):
        yield
        return
    try:
        yield
    except HarnessError as e:
        _fail(str(e), 2)
    except DivergedError as e:
        _fail(f"run diverged: {e}", 1)
    except KeyboardInterrupt:
        _fail("interrupted; finished runs and checkpoints are kept, re-run to resume", 130)
    except MemoryError:
        _fail("out of memory; make the run smaller (fewer seeds, smaller --set sizes) or use a "
              "machine with more memory", 1)


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
            tasks[phase] = bars.add_task(escape(phase), total=total, info="")
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in info.items())
        bars.update(tasks[phase], completed=done, total=total, info=escape(text))

    with bars:
        yield update


def _finish(results: list[Any], out_dir: Path, scenario: str, title: str) -> None:
    from harness.leaderboard import (
        leaderboard_table,
        oracle_drops,
        unpaired_oracle_runs,
        write_leaderboard,
    )
    from harness.results import safe_id

    out.print(tables.results_table(results, title))
    folder = out_dir / safe_id(scenario)
    runs = _load_runs_warning(folder)
    csv_path, md_path = write_leaderboard(folder, runs)
    out.print(tables.leaderboard_rich(leaderboard_table(runs),
                                f"leaderboard {folder} (mean ± 95% CI over seeds)"))
    # The drop of the runs just made, where an oracle ran on the same streams.
    made = runs[runs["run_id"].isin({r.run_id for r in results})]
    drops, unpaired = oracle_drops(made), unpaired_oracle_runs(made)
    if not drops.empty or not unpaired.empty:
        out.print(tables.oracle_rich(drops, unpaired))
    drop_csv = folder / "oracle_drop.csv"
    also = f", {drop_csv}" if drop_csv.exists() else ""
    out.print(f"results: {escape(str(folder))}  leaderboard: {escape(str(csv_path))}, "
              f"{escape(str(md_path))}{escape(also)}", soft_wrap=True)
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
    if any(r.status not in ("ok", "partial") for r in results):
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
                out.print(escape(f"  {e.id:<24} {e.summary}"), highlight=False, soft_wrap=True)
        if what in ("learners", "all"):
            out.print("[bold]learners[/]")
            for e in list_learners():
                out.print(escape(f"  {e.id:<24} {e.summary}"), highlight=False, soft_wrap=True)


LEARNER_HELP = ("Learner id (see harness list learners), avalanche:<Strategy>, or module:Class "
                "naming your own learner class or config. module:Class imports that module, "
                "which runs its code.")


@app.command()
def run(
    scenario: Annotated[str, typer.Option("--scenario", help="Scenario id.")],
    learner: Annotated[str, typer.Option("--learner", help=LEARNER_HELP)],
    seed: SeedOpt = 0, preset: PresetOpt = "quick", device: DeviceOpt = "cpu",
    out_dir: OutOpt = "results", cache_dir: CacheOpt = None, data_dir: DataOpt = None,
    sets: SetOpt = None, eval_every: EvalEveryOpt = 0, no_tune: NoTuneOpt = False,
    quiet: QuietOpt = False,
    baselines: Annotated[str | None, typer.Option(
        "--baselines", help="Reference learners run on the same stream (default: the "
                            "learner's own list; 'none' for none).")] = None,
    timeout: TimeoutOpt = 0.0, debug: DebugOpt = False,
) -> None:
    """Run one learner on one scenario (and its reference baselines on the same stream)."""
    with _guard(debug):
        from harness.experiment import compare
        from harness.registry import get_learner

        refs = list(get_learner(learner).compare_with) if baselines is None else (
            [] if baselines.strip() == "none" else inputs.names(baselines, "--baselines"))
        cfg = inputs.run_config(scenario, learner, seed, preset, device, out_dir, cache_dir,
                                data_dir, sets, eval_every, no_tune, timeout)
        with _progress(quiet) as progress:
            results = compare(cfg, [learner, *[r for r in refs if r != learner]], [seed],
                              progress)
        _finish(results, cfg.out_dir, results[0].scenario, f"{scenario}, seed {seed}")


@app.command("compare")
def compare_cmd(
    scenario: Annotated[str, typer.Option("--scenario", help="Scenario id.")],
    learners: Annotated[str, typer.Option(
        "--learners", help="Comma-separated learners, each as for run --learner.")],
    seeds: Annotated[str, typer.Option(
        "--seeds", help="0-4 or 0,1,2 (seeds 0 to 2147483647, at most 10000)")] = "0",
    preset: PresetOpt = "quick", device: DeviceOpt = "cpu", out_dir: OutOpt = "results",
    cache_dir: CacheOpt = None, data_dir: DataOpt = None, sets: SetOpt = None,
    eval_every: EvalEveryOpt = 0, no_tune: NoTuneOpt = False, quiet: QuietOpt = False,
    timeout: TimeoutOpt = 0.0, debug: DebugOpt = False,
) -> None:
    """Run several learners on identical streams for each seed; write the leaderboard."""
    with _guard(debug):
        from harness.experiment import compare

        names = inputs.names(learners, "--learners")
        seed_list = inputs.parse_seeds(seeds)
        cfg = inputs.run_config(scenario, names[0], seed_list[0], preset, device, out_dir,
                                cache_dir, data_dir, sets, eval_every, no_tune, timeout)
        with _progress(quiet) as progress:
            results = compare(cfg, names, seed_list, progress)
        _finish(results, cfg.out_dir, results[0].scenario, f"{scenario}, seeds {seeds}")


@app.command()
def sweep(
    grid: Annotated[Path, typer.Argument(help="Grid file (.toml): scenarios x learners x seeds "
                                         "x presets x --set values; see docs/design.md D7.")],
    out_dir: Annotated[str | None, typer.Option(
        "--out", help="Results root (default: the grid's `out`, else results).")] = None,
    cache_dir: CacheOpt = None, data_dir: DataOpt = None,
    executor: Annotated[str, typer.Option(
        "--executor", help="serial | local | slurm | ray")] = "serial",
    workers: Annotated[int, typer.Option("--workers", help="local: worker processes.")] = 2,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the cells, their run ids and states; run nothing.")] = False,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="Also run again the cells that failed, diverged or timed out."
    )] = False,
    address: Annotated[str | None, typer.Option(
        "--address", help="ray: auto or HOST:PORT of a running cluster (default: a local one)."
    )] = None,
    cpus: Annotated[float, typer.Option("--cpus-per-cell", help="ray/slurm: CPUs per cell.")
                    ] = 1,
    gpus: Annotated[float, typer.Option("--gpus-per-cell", help="ray/slurm: GPUs per cell.")
                    ] = 0,
    partition: Annotated[str | None, typer.Option("--partition", help="slurm: partition.")
                         ] = None,
    time_min: Annotated[int, typer.Option("--time-min", help="slurm: minutes per job.")] = 60,
    cells_per_job: Annotated[int, typer.Option(
        "--cells-per-job", help="slurm: cells run one after another in one array task.")] = 1,
    max_running: Annotated[int, typer.Option(
        "--max-running", help="slurm: array tasks running at once.")] = 8,
    quiet: QuietOpt = False, debug: DebugOpt = False,
) -> None:
    """Run every cell of a grid that is missing; a killed sweep started again resumes."""
    with _guard(debug):
        from harness.experiment import RunConfig
        from harness.sweep import load_grid, plan_cells, run_sweep

        cells, options = load_grid(grid)
        root = inputs.writable(out_dir or str(options.get("out", "results")), "--out")
        cache = inputs.writable(cache_dir, "--cache-dir") if cache_dir is not None else None
        base = RunConfig(scenario="", learner="", out_dir=root, cache_dir=cache,
                         data_dir=data_dir)
        planned = plan_cells(cells, base)
        if dry_run:
            out.print(cli_sweep.dry_run_table(planned))
            return
        slurm = {"timeout_min": time_min, "slurm_partition": partition,
                 "cpus_per_task": max(1, int(cpus)), "gpus_per_node": int(gpus) or None}
        ex = cli_sweep.executor_for(executor, workers, address, cpus, gpus,
                                    root / ".sweep-logs", slurm, cells_per_job, max_running,
                                    _THREADS[0])
        with cli_sweep.Display(err, len(planned), ex.workers, quiet) as display:
            summary = run_sweep(planned, ex, retry_failed, display)
        out.print(cli_sweep.summary_table(summary, planned))
        for folder in sorted({p.csv.parent for p in planned}):
            _show_leaderboard(folder)
        if not summary.ok:
            raise typer.Exit(1)


def _show_leaderboard(folder: Path) -> None:
    from harness.leaderboard import leaderboard_table, write_leaderboard

    runs = _load_runs_warning(folder)
    if runs.empty:
        return
    write_leaderboard(folder, runs)
    out.print(tables.leaderboard_rich(leaderboard_table(runs),
                                      f"leaderboard {folder} (mean ± 95% CI over seeds)"))


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
        from harness.leaderboard import (
            leaderboard_table,
            oracle_drops,
            unpaired_oracle_runs,
            write_leaderboard,
        )

        if fmt not in ("md", "csv"):
            raise HarnessError(f"--format {fmt!r}: choose md or csv")
        runs = _load_runs_warning(directory)
        table = leaderboard_table(runs, primary_metric=metric)
        csv_path, md_path = write_leaderboard(directory, runs, primary_metric=metric)
        if fmt == "csv":
            out.print(table.to_csv(index=False), markup=False, highlight=False, soft_wrap=True)
        else:
            out.print(tables.leaderboard_rich(table, f"{directory} (mean ± 95% CI over seeds)"))
            drops, unpaired = oracle_drops(runs), unpaired_oracle_runs(runs)
            if not drops.empty or not unpaired.empty:
                out.print(tables.oracle_rich(drops, unpaired))
        err.print(f"wrote {csv_path} and {md_path}")


@app.command()
def check(
    target: Annotated[str, typer.Argument(
        help="module:Class of your learner (imports that module, which runs its code), or a "
             "learner id")],
    scenario: Annotated[str, typer.Option("--scenario", help="Scenario to check on.")
                        ] = "synthetic-stream",
) -> None:
    """Run the conformance checks on a learner (yours or a registered one)."""
    with _guard():
        from harness.check import check_learner

        results = check_learner(target, scenario)
        table = Table(title=escape(f"harness check {target} on {scenario}"))
        for col in ("check", "result", "detail"):
            table.add_column(col)
        for r in results:
            table.add_row(escape(r.name), "[green]ok[/]" if r.ok else "[red]FAIL[/]",
                          escape(r.detail))
        out.print(table)
        failed = [r for r in results if not r.ok]
        if failed:
            _fail(f"{len(failed)} check(s) failed; first: {failed[0].name}: {failed[0].detail}",
                  1)


def main() -> None:  # pragma: no cover - console entry
    app()


def _print_left_out(problems: list[tuple[Path, str]]) -> None:
    """One line on stderr per run file `load_runs` left out."""
    for path, reason in problems:
        err.print(f"warning: {path}: {reason}; left out", markup=False, highlight=False,
                  soft_wrap=True)


def _load_runs_warning(folder: Path) -> Any:
    """`load_runs`, with each left-out run file printed as one warning line on stderr."""
    import warnings

    from harness.leaderboard import ResultFileWarning, load_runs

    problems: list[tuple[Path, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResultFileWarning)  # printed below, once each
        try:
            return load_runs(folder, problems)
        finally:
            _print_left_out(problems)


@app.command()
def report(
    root: Annotated[Path, typer.Argument(help="Results root holding <scenario>/ folders, "
                                              "e.g. published")],
    page: Annotated[Path, typer.Option("--out", help="The results page to write.")
                    ] = Path("docs/results.md"),
    readme: Annotated[Path | None, typer.Option(
        "--readme", help="Also put the headline table (omniglot-stream) in this file, between "
                         "the lines <!-- results:start --> and <!-- results:end -->.")] = None,
) -> None:
    """Write every scenario folder's leaderboard files, the results page and, with --readme,
    the README's headline table; the same run files give the same bytes."""
    with _guard():
        import warnings

        from harness.errors import HarnessError
        from harness.fileio import atomic_write_bytes, atomic_write_text
        from harness.leaderboard import (
            ResultFileWarning,
            headline_markdown,
            replace_readme_block,
            results_markdown,
            write_leaderboards,
        )

        problems: list[tuple[Path, str]] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResultFileWarning)  # printed below, once each
            text = results_markdown(root, problems)
            from harness.experiment import recipe_drift

            runs = sorted(p.with_suffix(".json") for p in Path(root).glob("*/*.csv")
                          if p.with_suffix(".json").exists())
            for run_id, then, now in recipe_drift(runs):
                err.print(f"warning: {run_id} was made with another recipe than its preset's "
                          f"current one (config {then}, now {now}); re-run it",
                          markup=False, highlight=False, soft_wrap=True)
            _print_left_out(problems)
            new_readme = None
            if readme is not None:
                try:  # bytes: line endings outside the block are kept as they are
                    old = readme.read_bytes().decode("utf-8")
                except (OSError, UnicodeDecodeError) as e:
                    raise HarnessError(f"cannot read {readme} ({type(e).__name__}); pass the "
                                       "README that holds the results block") from None
                new_readme = replace_readme_block(old, headline_markdown(root), str(readme))
        # Nothing is written unless everything could be made.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResultFileWarning)  # printed above
            write_leaderboards(root)
        atomic_write_text(page, text)
        if new_readme is not None:
            atomic_write_bytes(readme, new_readme.encode("utf-8"))
        also = f" and the results block of {readme}" if readme is not None else ""
        err.print(f"wrote {page}{also}", markup=False, highlight=False, soft_wrap=True)
