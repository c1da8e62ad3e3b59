"""Fault injection for the reliability tests (tests/test_faults*.py) and
benchmarks/reliability.py: damaged files, a fork server that starts `harness` commands cheaply,
and kill campaigns that check what a killed run leaves behind.

A kill campaign starts the same `harness` command again and again into one results folder and
one cache, sends each start a signal (SIGKILL, SIGTERM or SIGINT) after a delay drawn from
`random.Random(seed)`, and after every kill checks the folder: every run CSV verifies
(`harness.results.verify_run`) or is absent, no run that was valid before the start is gone,
every valid run holds the numbers of an uninterrupted reference run, and every checkpoint in
the cache loads. A last, uninterrupted start must then finish with every run equal to the
reference (metrics that measure time or memory excluded).
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

VOLATILE = frozenset({"wall_s", "peak_rss_mb", "samples_per_s", "meta_train_s"})
"""Metrics that measure time or memory: they differ between two runs of the same config."""

SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}

TEMP = re.compile(r"^\..+\.tmp$")

# -- damaged files ----------------------------------------------------------------------------


def cut_in_last_value(path: Path) -> None:
    """End the CSV inside its last value (the file still parses, with a shorter number)."""
    text = path.read_text().rstrip("\n")
    path.write_text(text[:-2])


def short_row(path: Path) -> None:
    """Cut the second data row after its tenth field."""
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = ",".join(lines[2].split(",")[:10]) + "\n"
    path.write_text("".join(lines))


def header_only(path: Path) -> None:
    path.write_text(path.read_text().splitlines(keepends=True)[0])


def five_lines_dropped(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2] + lines[7:]))


CSV_DAMAGES = {"cut_in_last_value": cut_in_last_value, "short_row": short_row,
               "header_only": header_only, "five_lines_dropped": five_lines_dropped}


def flip_mantissa_bits(path: Path, every: int = 1, bits: int = 0x007F0000) -> int:
    """XOR mantissa bits of the float32 tensors of a safetensors file in place (the header
    stays intact, so the file still parses); return how many values were changed."""
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    changed = 0
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        for off in range(8 + n + start, 8 + n + end, 4 * every):
            (v,) = struct.unpack_from("<I", data, off)
            struct.pack_into("<I", data, off, v ^ bits)
            changed += 1
    path.write_bytes(bytes(data))
    return changed


# -- reading a results folder -----------------------------------------------------------------


def run_csvs(folder: Path) -> list[Path]:
    """The run CSVs under `folder` (what `harness leaderboard` reads: no leaderboard files,
    nothing hidden, no directories)."""
    return sorted(p for p in folder.rglob("*.csv") if p.is_file()
                  and p.name not in ("leaderboard.csv", "oracle_drop.csv")
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def numbers(csv_path: Path) -> dict[str, tuple[str, str]]:
    """metric -> (value, n) as written, without the metrics that measure time or memory."""
    with csv_path.open(newline="") as f:
        return {r["metric"]: (r["value"], r["n"]) for r in csv.DictReader(f)
                if r["metric"] not in VOLATILE}


@dataclass
class Snapshot:
    valid: dict[str, dict[str, tuple[str, str]]]
    """run_id -> numbers of every run whose files verify."""
    invalid: dict[str, str]
    """run_id -> why its CSV does not verify."""
    arrays_unreadable: list[str]
    """runs whose CSV verifies but whose .npz does not (arrays of a run being replaced)."""


def snapshot(folder: Path) -> Snapshot:
    from harness.results import verify_run

    snap = Snapshot({}, {}, [])
    for p in run_csvs(folder):
        why = verify_run(p)
        if why:
            snap.invalid[p.stem] = why
            continue
        snap.valid[p.stem] = numbers(p)
        if verify_run(p, check_npz=True):
            snap.arrays_unreadable.append(p.stem)
    return snap


def temp_files(*folders: Path) -> list[Path]:
    return sorted(p for d in folders if d.exists() for p in d.rglob(".*.tmp"))


def checkpoint_problems(cache: Path) -> list[str]:
    """'<file>: <why>' for every checkpoint under `cache` whose two files are present but
    which does not load."""
    from harness import checkpoint
    from harness.errors import DataError

    out = []
    for p in sorted(cache.rglob("*.safetensors")):
        if p.name.startswith(".") or not checkpoint.exists(p):
            continue
        try:
            checkpoint.load(p)
        except DataError as e:
            out.append(f"{p.name}: {e}")
    return out


# -- a fork server ------------------------------------------------------------------------------

_SERVER = r"""
import json, os, signal, sys, traceback
import torch
torch.set_num_threads(1)
from harness.cli import app
import harness.experiment, harness.results, harness.leaderboard, harness.check
import baselines.finetune, baselines.ncm, baselines.slda, baselines.maml
import scenarios.synthetic, scenarios.fewshot
harness.results.source_state()  # git calls once, not once per child
_p = [torch.nn.Parameter(torch.zeros(1))]
torch.optim.SGD(_p, lr=0.1), torch.optim.Adam(_p)  # their first use imports torch._dynamo

def child(argv, cwd, log):
    os.chdir(cwd)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = 0
    try:
        app(args=argv, prog_name="harness")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:  # outside the CLI's guard: die of SIGINT, as python does
        sys.stdout.flush(); sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(code)

print(json.dumps({"ready": os.getpid()}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if "start" in req:
        pid = os.fork()
        if pid == 0:
            child(req["start"], req["cwd"], req["log"])
        print(json.dumps({"pid": pid}), flush=True)
    else:
        _, status = os.waitpid(req["wait"], 0)
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"rc": rc}), flush=True)
"""


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
            "HARNESS_THREADS": "1", "MKL_NUM_THREADS": "1"}


class ForkServer:
    """Starts `harness` commands as forks of one process that imported torch and the harness
    once: a start costs milliseconds instead of seconds of imports, and the child runs the same
    code as `harness ...` after its imports (signals, exit codes and files alike)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER], cwd=ROOT, env=child_env(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if "ready" not in json.loads(self.proc.stdout.readline() or "{}"):
            raise RuntimeError("the fork server did not start; run its code alone to see why")

    def _ask(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fork server died; run it alone to see why")
        return json.loads(line)

    def start(self, argv: list[str], log: Path, cwd: Path = ROOT) -> int:
        return int(self._ask({"start": argv, "cwd": str(cwd), "log": str(log)})["pid"])

    def wait(self, pid: int) -> int:
        """The child's exit code, or minus the signal that ended it."""
        return int(self._ask({"wait": pid})["rc"])

    def run(self, argv: list[str], log: Path) -> int:
        return self.wait(self.start(argv, log))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- kill campaigns -----------------------------------------------------------------------------


@dataclass
class Target:
    """A `harness` command to kill, with the folders it writes."""

    name: str
    argv: list[str]
    """The command after `harness`, without --out and --cache-dir."""
    scenario_folder: str
    fresh_cache_each_round: bool = False
    """Start over with an empty cache once a start has finished, so that later kills land in
    (pre-/meta-)training and checkpoint writes too (a finished training is cached and not run
    again), and every start takes about as long as the reference."""

    def command(self, out: Path, cache: Path) -> list[str]:
        return [*self.argv, "--out", str(out), "--cache-dir", str(cache), "--quiet"]


CHEAP = ["--set", "n_classes=4,train_per_class=10,test_per_class=5"]

COMPARE = Target(
    name="harness compare finetune,ncm,slda x seeds 0-1 (synthetic-stream)",
    argv=["compare", "--scenario", "synthetic-stream", "--learners", "finetune,ncm,slda",
          "--seeds", "0-1", "--no-tune", *CHEAP],
    scenario_folder="synthetic-stream", fresh_cache_each_round=True)

META = Target(
    name="maml meta-training with a partial checkpoint every step (sinusoid-fewshot)",
    argv=["run", "--scenario", "sinusoid-fewshot", "--learner", "maml", "--baselines", "none",
          "--no-tune", "--set",
          "meta_steps=120,checkpoint_every_s=0,test_episodes=10,val_episodes=2"],
    scenario_folder="sinusoid-fewshot", fresh_cache_each_round=True)


@dataclass
class Outcome:
    """What a campaign tried and what it found; every `*_problems` list is expected empty."""

    target: str
    kills: Counter = field(default_factory=Counter)
    """signal -> starts that got it while running."""
    finished_first: Counter = field(default_factory=Counter)
    """signal -> starts that had finished before the signal came."""
    rounds_completed: int = 0
    runs_lost: list[str] = field(default_factory=list)
    runs_duplicated: list[str] = field(default_factory=list)
    inconsistent_visible: list[str] = field(default_factory=list)
    values_changed: list[str] = field(default_factory=list)
    """valid runs whose numbers differ from the reference (silently wrong)."""
    checkpoint_problems: list[str] = field(default_factory=list)
    exit_problems: list[str] = field(default_factory=list)
    resumed_not_identical: list[str] = field(default_factory=list)
    stale_temps_left: list[str] = field(default_factory=list)
    arrays_unreadable_after_kill: int = 0
    """kills after which a run's CSV was the old one and its .npz already the new one
    (load_arrays reports it; the leaderboard reads the CSV)."""
    reference_s: float = 0.0
    seconds: float = 0.0

    def problems(self) -> dict[str, list[str]]:
        return {k: v for k, v in vars(self).items() if k.endswith(("_lost", "_duplicated",
                "_visible", "_changed", "_problems", "_identical", "_left")) and v}


EXPECTED_RC = {
    "SIGKILL": {-signal.SIGKILL},
    "SIGTERM": {-signal.SIGTERM},
    "SIGINT": {130, -signal.SIGINT},
}
INTERRUPTED = "interrupted; finished runs and checkpoints are kept, re-run to resume"


def _tensors_equal(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    ta, tb = load_file(a), load_file(b)
    import torch

    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def reference(server: ForkServer, target: Target, work: Path) -> tuple[Snapshot, float, Path]:
    """An uninterrupted run of `target` in `work`/ref: its runs, its seconds, its cache."""
    out, cache = work / "ref-out", work / "ref-cache"
    t0 = time.perf_counter()
    rc = server.run(target.command(out, cache), work / "ref.log")
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"the reference run of {target.name} exited {rc}: "
                           f"{(work / 'ref.log').read_text()[-2000:]}")
    return snapshot(out / target.scenario_folder), seconds, cache


def campaign(server: ForkServer, target: Target, work: Path, per_signal: int, seed: int
             ) -> Outcome:
    """Kill `target` `per_signal` times with each signal (in a seeded random order, after seeded
    random delays) and check after every kill; then finish it and compare with a reference."""
    t_start = time.perf_counter()
    ref, ref_s, ref_cache = reference(server, target, work)
    res = Outcome(target=target.name, reference_s=round(ref_s, 2))
    rng = random.Random(seed)
    plan = [s for s in SIGNALS for _ in range(per_signal)]
    rng.shuffle(plan)
    out, cache = work / "out", work / "cache"
    folder = out / target.scenario_folder
    log = work / "kill.log"

    def check(after: str, before: Snapshot) -> Snapshot:
        snap = snapshot(folder) if folder.exists() else Snapshot({}, {}, [])
        res.inconsistent_visible += [f"{after}: {k}: {v}" for k, v in snap.invalid.items()]
        res.runs_lost += [f"{after}: {k}" for k in before.valid if k not in snap.valid]
        res.runs_duplicated += [f"{after}: {k}" for k in snap.valid if k not in ref.valid]
        res.values_changed += [f"{after}: {k}" for k, v in snap.valid.items()
                               if k in ref.valid and v != ref.valid[k]]
        res.arrays_unreadable_after_kill += bool(snap.arrays_unreadable)
        res.checkpoint_problems += [f"{after}: {p}" for p in checkpoint_problems(cache)]
        return snap

    def finished_round(after: str) -> None:
        """A start finished: its final checkpoints must equal the reference's."""
        res.rounds_completed += 1
        for p in sorted((cache / "checkpoints").glob("*.safetensors")):
            twin = ref_cache / "checkpoints" / p.name
            if ".partial." in p.name:
                res.resumed_not_identical.append(f"{after}: partial checkpoint {p.name} left")
            elif not twin.exists() or not _tensors_equal(p, twin):
                res.resumed_not_identical.append(f"{after}: checkpoint {p.name} differs")
        if target.fresh_cache_each_round:
            shutil.rmtree(cache, ignore_errors=True)

    before = Snapshot({}, {}, [])
    for i, name in enumerate(plan):
        delay = rng.uniform(0.0, ref_s)
        pid = server.start(target.command(out, cache), log)
        time.sleep(delay)
        os.kill(pid, SIGNALS[name])
        rc = server.wait(pid)
        after = f"kill {i + 1} ({name} at {delay:.2f} s)"
        if rc in (0, 1) and rc not in EXPECTED_RC[name]:
            res.finished_first[name] += 1
            if rc != 0:
                res.exit_problems.append(f"{after}: exit {rc}: {log.read_text()[-500:]}")
            finished_round(after)
        else:
            res.kills[name] += 1
            if rc not in EXPECTED_RC[name]:
                res.exit_problems.append(f"{after}: exit {rc}: {log.read_text()[-500:]}")
            text = log.read_text()
            # Silent when interrupted before the command began (nothing done, nothing to say).
            if rc == 130 and ("Traceback" in text or (text.strip() and INTERRUPTED not in text)):
                res.exit_problems.append(f"{after}: exit 130 without the one-line message")
        before = check(after, before)
    # The last start runs to the end: everything as in the reference.
    rc = server.run(target.command(out, cache), log)
    if rc != 0:
        res.exit_problems.append(f"final run: exit {rc}: {log.read_text()[-500:]}")
    final = check("final run", before)
    finished_round("final run")
    missing = [k for k in ref.valid if k not in final.valid]
    res.runs_lost += [f"final run: {k} missing" for k in missing]
    res.resumed_not_identical += [f"final run: {k}" for k, v in final.valid.items()
                                  if v != ref.valid.get(k)]
    res.stale_temps_left = [str(p.relative_to(work)) for p in temp_files(out)]
    res.seconds = round(time.perf_counter() - t_start, 1)
    return res


def concurrent(server: ForkServer, work: Path) -> dict[str, Any]:
    """Two compares into one folder and one cache at once (overlapping learners and seeds):
    every run of both is there, valid, once, with the numbers of a compare run alone."""
    argv = ["--scenario", "synthetic-stream", "--no-tune", *CHEAP, "--quiet",
            "--out", str(work / "out"), "--cache-dir", str(work / "cache")]
    a = ["compare", "--learners", "finetune,ncm,slda", "--seeds", "0-1", *argv]
    b = ["compare", "--learners", "slda,ncm,my_learners.toy:Linear", "--seeds", "1,0", *argv]
    pa = server.start(a, work / "a.log")
    pb = server.start(b, work / "b.log")
    rcs = [server.wait(pa), server.wait(pb)]
    alone = work / "alone"
    for i, cmd in enumerate((a, b)):
        rc = server.run([x if x not in (str(work / "out"), str(work / "cache")) else
                         str(alone / Path(x).name) for x in cmd], work / f"alone{i}.log")
        rcs.append(rc)
    both = snapshot(work / "out" / "synthetic-stream")
    ref = snapshot(alone / "out" / "synthetic-stream")
    return {"exit_codes": rcs, "runs": len(both.valid), "expected_runs": len(ref.valid),
            "invalid": both.invalid, "lost": sorted(set(ref.valid) - set(both.valid)),
            "extra": sorted(set(both.valid) - set(ref.valid)),
            "changed": sorted(k for k in both.valid if both.valid[k] != ref.valid.get(k)),
            "stale_temps_left": [str(p) for p in temp_files(work / "out")]}


# -- memory --------------------------------------------------------------------------------------


def peak_rss_of_stream(samples: int, work: Path) -> tuple[float, float]:
    """(peak RSS in MB of a fresh `harness run` of a linear model on a `samples`-sample
    synthetic stream with 1x1x1 inputs in batches of 10; its samples per second)."""
    per_class = samples // 10
    out = work / f"mem{samples}"
    cmd = [sys.executable, "-c", "from harness.cli import app; app(prog_name='harness')",
           "run", "--scenario", "synthetic-stream",
           "--learner", "my_learners.toy:Linear", "--baselines", "none", "--no-tune",
           "--quiet", "--out", str(out), "--cache-dir", str(work / "cache"), "--set",
           f"n_classes=10,train_per_class={per_class},test_per_class=10,size=1,"
           "batch_size=10,meta_train_classes=0"]
    proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"memory run of {samples} samples exited {proc.returncode}: "
                           f"{proc.stderr[-2000:]}")
    (csv_path,) = run_csvs(out)
    with csv_path.open(newline="") as f:
        rows = {r["metric"]: float(r["value"]) for r in csv.DictReader(f)}
    return rows["peak_rss_mb"], rows["samples_per_s"]


def log_bytes_per_sample() -> int:
    """What the run keeps per stream sample and cannot avoid: the input (1x1x1 float32) and
    label (int64) of the scenario's tensors, and the prequential log (float32 hit, int64
    experience index)."""
    return (4 + 8) + (4 + 8)
