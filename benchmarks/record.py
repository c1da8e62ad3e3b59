"""What every benchmark writes: `benchmarks/results/<name>.json` (figures and provenance) and a
short `<name>.md` beside it, each through `harness.fileio.atomic_write_text`.

The provenance says what the figures were measured with: harness version, git sha of the
harness source (`harness.results.source_state`), torch version, device, torch threads, CPU
model and load average (ratios are interleaved in one run, absolute times depend on the
load), the date and the exact command. A benchmark run on a GPU writes `<name>-cuda.*`, so it
never replaces the CPU figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import harness
from harness.fileio import atomic_write_text
from harness.results import source_state

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: str = "cpu") -> dict[str, Any]:
    """Versions and machine facts for a benchmark's output file."""
    sha, diff = source_state()
    dev = device
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = f"{device}:{torch.cuda.get_device_name()}"
    return {
        "harness_version": harness.__version__,
        "git_sha": sha,
        "source_diff": diff,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": dev,
        "torch_threads": torch.get_num_threads(),
        "cpu_model": _cpu_model(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
    }


def changed_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """'' when `args` are the parser's defaults, else a sentence naming each difference (a run
    made smaller than the default, say, must say so beside its figures)."""
    defaults = vars(parser.parse_args([]))
    diff = [f"{k}={v!r} (default {defaults[k]!r})" for k, v in vars(args).items()
            if k in defaults and v != defaults[k]]
    return f"Run with arguments other than the defaults: {', '.join(diff)}." if diff else ""


def write(name: str, parser: argparse.ArgumentParser, args: argparse.Namespace,
          results: dict[str, Any], output: list[str], ratio: tuple[str, float, str],
          device: str = "cpu", note: str = "") -> Path:
    """Write `<name>.json` and `<name>.md` (`-cuda` added on a GPU) under `RESULTS`; return the
    JSON's path.

    `results` holds the figures, `output` the lines the benchmark printed, `ratio` the key
    figure as (what it is, value, target), `note` anything else a reader must know. Arguments
    that differ from the parser's defaults are named in the note.
    """
    stem = name + ("-cuda" if device.startswith("cuda") else "")
    note = " ".join(t for t in (changed_defaults(parser, args), note) if t)
    prov = provenance(device)
    what, value, target = ratio
    data = {"benchmark": name, "ratio": {"what": what, "value": value, "target": target},
            "note": note, "arguments": vars(args), "provenance": prov, "results": results,
            "output": output}
    path = RESULTS / f"{stem}.json"
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
    md = [f"# {stem}", "", f"**{what}: {value:.3g}** (target: {target})", ""]
    if note:
        md += [note, ""]
    md += [f"- {k}: `{v}`" for k, v in prov.items()]
    md += ["", "```", *output, "```", ""]
    atomic_write_text(RESULTS / f"{stem}.md", "\n".join(md))
    return path


class Printer:
    """print() that also keeps the lines for the output file."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.extend(text.split("\n"))
