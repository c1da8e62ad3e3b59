"""What every command of the `harness` command line shares: the consoles, the one-line error
handling, the option types, and the per-command setup (torch threads, log level, progress).

Progress: a rich progress bar per phase when stderr is a terminal; otherwise log lines of the
"harness" logger (`harness.logs.LogProgress`) with a timestamp. `--quiet` shows warnings only,
`-v` debug records too. `--threads`, `--quiet` and `-v` are accepted before the command
(`harness --threads 2 run ...`) and after it (`harness run ... --threads 2`); after it wins.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

# Wide when piped, so tables in logs are not cut; a terminal sets its own width.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class Format(StrEnum):
    table = "table"
    md = "md"
    csv = "csv"


class Executor(StrEnum):
    serial = "serial"
    local = "local"
    slurm = "slurm"
    ray = "ray"


class ListWhat(StrEnum):
    scenarios = "scenarios"
    learners = "learners"
    all = "all"


WHERE = " Goes before the command (harness --threads 2 run ...) or after it."
THREADS_HELP = ("torch CPU threads; 0 = every core this process may use (the default, or env "
                "HARNESS_THREADS). On a machine busy with other jobs use 1: more threads than "
                "free cores stall." + WHERE)
QUIET_HELP = ("Warnings and errors only: no progress bar, no progress lines. Before or after "
              "the command.")
VERBOSE_HELP = "Debug log lines too. Before or after the command."

SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Scenario or learner parameter KEY=VALUE (repeatable; prefix scenario. or "
                  "learner. to disambiguate).")]
# --out and --cache-dir as text: a Path turns '' into '.', and '' must be refused.
OutOpt = Annotated[str, typer.Option("--out", help="Results root directory.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the stream and the learner "
                                                     "(0 to 2147483647).")]
PresetOpt = Annotated[str, typer.Option(
    "--preset", help="Learner preset: quick (a CPU, minutes) for every built-in learner; the "
                     "others (paper, long, conv4, ...) are per learner: `harness list "
                     "learners` shows each learner's.")]
DeviceOpt = Annotated[str, typer.Option(
    "--device", help="torch device: cpu, cuda, cuda:N (N-th GPU) or mps.")]
CacheOpt = Annotated[str | None, typer.Option("--cache-dir", help="Checkpoint cache.")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="User-supplied data.")]
EvalEveryOpt = Annotated[int, typer.Option("--eval-every", help="Also evaluate every N samples.")]
NoTuneOpt = Annotated[bool, typer.Option("--no-tune", help="Keep the configured lr (no search).")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", help="Wall-clock limit of each run in seconds (0 = none); a run past it is "
                      "recorded as timed_out.")]
DebugOpt = Annotated[bool, typer.Option(
    "--debug", envvar="HARNESS_DEBUG",
    help="On an error, show the full traceback instead of the one-line message.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help=THREADS_HELP,
                                                show_default=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help=VERBOSE_HELP)]

STATE: dict[str, Any] = {"threads": 0, "quiet": False, "verbose": False}
"""The global options of this invocation (set by the app's callback): --threads as given (0:
not given; a sweep's local workers get it too), --quiet, -v."""


def error_line(message: str) -> None:
    """`error: message` on stderr, on one line, printed as given (no rich markup)."""
    line = " ".join(message.split())
    err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int) -> None:
    error_line(message)
    raise typer.Exit(code)


def debugging(debug: bool = False) -> bool:
    return debug or os.environ.get("HARNESS_DEBUG", "").lower() in ("1", "true", "yes")


@contextmanager
def guard(debug: bool = False) -> Iterator[None]:
    """Turn the library's errors into one line on stderr and an exit code, never a traceback;
    with `debug` (--debug, or HARNESS_DEBUG=1 for every command) they propagate whole."""
    from harness.errors import DivergedError, HarnessError

    if debugging(debug):
        yield
        return
    try:
        yield
    except HarnessError as e:
        fail(str(e), 2)
    except DivergedError as e:
        fail(f"run diverged: {e}", 1)
    except KeyboardInterrupt:
        fail("interrupted; finished runs and checkpoints are kept, re-run to resume", 130)
    except MemoryError:
        fail("out of memory; make the run smaller (fewer seeds, smaller --set sizes) or use a "
             "machine with more memory", 1)


def set_threads(threads: int) -> None:
    if threads < 0:
        fail(f"--threads must be >= 0 (0 = all available cores), got {threads}", 2)
    import torch

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))


class _StderrHandler(logging.Handler):
    """Plain lines on whatever sys.stderr is when a record comes (a test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never end a run
            self.handleError(record)


def _handler(level: int) -> logging.Handler:
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(console=err, show_path=False, markup=False)
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                               datefmt="%Y-%m-%d %H:%M:%S"))
    handler.setLevel(level)
    return handler


@contextmanager
def command_setup(threads: int | None = None, quiet: bool = False, verbose: bool = False
                  ) -> Iterator[Callable[[], Any]]:
    """One command's setup: --threads (after the command wins over before it), the "harness"
    logger's level and a handler on stderr for the command's duration; yields a function
    that makes the progress context (`progress()`)."""
    if threads is not None:
        set_threads(threads)
        STATE["threads"] = threads
    quiet, verbose = quiet or STATE["quiet"], verbose or STATE["verbose"]
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logger = logging.getLogger("harness")
    handler, old_level = _handler(level), logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield lambda: progress(quiet)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@contextmanager
def progress(quiet: bool) -> Iterator[Callable[[str, int, int, dict[str, float]], None] | None]:
    """A rich progress bar per phase, with rate and ETA, on a terminal; log lines otherwise;
    nothing when quiet."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        from harness.logs import LogProgress

        yield LogProgress()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from harness.logs import info_text

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), console=err, transient=True)
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int, info: dict[str, float]) -> None:
        if phase not in tasks or (done < bars.tasks[tasks[phase]].completed):
            if phase in tasks:
                bars.remove_task(tasks[phase])
            tasks[phase] = bars.add_task(escape(phase), total=total, info="")
        bars.update(tasks[phase], completed=done, total=total, info=escape(info_text(info)))

    with bars:
        yield update
