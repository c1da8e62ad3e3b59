"""Tidy run results with provenance, written so that a reader sees all of a run or none of it
(docs/design.md D6).

A run writes three files under `<out>/<scenario>/`: `<run_id>.json` (the full config and a
manifest: the SHA-256 of the CSV and the NPZ and the CSV's row count), `<run_id>.npz` (raw arrays)
and, last, `<run_id>.csv` (one row per metric), which is what readers look for. A run is valid
only when its JSON exists and its manifest matches the CSV (and the NPZ, when its arrays are
read): a truncated or edited CSV, a bit-flipped NPZ or a CSV without its JSON is reported by
name and left out, never averaged (`verify_run`).

Three files cannot be replaced at once, so the manifest also keeps the checksums of the run
files it replaces ("previous"): a process killed between the writes leaves the old run, still
valid, or (for a new run) no CSV at all; re-running a run never makes it vanish or turn invalid.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import platform
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import harness
from harness.fileio import atomic_write_bytes, exclusive, sha256_bytes, sha256_file

SCHEMA = 2
"""Version of the run files' layout; 2 added the manifest, `status`, `representation`,
`meta_seed` and `source_diff`."""

COLUMNS = [
    "run_id", "scenario", "scenario_version", "stream_hash", "learner", "config_hash", "preset",
    "seed", "metric", "value", "n", "harness_version", "git_sha", "torch_version", "device",
    "started_at", "wall_s", "status", "representation", "meta_seed", "source_diff",
]
"""Columns of every run CSV, in order (the leaderboard reads the same list)."""

REQUIRED_COLUMNS = tuple(COLUMNS[: COLUMNS.index("wall_s") + 1])
"""Columns every run CSV has; those after `wall_s` came with schema 2 and may be absent."""
NUMERIC_COLUMNS = ("value", "seed", "n", "wall_s")
"""The numeric columns; every other column is text, even when it looks like a number."""
PROVENANCE_COLUMNS = ("harness_version", "git_sha", "torch_version", "device")
"""What made a row: the harness, its commit, torch and the device."""

STATUSES = ("ok", "partial", "failed", "diverged", "timed_out")
"""ok: finished; partial: finished on a meta-training stopped early (its metrics are real but
belong to another, shorter recipe); failed / diverged / timed_out: no metrics."""

SOURCE_PATHS = ("harness", "scenarios", "baselines", "pyproject.toml")
"""What counts as the harness's source for `git_sha`'s '+dirty' (results and docs do not)."""


WRITE_LOCK = "write.lock"
"""The lock file (in a results folder's `.locks/`, beside the sweeps' per-run-id locks) that
lets one `write_run` at a time into the folder."""


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                          check=True).stdout


@functools.lru_cache(maxsize=1)
def source_state() -> tuple[str, str]:
    """(git_sha, source_diff): the commit of the harness source, with '+dirty' when a source
    file (`SOURCE_PATHS`, tracked or new) differs from it, and then a hash of that difference;
    ('unknown', '') outside a git checkout."""
    root = Path(harness.__file__).resolve().parent.parent
    try:
        sha = _git(root, "rev-parse", "HEAD").strip()
        status = _git(root, "status", "--porcelain", "--", *SOURCE_PATHS)
        if not status.strip():
            return sha, ""
        h = hashlib.sha256(_git(root, "diff", "HEAD", "--", *SOURCE_PATHS).encode())
        untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--",
                         *SOURCE_PATHS).split()
        for name in sorted(untracked):
            h.update(name.encode())
            h.update((root / name).read_bytes())
        return sha + "+dirty", h.hexdigest()[:12]
    except (OSError, subprocess.SubprocessError):
        return "unknown", ""


def provenance(device: str) -> dict[str, str]:
    """Versions and machine facts recorded with every row."""
    dev = device
    if device.startswith("cuda") and torch.cuda.is_available():
        # TF32 convolutions (on by default) round to 10 mantissa bits; say which was used.
        tf32 = "on" if torch.backends.cudnn.allow_tf32 else "off"
        dev = f"{device}:{torch.cuda.get_device_name()} (tf32 conv {tf32})"
    elif device == "cpu":
        dev = f"cpu:{platform.machine()}x{torch.get_num_threads()}"
    sha, diff = source_state()
    return {"harness_version": harness.__version__, "git_sha": sha, "source_diff": diff,
            "torch_version": torch.__version__, "device": dev}


PROVENANCE_KEYS = ("harness_version", "torch_version", "device")
"""What a replaced run is compared on: a re-run made elsewhere is announced (`write_run`)."""


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
) -> tuple[Path, str]:
    """Write one run's JSON with the manifest, its NPZ and, last, its CSV; return the CSV path
    and a note when this replaces a run of the same id made with other provenance (else '').

    `base` holds the columns shared by all rows; `metrics` maps name -> (value, n); `extra`
    adds provenance columns (e.g. lr, lr_selected_on, variant) to every row.

    One writer at a time per results folder (a lock in its `.locks/`): two processes that
    finish the same run together (two compares into one folder) would otherwise interleave
    their three files and leave one's JSON beside the other's CSV, which matches neither.
    """
    folder = out_dir / safe_id(scenario)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    npz = buf.getvalue()
    fields = COLUMNS + [k for k in extra if k not in COLUMNS]
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for name, (value, n) in metrics.items():
        w.writerow({**base, **extra, "run_id": run_id, "metric": name,
                    "value": repr(float(value)), "n": int(n)})
    data = text.getvalue().encode()
    manifest: dict[str, Any] = {"schema": SCHEMA, "files": {
        "npz": {"sha256": sha256_bytes(npz)},
        "csv": {"sha256": sha256_bytes(data), "rows": len(metrics)},
    }}
    path = folder / f"{run_id}.csv"
    with exclusive(folder / ".locks" / WRITE_LOCK):
        note = _replaced_note(folder / f"{run_id}.json", base)
        why, files = _check(path, check_npz=False)
        if not why:
            manifest["previous"] = files  # the run on disk stays valid until its CSV is replaced
        atomic_write_bytes(folder / f"{run_id}.json",
                           json.dumps({**config, **manifest}, indent=2, default=str).encode())
        atomic_write_bytes(folder / f"{run_id}.npz", npz)
        atomic_write_bytes(path, data)
    return path, note


def _replaced_note(json_path: Path, base: dict[str, Any]) -> str:
    try:
        old = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(old, dict):
        return ""
    diff = [f"{k} {old.get(k)!r} -> {base.get(k)!r}" for k in PROVENANCE_KEYS
            if str(old.get(k)) != str(base.get(k))]
    return (f"replaced run {json_path.stem} made with other provenance ({'; '.join(diff)})"
            if diff else "")


def verify_run(csv_path: Path, check_npz: bool = False) -> str:
    """'' when the run's files agree with the manifest in its JSON, else why they do not."""
    return _check(csv_path, check_npz)[0]


def _check(csv_path: Path, check_npz: bool) -> tuple[str, dict[str, Any]]:
    """(why the run's files are not valid, or ''; the manifest entry they match)."""
    try:
        # The CSV before the JSON: the JSON is written first, so it is as new as the CSV or
        # newer (and then its "previous" describes the CSV).
        data = csv_path.read_bytes()
    except OSError as e:
        return f"the CSV is unreadable ({type(e).__name__})", {}
    json_path = csv_path.with_suffix(".json")
    try:
        meta = json.loads(json_path.read_text())
    except FileNotFoundError:
        why = "its .json (with the manifest) is missing: an interrupted write or a foreign file"
        return why, {}
    except (OSError, ValueError) as e:
        return f"its .json is unreadable ({type(e).__name__})", {}
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, dict) or "csv" not in files:
        return "its .json has no manifest (written by harness < 0.2); re-run it", {}
    sha = sha256_bytes(data)
    match = [g for g in (files, meta.get("previous")) if isinstance(g, dict)
             and isinstance(g.get("csv"), dict) and g["csv"].get("sha256") == sha]
    if not match:
        rows = max(data.count(b"\n") - 1, 0)
        return (f"the CSV does not match its manifest ({rows} data lines, "
                f"{files['csv'].get('rows')} written): truncated, edited or half-replaced"), {}
    if check_npz:
        npz = csv_path.with_suffix(".npz")
        want = match[0].get("npz")
        if not (npz.exists() and isinstance(want, dict)
                and sha256_file(npz) == want.get("sha256")):
            return ("the .npz does not match its manifest (missing, corrupt or from another "
                    "run)"), match[0]
    return "", match[0]


def load_arrays(csv_path: Path) -> dict[str, np.ndarray]:
    """The raw arrays of a verified run (never unpickled); DataError when they do not match."""
    from harness.errors import DataError

    why = verify_run(csv_path, check_npz=True)
    if why:
        raise DataError(f"run {csv_path}: {why}")
    try:
        with np.load(csv_path.with_suffix(".npz"), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        # e.g. an object array, which only unpickling could read: refused, never unpickled
        raise DataError(f"run {csv_path}: its .npz cannot be read without unpickling or is "
                        f"malformed ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                        ) from None
