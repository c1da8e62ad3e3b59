"""Safetensors checkpoints with a JSON of their config and a checksum (docs/design.md D4, D9).

Loading never unpickles: tensors come from safetensors, metadata from JSON. The JSON holds the
SHA-256 of the tensor file; `load` verifies it, so a truncated or bit-flipped checkpoint is
reported, never used.

Two files cannot be replaced at once, so the JSON is written first and also keeps the
checksum and metadata of the tensors it replaces ("previous"): a process killed between the
two writes leaves the old tensors, which still load, with their own metadata (a partial
checkpoint saved every step would otherwise be left unloadable by an unlucky kill). A new
checkpoint counts as present only when both files exist.
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
    it, each atomically: the JSON first, naming the tensors now on disk as "previous"."""
    data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    meta = {**meta, "sha256": sha256_bytes(data)}
    try:
        meta["previous"] = _verified(path)[1]
    except (OSError, ValueError):
        pass  # nothing loadable there now
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=2, default=str).encode())
    atomic_write_bytes(path, data)


def exists(path: Path) -> bool:
    return path.exists() and path.with_suffix(".json").exists()


def _verified(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The tensor file's bytes and the metadata whose checksum they match; ValueError if none."""
    # The tensors before the JSON: the JSON is written first, so it is as new as the tensors
    # or one save newer (and then its "previous" describes them).
    data = path.read_bytes()
    meta = json.loads(path.with_suffix(".json").read_text())
    if not isinstance(meta, dict):
        raise ValueError("its .json is not an object")
    if "sha256" not in meta:
        raise ValueError("it has no checksum")
    sha = sha256_bytes(data)
    previous = meta.pop("previous", None)
    if sha == meta["sha256"]:
        return data, meta
    if isinstance(previous, dict) and previous.get("sha256") == sha:
        return data, previous  # a save cut short after its JSON: the last complete one
    raise ValueError("its tensors do not match their checksum (corrupt)")


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint written by `save`; a corrupt or unverifiable one is a
    DataError naming the fix."""
    fix = f"delete {path.name} and its .json in {path.parent} to retrain"
    try:
        data, meta = _verified(path)
        tensors = st_load(data)
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"checkpoint {path.name} is unreadable ({e}); {fix}") from None
    return tensors, meta
