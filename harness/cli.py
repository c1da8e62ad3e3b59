"""The `harness` command line (docs/design.md D10): parse, call one library function, render.

This is the only module that prints. Exit codes: 0 success, 2 bad input (one line on stderr,
also for a usage error such as an unknown option), 1 a failed or diverged run. `--debug` (or
HARNESS_DEBUG=1) shows the full traceback instead of the one line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

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
            tasks[phase] = bars.add_task(escape(phase), total=total, info="")
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in info.items())
        bars.update(tasks[phase], completed=done, total=total, info=escape(text))

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
        cells = [escape(r.learner), str(r.seed), r.status,
                 f"{lr:.0e}" if isinstance(lr, float) else ""]
        cells += [f"{r.metrics[k]:.3f}" if k in r.metrics else "" for k in present]
        table.add_row(*cells)
    return table


KEY_METRICS = ["meta_test_test_acc", "acc_final_macro", "forgetting_max", "online_acc",
               "episode_acc", "episode_mse", "mse_final", "wall_s"]


def _leaderboard_rich(table: Any, title: str) -> Any:
    """The leaderboard's key columns as `mean ± ci95`; scenario parameters only where they
    differ between rows. Partial runs (meta-training stopped early, `status` 'partial') come
    in a second table, unranked, with their meta-steps done of asked."""
    import json

    import pandas as pd
    from rich.console import Group

    params = [json.loads(p) if isinstance(p, str) and p else {}
              for p in table.get("scenario_params", pd.Series([""] * len(table)))]
    varying = sorted({k for p in params for k in p if len({str(q.get(k)) for q in params}) > 1})
    metrics = [m for m in KEY_METRICS if f"{m}_mean" in table.columns]
    partial = (table["status"] == "partial" if "status" in table.columns
               else pd.Series(False, index=table.index))
    # Failed or diverged runs: a column only where there are any (a group of only those has
    # no rank and no metrics).
    failed = "failed" in table.columns and bool((table["failed"].fillna(0) > 0).any())
    # Two configurations of one learner (e.g. different meta_steps): tell them apart.
    same = ["learner", "preset", *(["status"] if "status" in table.columns else [])]
    config = "config_hash" in table.columns and bool(table.duplicated(same).any())
    # Meta-training stopped by a time limit in rows without a status (older tables): say how
    # far it got. Rows written before `meta_train_complete` existed tell it by steps done <
    # meta_steps.
    cut = pd.Series(False, index=table.index)
    if "meta_train_complete_mean" in table.columns:
        cut |= table["meta_train_complete_mean"] < 1
    asked = pd.Series(float("nan"), index=table.index)
    if "meta_steps" in table.columns:
        asked = pd.to_numeric(table["meta_steps"], errors="coerce")
    if "meta_steps_asked_mean" in table.columns:
        asked = table["meta_steps_asked_mean"].fillna(asked)
    if "meta_steps_done_mean" in table.columns:
        cut |= table["meta_steps_done_mean"] < asked
    done = table.get("meta_steps_done_mean", pd.Series(float("nan"), index=table.index))

    def render(rows: Any, name: str, ranked: bool) -> Table:
        rich_table = Table(title=name)
        stopped = not ranked or bool(cut[rows].any())
        for col in [*(["rank"] if ranked else []), "learner", "preset",
                    *(["config"] if config else []), *varying, "seeds",
                    *(["failed"] if failed else []), *(["meta-steps"] if stopped else []),
                    *metrics]:
            rich_table.add_column(col, justify="left" if col in ("learner", "preset")
                                  else "right")
        for i, (_, row) in enumerate(table.iterrows()):
            if not rows.iloc[i]:
                continue
            cells = ["-" if pd.isna(row["rank"]) else str(row["rank"])] if ranked else []
            cells += [str(row["learner"]), str(row["preset"])]
            cells += [str(row["config_hash"])[:8]] if config else []
            cells += [str(params[i].get(k, "")) for k in varying]
            cells.append(str(row["n_seeds"]))
            if failed:
                cells.append(str(int(row["failed"])))
            if stopped:
                d, a = done.iloc[i], asked.iloc[i]
                if not ranked:
                    cells.append("" if pd.isna(d) else f"{d:.0f}" if pd.isna(a)
                                 else f"{d:.0f} of {a:.0f}")
                else:
                    note = " (stopped)" if cut.iloc[i] else ""
                    cells.append("" if pd.isna(d) else f"{d:.0f}{note}")
            for m in metrics:
                mean, half = row[f"{m}_mean"], row[f"{m}_ci95"]
                cells.append("" if pd.isna(mean) else f"{mean:.3f}" if pd.isna(half)
                             else f"{mean:.3f} ± {half:.3f}")
            rich_table.add_row(*cells)
        return rich_table

    if not partial.any():
        return render(~partial, title, True)
    parts = [render(~partial, title, True)] if (~partial).any() else []
    parts.append(render(partial, "partial runs: meta-training stopped early (steps done of "
                                 "steps asked); not ranked", False))
    return Group(*parts)


def _oracle_rich(drops: Any, unpaired: Any = None) -> Any:
    """The relative drop below the i.i.d. oracle (`oracle_drops`): one row per learner and
    metric, the learner's and the oracle's mean accuracy and the drop as `mean ± ci95`; then
    one line per learner whose runs have an oracle on the same stream but are not paired with
    it (`unpaired_oracle_runs`, e.g. 'not paired: representation differs')."""
    import pandas as pd
    from rich.console import Group
    from rich.text import Text

    from harness.leaderboard import unpaired_oracle_notes

    parts: list[Any] = []
    if not drops.empty:
        table = Table(title="drop below the i.i.d. oracle: (oracle - stream) / oracle")
        for col in ("learner", "oracle", "pairs", "metric", "stream", "oracle acc", "drop"):
            table.add_column(col, justify="left" if col in ("learner", "oracle", "metric")
                             else "right")
        for _, r in drops.iterrows():
            drop = (f"{r['mean_drop']:.3f}" if pd.isna(r["ci95"])
                    else f"{r['mean_drop']:.3f} ± {r['ci95']:.3f}")
            learner = str(r["learner"]) + (" (partial)" if r.get("status") == "partial" else "")
            table.add_row(learner, str(r["oracle"]), str(r["n_pairs"]),
                          str(r["metric"]).removeprefix("meta_test_"), f"{r['mean_stream']:.3f}",
                          f"{r['mean_oracle']:.3f}", drop)
        parts.append(table)
    if unpaired is not None:
        parts += [Text(note) for note in unpaired_oracle_notes(unpaired)]
    return Group(*parts)


def _finish(results: list[Any], out_dir: Path, scenario: str, title: str) -> None:
    from harness.leaderboard import (
        leaderboard_table,
        oracle_drops,
        unpaired_oracle_runs,
        write_leaderboard,
    )
    from harness.results import safe_id

    out.print(_results_table(results, title))
    folder = out_dir / safe_id(scenario)
    runs = _load_runs_warning(folder)
    csv_path, md_path = write_leaderboard(folder, runs)
    out.print(_leaderboard_rich(leaderboard_table(runs),
                                f"leaderboard {folder} (mean ± 95% CI over seeds)"))
    # The drop of the runs just made, where an oracle ran on the same streams.
    made = runs[runs["run_id"].isin({r.run_id for r in results})]
    drops, unpaired = oracle_drops(made), unpaired_oracle_runs(made)
    if not drops.empty or not unpaired.empty:
        out.print(_oracle_rich(drops, unpaired))
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


def _writable(text: str, flag: str) -> Path:
    """The folder `text` names, checked to take files before any work: its missing folders
    are made and an empty temp file is written there (`harness.fileio`), then both removed,
    so a run that stops on bad input leaves nothing behind."""
    from harness import fileio
    from harness.errors import HarnessError

    if not text.strip():
        raise HarnessError(f"{flag} is empty; name a folder, e.g. {flag} results")
    folder = Path(text)
    made: list[Path] = []  # the folders this check creates, deepest first
    tmp: Path | None = None
    try:
        p = folder
        while not p.exists() and p != p.parent:
            made.append(p)
            p = p.parent
        tmp = fileio.temp_path(folder / ".write-check")
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        why = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or "error"
        raise HarnessError(f"{flag} {text}: cannot write there ({why}); pass a folder you can "
                           "write to") from None
    finally:
        if tmp is not None:
            with suppress(OSError):
                tmp.unlink()
        for q in made:  # deepest first
            with suppress(OSError, ValueError):
                q.rmdir()
    return folder


def _check_device(device: str) -> None:
    """Refuse a device torch cannot use here, before any work."""
    import re

    import torch

    from harness.errors import HarnessError

    m = re.fullmatch(r"cpu|mps|cuda(?::(\d{1,4}))?", device)
    if m is None:
        raise HarnessError(f"--device must be cpu, cuda, cuda:N or mps, got {device!r}")
    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise HarnessError(f"--device {device} asked for, but torch sees no GPU; use "
                               "--device cpu")
        if m.group(1) is not None and int(m.group(1)) >= n:
            raise HarnessError(f"--device {device}: torch sees {n} GPU(s), cuda:0 to "
                               f"cuda:{n - 1}")
    if device == "mps" and not torch.backends.mps.is_available():
        raise HarnessError("--device mps asked for, but torch sees no MPS (Apple GPU); use "
                           "--device cpu")


def _run_config(scenario: str, learner: str, seed: int, preset: str, device: str, out_dir: str,
                cache_dir: str | None, data_dir: Path | None, sets: list[str] | None,
                eval_every: int, no_tune: bool, timeout: float) -> Any:
    """The RunConfig of the command line, every argument checked (the output and cache
    folders last: they are test-written)."""
    from harness.config import check_seed
    from harness.experiment import RunConfig

    check_seed(seed)
    _check_device(device)
    cfg = RunConfig(scenario=scenario, learner=learner, seed=seed, preset=preset,
                    device=device, out_dir=Path(out_dir), data_dir=data_dir,
                    overrides=_parse_sets(sets), eval_every=eval_every, tune_lr=not no_tune,
                    timeout_s=timeout)
    cfg.out_dir = _writable(out_dir, "--out")
    cfg.cache_dir = _writable(cache_dir, "--cache-dir") if cache_dir is not None else None
    return cfg


def _names(text: str, flag: str) -> list[str]:
    """Comma-separated learner names, each once, in order; at least one."""
    from harness.errors import HarnessError

    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise HarnessError(f"{flag} {text!r} names no learner; write learner ids separated by "
                           "commas, e.g. finetune,replay (see harness list learners)")
    return names


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
            [] if baselines.strip() == "none" else _names(baselines, "--baselines"))
        cfg = _run_config(scenario, learner, seed, preset, device, out_dir, cache_dir, data_dir,
                          sets, eval_every, no_tune, timeout)
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
        from harness.config import parse_seeds
        from harness.experiment import compare

        names = _names(learners, "--learners")
        seed_list = parse_seeds(seeds)
        cfg = _run_config(scenario, names[0], seed_list[0], preset, device, out_dir, cache_dir,
                          data_dir, sets, eval_every, no_tune, timeout)
        with _progress(quiet) as progress:
            results = compare(cfg, names, seed_list, progress)
        _finish(results, cfg.out_dir, results[0].scenario, f"{scenario}, seeds {seeds}")


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
            out.print(_leaderboard_rich(table, f"{directory} (mean ± 95% CI over seeds)"))
            drops, unpaired = oracle_drops(runs), unpaired_oracle_runs(runs)
            if not drops.empty or not unpaired.empty:
                out.print(_oracle_rich(drops, unpaired))
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
    """Write the results page (every scenario's leaderboard) and, with --readme, the README's
    headline table; the same run files give the same bytes."""
    with _guard():
        import warnings

        from harness.errors import HarnessError
        from harness.fileio import atomic_write_bytes, atomic_write_text
        from harness.leaderboard import (
            ResultFileWarning,
            headline_markdown,
            replace_readme_block,
            results_markdown,
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
        atomic_write_text(page, text)
        if new_readme is not None:
            atomic_write_bytes(readme, new_readme.encode("utf-8"))
        also = f" and the results block of {readme}" if readme is not None else ""
        err.print(f"wrote {page}{also}", markup=False, highlight=False, soft_wrap=True)
