"""Seeds of the baselines: independent sub-seeds of one seed, and a seeded global RNG block."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def sub_seed(seed: int, tag: str) -> int:
    """An independent seed for one use (`tag`) of a learner's seed (a run seed or a meta-seed).
    Not `scenarios.base.derive_seed`, which draws other values for the scenarios' streams."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{tag}".encode()).digest()[:7], "little")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with the global CPU RNG seeded, restoring the caller's RNG afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
