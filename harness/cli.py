"""The `harness` command line (docs/design.md D10): parse, call one library function, render.

The cli modules are the only ones that print: this one (the app, `run`, `compare`, `check`),
`cli_common` (consoles, errors, options, progress), `cli_list`, `cli_results` (`leaderboard`,
`report`), `cli_sweep`, `cli_tables`. Exit codes: 0 success, 2 bad input (one line on stderr,
also for a usage error such as an unknown option), 1 a failed or diverged run. `--debug` (or
HARNESS_DEBUG=1) shows the full traceback instead of the one line.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from harness import cli_inputs as inputs
from harness.cli_common import (
    QUIET_HELP,
    STATE,
    THREADS_HELP,
    VERBOSE_HELP,
    CacheOpt,
    DataOpt,
    DebugOpt,
    DeviceOpt,
    EvalEveryOpt,
    NoTuneOpt,
    OutOpt,
    PresetOpt,
    QuietOpt,
    SeedOpt,
    SetOpt,
    ThreadsOpt,
    TimeoutOpt,
    VerboseOpt,
    command_setup,
    error_line,
    fail,
    guard,
    out,
    set_threads,
)
from harness.cli_list import list_cmd
from harness.cli_results import finish, leaderboard_cmd, report_cmd
from harness.cli_sweep import sweep_cmd

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
            error_line(e.format_message() + see)
            sys.exit(e.exit_code)
        except typer.Abort:
            error_line("aborted")
            sys.exit(1)
        # Without standalone mode click returns the code of a typer.Exit, else the command's
        # return value (None).
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=_OneLineErrors,
                  rich_markup_mode=None, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Benchmark harness for continual and online learning. --threads, "
                       "--quiet and -v go before the command or after it.")


def _version(value: bool) -> None:
    if value:
        from harness import __version__

        out.print(f"harness {__version__}", markup=False, highlight=False)
        raise typer.Exit(0)


@app.callback()
def _setup(
    threads: Annotated[int, typer.Option("--threads", envvar="HARNESS_THREADS",
                                         help=THREADS_HELP)] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print `harness <version>` and exit.")] = False,
) -> None:
    set_threads(threads)
    STATE.update(threads=threads, quiet=quiet, verbose=verbose)


LEARNER_HELP = ("Learner id (see harness list learners), avalanche:<Strategy>, or module:Class "
                "naming your own learner class or config. module:Class imports that module, "
                "which runs its code.")
ScenarioOpt = Annotated[str, typer.Option("--scenario", help="Scenario id (see harness list "
                                                             "scenarios).")]


def _run_all(scenario: str, learners: list[str], seeds: list[int], preset: str, device: str,
             out_dir: str, cache_dir: str | None, data_dir: Any, sets: list[str] | None,
             eval_every: int, no_tune: bool, timeout: float, start: Any, title: str) -> None:
    """`run` and `compare` alike: check every input, run learners x seeds, print, exit."""
    import logging

    from harness import experiment

    cfg = inputs.run_config(scenario, learners[0], seeds[0], preset, device, out_dir,
                            cache_dir, data_dir, sets, eval_every, no_tune, timeout)
    logging.getLogger("harness").debug("run config %s; learners %s; seeds %s", cfg,
                                       learners, seeds)
    with start() as progress:
        results = experiment.compare(cfg, learners, seeds, progress)
    finish(results, cfg.out_dir, results[0].scenario, title)


@app.command()
def run(
    scenario: ScenarioOpt,
    learner: Annotated[str, typer.Option("--learner", help=LEARNER_HELP)],
    seed: SeedOpt = 0,
    baselines: Annotated[str | None, typer.Option(
        "--baselines", help="Reference learners run on the same stream, comma-separated "
                            "(default: the learner's own list; 'none' for none).")] = None,
    preset: PresetOpt = "quick", device: DeviceOpt = "cpu", out_dir: OutOpt = "results",
    cache_dir: CacheOpt = None, data_dir: DataOpt = None, sets: SetOpt = None,
    eval_every: EvalEveryOpt = 0, no_tune: NoTuneOpt = False, timeout: TimeoutOpt = 0.0,
    threads: ThreadsOpt = None, quiet: QuietOpt = False, verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run one learner on one scenario (and its reference baselines on the same stream)."""
    with guard(debug), command_setup(threads, quiet, verbose) as start:
        from harness.registry import get_learner

        refs = list(get_learner(learner).compare_with) if baselines is None else (
            [] if baselines.strip() == "none" else inputs.names(baselines, "--baselines"))
        _run_all(scenario, [learner, *[r for r in refs if r != learner]], [seed], preset,
                 device, out_dir, cache_dir, data_dir, sets, eval_every, no_tune, timeout,
                 start, f"{scenario}, seed {seed}")


@app.command("compare")
def compare_cmd(
    scenario: ScenarioOpt,
    learners: Annotated[str, typer.Option(
        "--learners", help="Comma-separated learners, each as for run --learner.")],
    seeds: Annotated[str, typer.Option(
        "--seeds", help="0-4 or 0,1,2 (seeds 0 to 2147483647, at most 10000)")] = "0",
    preset: PresetOpt = "quick", device: DeviceOpt = "cpu", out_dir: OutOpt = "results",
    cache_dir: CacheOpt = None, data_dir: DataOpt = None, sets: SetOpt = None,
    eval_every: EvalEveryOpt = 0, no_tune: NoTuneOpt = False, timeout: TimeoutOpt = 0.0,
    threads: ThreadsOpt = None, quiet: QuietOpt = False, verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run several learners on identical streams for each seed; write the leaderboard."""
    with guard(debug), command_setup(threads, quiet, verbose) as start:
        names = inputs.names(learners, "--learners")
        _run_all(scenario, names, inputs.parse_seeds(seeds), preset, device, out_dir,
                 cache_dir, data_dir, sets, eval_every, no_tune, timeout, start,
                 f"{scenario}, seeds {seeds}")


@app.command()
def check(
    target: Annotated[str, typer.Argument(
        help="module:Class of your learner (imports that module, which runs its code), or a "
             "learner id")],
    scenario: Annotated[str, typer.Option("--scenario", help="Scenario to check on.")
                        ] = "synthetic-stream",
    threads: ThreadsOpt = None, quiet: QuietOpt = False, verbose: VerboseOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run the conformance checks on a learner (yours or a registered one)."""
    with guard(debug), command_setup(threads, quiet, verbose):
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
            fail(f"{len(failed)} check(s) failed; first: {failed[0].name}: {failed[0].detail}",
                 1)


app.command("list")(list_cmd)
app.command("sweep")(sweep_cmd)
app.command("leaderboard")(leaderboard_cmd)
app.command("report")(report_cmd)


def _register_plot() -> None:
    """`harness plot` (harness/cli_plot.py) when that module is there."""
    try:
        from harness.cli_plot import plot_cmd
    except ImportError as e:
        if e.name != "harness.cli_plot":
            raise
        return
    app.command("plot")(plot_cmd)


_register_plot()


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="harness")
