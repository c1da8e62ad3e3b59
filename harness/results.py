"""Tidy run results with provenance, written atomically (DESIGN.md D6).

A run writes, in this order: `<run_id>.npz` (raw arrays), `<run_id>.json` (full config) and last
`<run_id>.csv` (one row per metric). The CSV's presence marks a finished run, so a crashed or
killed run never leaves a half row, and a resumed sweep can skip finished runs.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

import harness
from harness.checkpoint import atomic_write_bytes

COLUMNS = [
    "run_id", "scenario", "scenario_version", "stream_hash", "learner", "config_hash", "preset",
    "seed", "metric", "value", "n", "harness_version", "git_sha", "torch_version", "device",
    "started_at", "wall_s",
]


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    """The commit of the harness source tree (with '+dirty' if modified), or 'unknown'."""
    root = Path(harness.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5).stdout
        return sha + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(device: str) -> dict[str, str]:
    """Versions and machine facts recorded with every row."""
    dev = device
    if device.startswith("cuda") and torch.cuda.is_available():
        # TF32 convolutions (on by default) round to 10 mantissa bits; say which was used.
        tf32 = "on" if torch.backends.cudnn.allow_tf32 else "off"
        dev = f"{device}:{torch.cuda.get_device_name()} (tf32 conv {tf32})"
    elif device == "cpu":
        dev = f"cpu:{platform.machine()}x{torch.get_num_threads()}"
    return {"harness_version": harness.__version__, "git_sha": git_sha(),
            "torch_version": torch.__version__, "device": dev}


def safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)


def write_run(
    out_dir: Path,
    scenario: str,
    run_id: str,
    base: dict[str, Any],
    metrics: dict[str, tuple[float, int]],
    extra: dict[str, Any],
    config: dict[str, Any],
    arrays: dict[str, np.ndarray],
) -> Path:
    """Write one run's CSV, JSON and NPZ under `out_dir/scenario/`; return the CSV path.

    `base` holds the D6 columns shared by all rows; `metrics` maps name -> (value, n);
    `extra` adds provenance columns (e.g. lr, lr_selected_on, variant) to every row.
    """
    folder = out_dir / safe_id(scenario)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(folder / f"{run_id}.npz", buf.getvalue())
    atomic_write_bytes(folder / f"{run_id}.json",
                       json.dumps(config, indent=2, default=str).encode())
    fields = COLUMNS + [k for k in extra if k not in COLUMNS]
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for name, (value, n) in metrics.items():
        w.writerow({**base, **extra, "run_id": run_id, "metric": name,
                    "value": repr(float(value)), "n": int(n)})
    path = folder / f"{run_id}.csv"
    atomic_write_bytes(path, text.getvalue().encode())
    return path
