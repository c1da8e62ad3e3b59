"""What every scenario family builds: a plain, re-iterable scenario object (docs/design.md D2).

A scenario family is a dataclass config with `build(seed, data_dir, cache_dir) -> BuiltScenario` (or a
subclass with extra published attributes). Everything in it is a deterministic function of the
config and the seed; its `stream_hash` lets results prove that two learners saw the same data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from harness.protocol import Experience, LabeledPool, ScenarioSpec, TaskSampler, experiences_hash


@dataclass(frozen=True, eq=False)
class BuiltScenario:
    """A built scenario: the attributes of the `Scenario` protocol plus `val_spec`."""

    id: str
    """Scenario id, e.g. 'omniglot-stream'."""
    version: int
    """Bumped whenever a split, an order or the preprocessing changes."""
    spec: ScenarioSpec
    """What a learner may know about the scored stream."""
    experiences: list[Experience]
    """The scored experiences, in stream order."""
    val_experiences: list[Experience]
    """Experiences for hyper-parameter selection, disjoint from the scored ones."""
    meta_train: LabeledPool | TaskSampler | None
    """Meta-training data disjoint from evaluation, or None."""
    params: dict[str, Any]
    """The config as a dict plus the seed (recorded with every result)."""
    val_spec: ScenarioSpec | None = None
    """Spec of the validation stream when it differs from `spec` (e.g. fewer classes)."""

    @cached_property
    def stream_hash(self) -> str:
        """'<id>-v<version>-<hash of the scored and validation streams and test sets>'."""
        h = experiences_hash([*self.experiences, *self.val_experiences])
        return f"{self.id}-v{self.version}-{h}"


def derive_seed(seed: int, tag: str) -> int:
    """A seed for a named sub-stream (e.g. 'val'), independent of how the main stream is drawn."""
    digest = hashlib.sha256(f"{int(seed)}/{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed` (never the global RNG)."""
    return torch.Generator().manual_seed(int(seed))


def chunks(n: int, size: int) -> list[range]:
    """Consecutive ranges of `size` covering 0..n-1; the last one may be smaller."""
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def class_range_name(classes: range | tuple[int, ...]) -> str:
    """'classes 0-9' (or 'class 3') for an experience's name."""
    c = list(classes)
    return f"class {c[0]}" if len(c) == 1 else f"classes {c[0]}-{c[-1]}"

