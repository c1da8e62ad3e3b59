"""Reading run files: the row schema of a run CSV and `load_runs` (docs/design.md D6).

The columns come from the one definition of a run's rows, `harness.results.COLUMNS`. Only
runs whose files agree with the manifest in their ``.json`` are read
(`harness.results.verify_run`); any other run file is reported (`ResultFileWarning`) and left
out, never averaged.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.results import (
    COLUMNS,
    NUMERIC_COLUMNS,
    PROVENANCE_COLUMNS,
    REQUIRED_COLUMNS,
    STATUSES,
    verify_run,
)

_NUMERIC_COLUMNS = NUMERIC_COLUMNS
# Identifier columns are text even when they look like numbers ("0123", "1e5" as a hash).
_TEXT_COLUMNS = tuple(c for c in COLUMNS if c not in NUMERIC_COLUMNS)
_PROVENANCE = PROVENANCE_COLUMNS
_LEADERBOARD_FILES = frozenset({"leaderboard.csv", "leaderboard.md", "oracle_drop.csv"})


class ResultFileWarning(UserWarning):
    """A run file that fails its checks (`load_runs`): it is left out of every table."""


class _Unreadable(Exception):
    """A run CSV that passes its manifest but not the checks on its content."""


def load_runs(path: Path, problems: list[tuple[Path, str]] | None = None) -> pd.DataFrame:
    """Read every valid run CSV under a folder (recursively) into one tidy frame.

    ``leaderboard.csv`` / ``leaderboard.md`` / ``oracle_drop.csv``, hidden files and the
    ``.json`` / ``.npz`` files beside each run are ignored. Each run is checked first
    (`harness.results.verify_run`): a run without its JSON or manifest (cut short, or written
    by harness < 0.2), or whose CSV does not match the manifest (truncated, edited or
    half-replaced), or whose CSV cannot be read as a run (unparsable, required columns missing,
    non-numeric numbers, unknown status) is left out with a `ResultFileWarning` naming the file
    and the reason; the others are still read. Identifier columns are read as text,
    ``value``, ``seed``, ``n`` and ``wall_s`` as numbers; extra columns are kept as they are.

    Args:
        path: a results folder, e.g. ``results/`` or ``results/omniglot-stream/``.
        problems: where given, each left-out file is appended as ``(path, reason)``.

    Returns:
        The rows of all valid run CSVs, concatenated (files in sorted path order).

    Raises:
        HarnessError: the folder does not exist or holds no run CSV, no valid one (the message
            gives the first reason), or only valid ones without rows.
    """
    folder = Path(path)
    frames: list[pd.DataFrame] = []
    left_out: list[tuple[Path, str]] = []
    for file in _run_files(folder):
        frame, reason = _read_run(file)
        if frame is not None:
            frames.append(frame)
            continue
        left_out.append((file, reason))
        warnings.warn(ResultFileWarning(f"{file}: {reason}; left out"), stacklevel=2)
    if problems is not None:
        problems.extend(left_out)
    if not frames:
        first, why = left_out[0]
        raise HarnessError(
            f"no valid run file under {folder} ({len(left_out)} left out); first: {first}: {why}"
        )
    runs = pd.concat(frames, ignore_index=True, sort=False)
    if runs.empty:
        raise HarnessError(f"the run CSV files under {folder} hold no rows (only headers)")
    return runs


def _run_files(folder: Path) -> list[Path]:
    """The run CSVs under `folder`, sorted: not the leaderboard files nor hidden ones."""
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise HarnessError(
            f"results folder {folder} {what}; pass the folder holding <scenario>/<run_id>.csv"
        )
    files = sorted(
        p
        for p in folder.rglob("*.csv")
        if p.is_file()
        and p.name not in _LEADERBOARD_FILES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise HarnessError(
            f"no run CSV files under {folder}; run `harness run` first or pass the folder "
            "holding <scenario>/<run_id>.csv"
        )
    return files


def _read_run(file: Path) -> tuple[pd.DataFrame | None, str]:
    """One verified run's rows and '', or None and why the run is left out."""
    try:
        reason = verify_run(file)
    except (AttributeError, TypeError, KeyError, ValueError) as e:
        # A JSON whose manifest has the wrong shape: reported like any other bad file.
        reason = f"its .json holds a malformed manifest ({type(e).__name__})"
    if reason:
        return None, reason
    try:
        return _read_run_csv(file), ""
    except _Unreadable as e:
        return None, str(e)


def _read_run_csv(file: Path) -> pd.DataFrame:
    """Read and check one run CSV; `_Unreadable` says why it is not a run."""
    try:
        df = pd.read_csv(file, dtype=dict.fromkeys(_TEXT_COLUMNS, str))
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _Unreadable(f"cannot be read as CSV: {reason}") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise _Unreadable(
            f"lacks required column(s): {', '.join(missing)} "
            f"(a run CSV needs: {', '.join(REQUIRED_COLUMNS)})"
        )
    for col in _NUMERIC_COLUMNS:
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() & df[col].notna()
        if bad.any():
            raise _Unreadable(f"column {col!r} holds non-numeric {df[col][bad].iloc[0]!r}")
        df[col] = num
    seed = df["seed"]
    if seed.isna().any() or (seed != seed.round()).any():
        raise _Unreadable("column 'seed' must hold integers in every row")
    df["seed"] = seed.astype("int64")
    if "status" in df.columns:
        unknown = sorted(set(df["status"].dropna()) - set(STATUSES))
        if unknown:
            raise _Unreadable(
                f"column 'status' holds unknown {unknown[0]!r} (known: {', '.join(STATUSES)})"
            )
    return df
