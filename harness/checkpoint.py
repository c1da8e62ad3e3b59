"""Safetensors checkpoints with a JSON of their config (DESIGN.md D4, D9).

Loading never unpickles: tensors come from safetensors, metadata from JSON.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from harness.errors import DataError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save tensors to `path` (.safetensors) and `meta` to the .json beside it, atomically.

    The JSON is written last: a checkpoint counts as present only when both files exist.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=2, default=str).encode())


def exists(path: Path) -> bool:
    return path.exists() and path.with_suffix(".json").exists()


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint written by `save`; a corrupt file is a DataError naming the fix."""
    try:
        tensors = load_file(str(path))
        meta = json.loads(path.with_suffix(".json").read_text())
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(
            f"checkpoint {path} is unreadable ({e}); delete it and its .json to retrain"
        ) from None
    return tensors, meta
