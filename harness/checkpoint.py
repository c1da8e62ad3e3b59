"""Safetensors checkpoints with a JSON of their config and a checksum (docs/design.md D4, D9).

Loading never unpickles: tensors come from safetensors, metadata from JSON. The JSON, written
last, holds the SHA-256 of the tensor file; `load` verifies it, so a truncated or bit-flipped
checkpoint is reported, never used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from harness.errors import DataError
from harness.fileio import atomic_write_bytes, sha256_bytes

__all__ = ["atomic_write_bytes", "exists", "load", "save"]


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save tensors to `path` (.safetensors) and `meta` plus their checksum to the .json beside
    it, each atomically; the JSON last, so a checkpoint counts as present only when both exist.
    """
    data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    atomic_write_bytes(path, data)
    meta = {**meta, "sha256": sha256_bytes(data)}
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=2, default=str).encode())


def exists(path: Path) -> bool:
    return path.exists() and path.with_suffix(".json").exists()


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint written by `save`; a corrupt or unverifiable one is a
    DataError naming the fix."""
    fix = f"delete {path.name} and its .json in {path.parent} to retrain"
    try:
        data = path.read_bytes()
        meta = json.loads(path.with_suffix(".json").read_text())
        if not isinstance(meta, dict):
            raise ValueError("its .json is not an object")
        if "sha256" not in meta:
            raise ValueError("it has no checksum")
        if sha256_bytes(data) != meta["sha256"]:
            raise ValueError("its tensors do not match their checksum (corrupt)")
        tensors = st_load(data)
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"checkpoint {path.name} is unreadable ({e}); {fix}") from None
    return tensors, meta

