"""Run a fixed set of cheap reference runs and check that two trees give bit-identical run ids
and metric values.

    python scripts/reference_runs.py make OUT_DIR [--harness CMD]
    python scripts/reference_runs.py compare BEFORE_DIR AFTER_DIR

`make` runs the reference set (REFERENCE) with the harness of the tree it is started in (the
current working directory is the repository root), on one CPU thread, with a private checkpoint
cache OUT_DIR/cache so that every meta-training is redone. `compare` checks the run files
`<scenario>/<run_id>.{csv,json,npz}` of two such folders: the same run ids, every CSV cell equal
as text except the provenance and timing columns (EXCLUDED_COLUMNS) and the values of the timing
rows (TIMING_METRICS), every NPZ array equal (dtype, shape, values, NaN positions), and the
deterministic JSON fields (JSON_FIELDS). It prints one line per run and exits 1 on any
difference or missing run. About 4 minutes on one core.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Harness arguments (after `harness --threads 1`) of the reference set; `make` adds --out,
# --cache-dir and --quiet. maml++ scores checkpoints on the validation episodes (ensemble_top=2,
# every 50 steps); it is tested with 5 inner steps, the number its per-step lrs were learned for.
REFERENCE: list[list[str]] = [
    ["compare", "--scenario", "synthetic-stream", "--learners", "finetune,replay,ncm,slda",
     "--seeds", "0-1"],
    ["run", "--scenario", "sinusoid-fewshot", "--learner", "maml", "--seed", "0",
     "--set", "meta_steps=300"],
    ["run", "--scenario", "sinusoid-fewshot", "--learner", "maml++", "--seed", "0",
     "--set", "meta_steps=100", "--set", "ensemble_top=2", "--set", "val_every=50",
     "--set", "scenario.test_steps_grid=5"],
    ["run", "--scenario", "omniglot-fewshot", "--learner", "protonet", "--seed", "0",
     "--set", "meta_steps=200", "--set", "test_episodes=200"],
    ["compare", "--scenario", "video-frames", "--learners", "finetune,slda", "--seeds", "0",
     "--set", "ordering=instance"],
    ["run", "--scenario", "omniglot-stream", "--learner", "anml-untrained", "--seed", "0",
     "--set", "n_classes=10"],
    ["run", "--scenario", "sine-incremental", "--learner", "oml-sine", "--seed", "0",
     "--set", "meta_steps=20", "--baselines", "none"],
]

DEFAULT_HARNESS = [sys.executable, "-c", "from harness.cli import app; app()"]

# CSV columns that depend on the tree's provenance, the machine or the clock, not on the results:
EXCLUDED_COLUMNS: frozenset[str] = frozenset({
    "harness_version",  # package version string
    "git_sha",  # commit of the tree
    "source_diff",  # digest of the tree's uncommitted changes
    "torch_version",  # installed torch build
    "device",  # cpu:<machine arch>x<torch threads>
    "started_at",  # wall-clock start time
    "wall_s",  # elapsed seconds of the run
    "meta_train_seconds_total",  # elapsed seconds of (head-only learners') meta-training
})
# Metric rows whose `value` is a measurement of time or memory (their other cells are compared):
TIMING_METRICS: frozenset[str] = frozenset({"wall_s", "samples_per_s", "meta_train_s",
                                            "peak_rss_mb"})
# JSON fields compared exactly. The JSON has no run_id field: the run id is the file name (the
# set of runs) and the CSV's run_id column. meta_train is left out: it holds meta_train_s.
JSON_FIELDS = ("config_hash", "status", "learner", "seed", "stream_hash", "scenario_params",
               "learner_config", "resolved_learner_config", "lr_selection", "error")
RUN_SUFFIXES = (".csv", ".json", ".npz")


def make(out_dir: Path, harness: list[str]) -> int:
    """Run the reference set into out_dir (which must not hold anything yet)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        sys.exit(f"{out_dir} is not empty: make needs a fresh folder (and a fresh cache)")
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HARNESS_THREADS": "1"}
    if harness == DEFAULT_HARNESS:
        where = subprocess.run([sys.executable, "-c", "import harness; print(harness.__file__)"],
                               env=env, capture_output=True, text=True, check=True).stdout
        print(f"harness imported from {where.strip()}", flush=True)
    failed = 0
    t_all = time.perf_counter()
    for args in REFERENCE:
        cmd = [*harness, "--threads", "1", *args, "--out", str(out_dir),
               "--cache-dir", str(out_dir / "cache"), "--quiet"]
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode
        print(f"{time.perf_counter() - t0:7.1f}s rc={rc}  harness --threads 1 {shlex.join(args)}",
              flush=True)
        failed += rc != 0
    runs = run_files(out_dir)
    not_ok = [k for k, files in runs.items() if ".json" in files
              and json.loads(files[".json"].read_text()).get("status") != "ok"]
    print(f"{len(runs)} runs in {time.perf_counter() - t_all:.1f}s; "
          f"{failed} failed commands; runs not ok: {not_ok or 'none'}")
    return 1 if failed or not_ok or not runs else 0


def run_files(root: Path) -> dict[str, dict[str, Path]]:
    """{'<scenario>/<run_id>': {suffix: path}} of the run files under root."""
    runs: dict[str, dict[str, Path]] = {}
    for path in sorted(root.glob("*/*")):
        if (path.parent.name == "cache" or path.suffix not in RUN_SUFFIXES
                or path.name.startswith("leaderboard")):
            continue
        runs.setdefault(f"{path.parent.name}/{path.stem}", {})[path.suffix] = path
    return runs


ADDED: set[str] = set()
"""Metric rows AFTER may have and BEFORE lacks (`compare --allow-added-metrics`): a change that
adds measurements; every row both have must still be identical."""


def diff_csv(a: Path, b: Path) -> str | None:
    """The first difference of two run CSVs, or None."""
    with a.open(newline="") as fa, b.open(newline="") as fb:
        ra, rb = list(csv.reader(fa)), list(csv.reader(fb))
    if not ra or not rb or ra[0] != rb[0]:
        return f"csv header: {ra[:1]} != {rb[:1]}"
    head = ra[0]
    if "metric" in head and ADDED:
        col = head.index("metric")
        have = {row[col] for row in ra[1:]}
        rb = [rb[0], *[row for row in rb[1:] if row[col] in have or row[col] not in ADDED]]
    if len(ra) != len(rb):
        return f"csv rows: {len(ra) - 1} != {len(rb) - 1}"
    metric_col = head.index("metric") if "metric" in head else -1
    for i, (xa, xb) in enumerate(zip(ra[1:], rb[1:], strict=True), 1):
        metric = xa[metric_col] if 0 <= metric_col < len(xa) else "?"
        for j, col in enumerate(head):
            if col in EXCLUDED_COLUMNS or (col == "value" and metric in TIMING_METRICS):
                continue
            va, vb = (x[j] if j < len(x) else None for x in (xa, xb))
            if va != vb:
                return f"csv row {i} (metric {metric}) column {col}: {va!r} != {vb!r}"
    return None


def diff_npz(a: Path, b: Path) -> str | None:
    """The first difference of two run NPZ files, or None."""
    with np.load(a, allow_pickle=False) as za, np.load(b, allow_pickle=False) as zb:
        if sorted(za.files) != sorted(zb.files):
            return f"npz arrays: {sorted(za.files)} != {sorted(zb.files)}"
        for name in sorted(za.files):
            x, y = za[name], zb[name]
            if x.dtype != y.dtype or x.shape != y.shape:
                return f"npz {name}: {x.dtype}{x.shape} != {y.dtype}{y.shape}"
            nan_ok = x.dtype.kind in "fc"
            if not np.array_equal(x, y, equal_nan=nan_ok):
                same = (x == y) | (np.isnan(x) & np.isnan(y)) if nan_ok else x == y
                idx = tuple(int(i) for i in np.argwhere(~np.asarray(same))[0])
                return f"npz {name}{list(idx)}: {x[idx]!r} != {y[idx]!r}"
    return None


def diff_json(a: Path, b: Path) -> str | None:
    """The first difference of the compared fields of two run JSONs, or None."""
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    for key in JSON_FIELDS:
        # Serialised, so that NaN equals NaN and 1 differs from 1.0.
        sa, sb = (json.dumps(j.get(key), sort_keys=True) for j in (ja, jb))
        if sa != sb:
            return f"json {key}: {sa[:300]} != {sb[:300]}"
    return None


def compare(before: Path, after: Path) -> int:
    """Print one line per run; 1 if anything differs or is missing, else 0."""
    ra, rb = run_files(before), run_files(after)
    same = bad = 0
    for key in sorted(ra.keys() | rb.keys()):
        fa, fb = ra.get(key, {}), rb.get(key, {})
        problem: str | None = "; ".join(f"{s} only in {'BEFORE' if s in fa else 'AFTER'}"
                                      for s in RUN_SUFFIXES if (s in fa) != (s in fb))
        if not problem:
            for suffix, differ in ((".csv", diff_csv), (".npz", diff_npz), (".json", diff_json)):
                if suffix in fa and (problem := differ(fa[suffix], fb[suffix])):
                    break
        if problem:
            bad += 1
            print(f"{key}: DIFFERS {problem}")
        else:
            same += 1
            print(f"{key}: same")
    print(f"{same + bad} runs: {same} same, {bad} differ or missing")
    return 1 if bad or not (ra or rb) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_make = sub.add_parser("make", help="run the reference set into OUT_DIR")
    p_make.add_argument("out_dir", type=Path)
    p_make.add_argument("--harness", help="the harness command line (default: this Python, "
                        "importing harness from the current directory)")
    p_cmp = sub.add_parser("compare", help="check two reference folders are bit-identical")
    p_cmp.add_argument("before", type=Path)
    p_cmp.add_argument("after", type=Path)
    p_cmp.add_argument("--allow-added-metrics", default="",
                       help="comma-separated metric rows AFTER may add (e.g. new measurements)")
    args = parser.parse_args()
    if args.command == "make":
        harness = shlex.split(args.harness) if args.harness else DEFAULT_HARNESS
        sys.exit(make(args.out_dir.resolve(), harness))
    ADDED.update(m for m in args.allow_added_metrics.split(",") if m)
    sys.exit(compare(args.before, args.after))


if __name__ == "__main__":
    main()
