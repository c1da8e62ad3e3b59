"""The README's main job from an empty cache, timed: total wall time and where it went.

    python benchmarks/time_main_job.py [--threads 0]

Runs `harness run --scenario omniglot-stream --learner anml` as a user does (a fresh process,
an empty checkpoint cache and output folder in a temporary directory), measures its wall time
and CPU time, and reads from the run files it wrote each learner's `wall_s` and
`meta_train_s` and ANML's seed-0 accuracy. Run it on idle cores: the figure is absolute, not a
ratio. Results go to benchmarks/results/time_main_job.{json,md}; the README quotes them.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from record import Printer, write

COMMAND = ["run", "--scenario", "omniglot-stream", "--learner", "anml"]


def run_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Per learner of the run files in `folder`: wall_s, meta_train_s, acc_final_macro, the
    device and the git sha."""
    learners: dict[str, Any] = {}
    for path in sorted(folder.glob("*.csv")):
        if not path.with_suffix(".json").exists():
            continue  # the leaderboard and the oracle table, not run files
        rows = list(csv.DictReader(path.open()))
        values = {r["metric"]: float(r["value"]) for r in rows}
        learners[rows[0]["learner"]] = {
            "wall_s": values.get("wall_s"), "meta_train_s": values.get("meta_train_s"),
            "acc_final_macro": values.get("acc_final_macro"),
            "device": rows[0]["device"], "git_sha": rows[0]["git_sha"]}
    return learners


def run_harness(argv: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(wall s, CPU s (user + system), the process) of `python -m harness *argv` in a fresh
    process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", *argv], capture_output=True,
                          text=True, env={**os.environ})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = every core)")
    args = ap.parse_args()
    say = Printer()
    with tempfile.TemporaryDirectory() as tmp:
        out, cache = Path(tmp) / "results", Path(tmp) / "cache"
        wall, cpu, proc = run_harness(
            ["--quiet", *(["--threads", str(args.threads)] if args.threads else []), *COMMAND,
             "--out", str(out), "--cache-dir", str(cache)])
        if proc.returncode != 0:
            sys.exit(f"the main job failed ({proc.returncode}): {proc.stderr[-2000:]}")
        learners = run_files(out / "omniglot-stream")
    say(f"harness {' '.join(COMMAND)} (empty cache): {wall:.0f} s wall "
        f"({wall / 60:.1f} min), {cpu:.0f} s CPU")
    for name, v in learners.items():
        say(f"  {name:15s} wall_s {v['wall_s']:8.1f}  meta_train_s {v['meta_train_s'] or 0:7.1f}"
            f"  acc_final_macro {v['acc_final_macro']:.3f}  ({v['device']})")
    write("time_main_job", ap, args,
          {"wall_s": wall, "cpu_s": cpu, "learners": learners, "command": COMMAND},
          say.lines, ("main job wall time from an empty cache, minutes", wall / 60,
                      "< 8 min on 2 idle cores"))


if __name__ == "__main__":
    main()
