"""Reliability: what the harness leaves behind when it is killed, run twice at once, fed damaged
files, or run over a long stream. Every count of a problem is expected to be 0.

    python benchmarks/reliability.py [--kills-per-signal 20] [--seed 2024]

Runs the campaigns of tests/test_faults_slow.py (the code is tests/faultkit.py) and writes
benchmarks/results/reliability.{json,md}:

- kill campaigns: a `harness compare` of finetune, ncm and slda on 2 seeds, and a MAML
  meta-training that saves a partial checkpoint every step, each sent SIGKILL, SIGTERM and
  SIGINT after seeded random delays; after every kill the results folder and the cache are
  checked, and a last uninterrupted start must give the numbers (and checkpoints) of an
  uninterrupted reference run, bit for bit (time and memory metrics excluded);
- two compares into one folder and one cache at once;
- damaged files: result CSVs cut or shortened, checkpoints bit-flipped, truncated or with a
  hostile header, a pickle inside a run's .npz;
- peak memory of a 20,000- and a 100,000-sample stream.
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import faultkit as fk  # noqa: E402

from harness import checkpoint, results  # noqa: E402
from harness.errors import DataError  # noqa: E402
from harness.fileio import atomic_write_text, sha256_bytes  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
COUNTS = ["runs_lost", "runs_duplicated", "inconsistent_visible", "values_changed",
          "resumed_not_identical", "checkpoint_problems", "exit_problems", "stale_temps_left"]


def damaged_files(server: fk.ForkServer, work: Path) -> list[dict[str, Any]]:
    """Each damage once on real files; `silent` counts a damaged file read as valid."""
    out, cache = work / "out", work / "cache"
    rc = server.run(["compare", "--scenario", "synthetic-stream", "--learners", "ncm",
                     "--seeds", "0-4", "--no-tune", "--quiet", "--out", str(out),
                     "--cache-dir", str(cache), *fk.CHEAP], work / "damage.log")
    if rc != 0:
        raise RuntimeError(f"the damage fixture exited {rc}")
    runs = fk.run_csvs(out / "synthetic-stream")
    rows = []
    for path, (kind, damage) in zip(runs[:4], fk.CSV_DAMAGES.items(), strict=True):
        damage(path)
        reported = bool(results.verify_run(path))
        rows.append({"fault": f"result CSV: {kind.replace('_', ' ')}", "times": 1,
                     "reported": int(reported), "silent": int(not reported)})
    (ckpt,) = (cache / "checkpoints").glob("*.safetensors")
    good = ckpt.read_bytes()

    def refused() -> bool:
        try:
            checkpoint.load(ckpt)
        except DataError:
            return True
        return False

    def with_sum(data: bytes) -> None:
        ckpt.write_bytes(data)
        meta = json.loads(ckpt.with_suffix(".json").read_text())
        ckpt.with_suffix(".json").write_text(json.dumps({**meta, "sha256": sha256_bytes(data)}))

    damages = {
        "checkpoint: mantissa bits flipped": lambda: fk.flip_mantissa_bits(ckpt, every=7),
        "checkpoint: truncated": lambda: ckpt.write_bytes(good[:-100]),
        "checkpoint: header length 2^62 (checksum matching)":
            lambda: with_sum(struct.pack("<Q", 1 << 62) + b"{}"),
    }
    for name, damage in damages.items():
        ckpt.write_bytes(good)
        damage()
        ok = refused()
        rows.append({"fault": name, "times": 1, "reported": int(ok), "silent": int(not ok)})
    ckpt.write_bytes(good)
    # A pickle in a run's .npz, with a manifest that matches it.
    csv_path = runs[4]
    evil = np.empty(1, dtype=object)
    evil[0] = {"a": 1}
    buf = io.BytesIO()
    np.savez(buf, R=evil)
    csv_path.with_suffix(".npz").write_bytes(buf.getvalue())
    meta = json.loads(csv_path.with_suffix(".json").read_text())
    meta["files"]["npz"]["sha256"] = sha256_bytes(buf.getvalue())
    csv_path.with_suffix(".json").write_text(json.dumps(meta))
    try:
        results.load_arrays(csv_path)
        ok = False
    except DataError:
        ok = True
    rows.append({"fault": "run .npz: pickled object array (manifest matching)", "times": 1,
                 "reported": int(ok), "silent": int(not ok)})
    return rows


def campaign_row(res: fk.Outcome, per_signal: int) -> dict[str, Any]:
    row = {"target": res.target, "signals": {s: per_signal for s in fk.SIGNALS},
           "landed_while_running": dict(res.kills),
           "finished_before_the_signal": dict(res.finished_first),
           "rounds_completed": res.rounds_completed,
           "reference_s": res.reference_s, "seconds": res.seconds,
           "arrays_unreadable_after_kill": res.arrays_unreadable_after_kill}
    row.update({k: len(getattr(res, k)) for k in COUNTS})
    row["problems"] = res.problems()
    return row


def markdown(data: dict[str, Any]) -> str:
    lines = ["# reliability", "",
             "What the harness leaves behind when it is killed, run twice at once, fed damaged "
             "files or run over a long stream. Every problem count is expected to be 0.", "",
             "## Kill campaigns", "",
             "| target | SIGKILL | SIGTERM | SIGINT | finished first | runs lost | duplicated "
             "| inconsistent visible | numbers changed | resumed not bit-identical "
             "| checkpoint unloadable | wrong exit | stale temp files |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in data["kill_campaigns"]:
        sig = c["landed_while_running"]
        lines.append(
            f"| {c['target']} | {sig.get('SIGKILL', 0)} | {sig.get('SIGTERM', 0)} "
            f"| {sig.get('SIGINT', 0)} | {sum(c['finished_before_the_signal'].values())} "
            + "".join(f"| {c[k]} " for k in COUNTS) + "|")
    lines += ["", "Each start is a fork of one process that imported torch and the harness "
              "once, so it runs the code of `harness ...` after its imports and costs "
              "milliseconds to start. Signals are sent after a delay drawn uniformly from "
              "[0, t] (t: the reference run's seconds), seeded; 'finished first' counts starts "
              "that ended before their signal; once a start finishes, the cache is emptied so "
              "that later kills land in (meta-)training and checkpoint writes again. A kill "
              "that left a run's old CSV beside its new .npz "
              f"(arrays unreadable until the re-run, reported by `load_arrays`): "
              f"{sum(c['arrays_unreadable_after_kill'] for c in data['kill_campaigns'])} "
              "times.", "", "## Two compares into one folder at once", ""]
    cc = data["concurrent"]
    lines += [f"exit codes {cc['exit_codes']}; runs {cc['runs']} of {cc['expected_runs']}; "
              f"invalid {len(cc['invalid'])}, lost {len(cc['lost'])}, extra {len(cc['extra'])}"
              f", numbers changed {len(cc['changed'])}, stale temp files "
              f"{len(cc['stale_temps_left'])}.", "", "## Damaged files", "",
              "| fault | times | reported by name | read as valid |", "|---|---|---|---|"]
    lines += [f"| {d['fault']} | {d['times']} | {d['reported']} | {d['silent']} |"
              for d in data["damaged_files"]]
    m = data["memory"]
    lines += ["", "## Memory over a long stream", "",
              f"peak RSS {m['peak_rss_mb_20k']:.2f} MB (20,000 samples) and "
              f"{m['peak_rss_mb_100k']:.2f} MB (100,000): +{m['growth_mb']:.2f} MB, bound "
              f"{m['bound_mb']:.2f} MB (1.5 x {m['bytes_per_sample']} bytes per sample of "
              "inputs, labels and prequential log, + 1 MB).", "",
              "## Totals (all expected 0)", ""]
    lines += [f"- {k}: {v}" for k, v in data["totals"].items()]
    lines += ["", "## Reproduce", "", f"    {data['command']}", "", "## Provenance", ""]
    lines += [f"- {k}: `{v}`" for k, v in data["provenance"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills-per-signal", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with fk.ForkServer() as server:
            campaigns = []
            for i, target in enumerate((fk.COMPARE, fk.META)):
                (work / f"k{i}").mkdir()
                res = fk.campaign(server, target, work / f"k{i}", args.kills_per_signal,
                                  args.seed + i)
                campaigns.append(campaign_row(res, args.kills_per_signal))
                print(json.dumps(campaigns[-1]), flush=True)
            (work / "cc").mkdir()
            concurrent = fk.concurrent(server, work / "cc")
            (work / "dmg").mkdir()
            damaged = damaged_files(server, work / "dmg")
        small, _ = fk.peak_rss_of_stream(20_000, work)
        big, rate = fk.peak_rss_of_stream(100_000, work)
    bound = 1.5 * fk.log_bytes_per_sample() * 80_000 / 2**20 + 1.0
    memory = {"peak_rss_mb_20k": small, "peak_rss_mb_100k": big, "growth_mb": big - small,
              "bound_mb": bound, "bytes_per_sample": fk.log_bytes_per_sample(),
              "samples_per_s_100k": round(rate), "within_bound": big - small < bound}
    totals = {k: sum(c[k] for c in campaigns) for k in COUNTS}
    totals["concurrent_runs_lost_or_invalid"] = (len(concurrent["lost"])
                                                 + len(concurrent["invalid"])
                                                 + len(concurrent["changed"]))
    totals["damaged_files_read_as_valid"] = sum(d["silent"] for d in damaged)
    totals["memory_over_bound"] = int(not memory["within_bound"])
    prov = {**results.provenance("cpu"), "python": sys.version.split()[0],
            "torch_threads": torch.get_num_threads()}
    data = {"benchmark": "reliability", "arguments": vars(args),
            "command": shlex.join(["python", "benchmarks/reliability.py", *sys.argv[1:]]),
            "provenance": prov, "seconds": round(time.perf_counter() - t0, 1),
            "kill_campaigns": campaigns, "concurrent": concurrent, "damaged_files": damaged,
            "memory": memory, "totals": totals}
    text = json.dumps(data, indent=2, default=str)
    atomic_write_text(OUT / "reliability.json", text.replace(str(work), "<work>") + "\n")
    atomic_write_text(OUT / "reliability.md", markdown(data).replace(str(work), "<work>"))
    print(json.dumps(totals, indent=2))
    print(f"wrote {OUT / 'reliability.json'} and {OUT / 'reliability.md'}")


if __name__ == "__main__":
    main()
