"""How far one quick ANML meta-training's result moves with its seed and with the thread count.

    python benchmarks/meta_train_spread.py [--seeds 0-1] [--threads 2]

For each seed, runs `harness --threads T run --scenario omniglot-stream --learner anml-seeded
--seed S --baselines none` in a fresh process with an empty checkpoint cache (so it
meta-trains its own network, `meta_seed` = the seed, on T threads) and records the run's
acc_final_macro and meta-training time. The published `anml-seeded` rows are the same runs
made on one thread: the README sets the two side by side. Results go to
benchmarks/results/meta_train_spread.{json,md}.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from record import Printer, write
from time_main_job import run_files

from harness.cli_inputs import parse_seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-1", help="run seeds, e.g. 0-1 or 0,3")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each run")
    args = ap.parse_args()
    say = Printer()
    runs: dict[int, dict] = {}
    for seed in parse_seeds(args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            out, cache = Path(tmp) / "results", Path(tmp) / "cache"
            cmd = [sys.executable, "-m", "harness", "--quiet", "--threads", str(args.threads),
                   "run", "--scenario", "omniglot-stream", "--learner", "anml-seeded",
                   "--seed", str(seed), "--baselines", "none", "--out", str(out),
                   "--cache-dir", str(cache)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"seed {seed} failed ({proc.returncode}): {proc.stderr[-2000:]}")
            runs[seed] = run_files(out / "omniglot-stream")["anml-seeded"]
        v = runs[seed]
        say(f"anml-seeded seed {seed}, {args.threads} threads: acc_final_macro "
            f"{v['acc_final_macro']:.3f}, meta_train_s {v['meta_train_s']:.1f} ({v['device']})")
    accs = [v["acc_final_macro"] for v in runs.values()]
    write("meta_train_spread", ap, args, {"threads": args.threads, "runs": runs}, say.lines,
          (f"acc_final_macro of anml-seeded on {args.threads} threads, lowest", min(accs),
           "reported"))


if __name__ == "__main__":
    main()
