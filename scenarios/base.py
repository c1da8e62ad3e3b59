"""What every scenario family builds: a plain, re-iterable scenario object (docs/design.md D2).

A scenario family is a dataclass config (a `ScenarioConfig`) with
`build(seed, data_dir, cache_dir) -> BuiltScenario` (or a subclass with extra published
attributes). Everything in it is a deterministic function of the config and the seed; its
`stream_hash` lets results prove that two learners saw the same data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from harness.config import check_choice, check_range, to_dict
from harness.protocol import Experience, LabeledPool, ScenarioSpec, TaskSampler, experiences_hash

T = TypeVar("T")


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


Built = TypeVar("Built", bound=BuiltScenario)


def bounded(default: T, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None) -> T:
    """A config field whose value a `ScenarioConfig` checks with `check_range(ge=..., ...)`."""
    bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    return field(default=default,
                 metadata={"range": {k: v for k, v in bounds.items() if v is not None}})


def one_of(default: T, choices: Iterable[T]) -> T:
    """A config field whose value a `ScenarioConfig` checks with `check_choice(choices)`."""
    return field(default=default, metadata={"choices": tuple(choices)})


@dataclass(frozen=True)
class ScenarioConfig:
    """Base of the scenario configs: the checks its fields declare, and the built scenario's
    identity.

    A subclass sets `ID` and `VERSION`, declares a field with `bounded` or `one_of` where a
    fixed range or set of values applies (checked in field order when the config is made; a
    check that involves several fields goes in the subclass's `__post_init__`, after
    `super().__post_init__()`), and makes its scenario with `built`.
    """

    ID: ClassVar[str]
    """Scenario id, e.g. 'omniglot-stream'."""
    VERSION: ClassVar[int]
    """Bumped whenever a split, an order or the preprocessing changes."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if "range" in f.metadata:
                check_range(self, f.name, **f.metadata["range"])
            if "choices" in f.metadata:
                check_choice(self, f.name, f.metadata["choices"])

    def built(self, kind: type[Built], seed: int, extra_params: Mapping[str, Any] | None = None,
              **attributes: Any) -> Built:
        """`kind(**attributes)` with this config's id and version, and as `params` the config
        as a dict plus the seed (and `extra_params`, e.g. a data fingerprint)."""
        params = {**to_dict(self), "seed": int(seed), **(extra_params or {})}
        return kind(id=self.ID, version=self.VERSION, params=params, **attributes)


def stream_specs(input_shape: tuple[int, ...], n_classes: int,
                 n_val_classes: int) -> tuple[ScenarioSpec, ScenarioSpec | None]:
    """Spec of a classification stream, and of its validation stream when that one has another
    number of classes (None otherwise: it shares the first)."""
    spec = ScenarioSpec(input_shape=input_shape, n_outputs=n_classes)
    if n_val_classes == n_classes:
        return spec, None
    return spec, ScenarioSpec(input_shape=input_shape, n_outputs=n_val_classes)


def class_experiences(
    x: Tensor, x_test: Tensor, classes_per_exp: int, batch_size: int, prefix: str,
    shuffle: Callable[[int], Tensor] | None = None,
) -> list[Experience]:
    """Class-incremental experiences of `classes_per_exp` consecutive classes (the last may
    have fewer).

    `x` [n, per_class, ...] and `x_test` [n, per_test, ...] hold the samples of class k (its
    label) in row k. Training samples stay in class order unless `shuffle(m)`, called once per
    experience in stream order, gives a permutation of its m samples.
    """
    n, shape = len(x), x.shape[2:]
    labels = torch.arange(n)
    exps = []
    for i, cls in enumerate(chunks(n, classes_per_exp)):
        c = slice(cls.start, cls.stop)
        xe, ye = x[c].reshape(-1, *shape), labels[c].repeat_interleave(x.shape[1])
        if shuffle is not None:
            order = shuffle(len(xe))
            xe, ye = xe[order], ye[order]
        exps.append(Experience(
            x=xe.contiguous(),
            y=ye,
            x_test=x_test[c].reshape(-1, *shape).contiguous(),
            y_test=labels[c].repeat_interleave(x_test.shape[1]),
            batch_size=batch_size,
            task_id=i,
            classes=tuple(cls),
            name=f"{prefix}{class_range_name(cls)}",
        ))
    return exps


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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

