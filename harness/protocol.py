"""The contract between learners, scenarios and the runner (docs/design.md D2).

Nothing here runs an experiment: these are the shapes every part agrees on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

TaskType = Literal["classification", "regression"]


@dataclass(frozen=True)
class ScenarioSpec:
    """What a learner may know about a scenario before it sees any data."""

    input_shape: tuple[int, ...]
    """Shape of one input, without the batch dimension (e.g. (1, 28, 28))."""
    n_outputs: int
    """Number of classes (classification) or output dimension (regression)."""
    task: TaskType = "classification"
    """'classification' (predict returns logits [B, C]) or 'regression' (outputs [B, D])."""
    task_ids: bool = False
    """Whether the scenario grants task ids to the learner (never, unless declared here)."""
    episodic: bool = False
    """Episodic (few-shot) scenario: each experience is one episode, learner reset in between."""
    persistence: tuple[int, ...] = ()
    """Regression forecasting: for each output dim, the index into the flattened input whose
    value is the persistence forecast ("no change": the current frame, the last value of a
    window); () when the input holds none (then persistence is the last observed target)."""
    seasonal: tuple[int, ...] = ()
    """Like `persistence`, for the seasonal-naive forecast (the value one season back); ()
    when the scenario declares no season."""
    output_names: tuple[str, ...] = ()
    """Names of the output dims when each is reported on its own (e.g. ('dx', 'dy', 'zoom'))."""


@dataclass(frozen=True, eq=False)
class Experience:
    """One experience: a training stream (in order) and a held-out test set.

    The stream is plain tensors; iterating yields `(x, y)` batches of `batch_size` in the
    stored order. Iterating twice gives the same batches (re-iterable, not an iterator).
    """

    x: Tensor
    y: Tensor
    x_test: Tensor
    y_test: Tensor
    batch_size: int = 1
    task_id: int = 0
    classes: tuple[int, ...] = ()
    """Class labels present in this experience (classification); () otherwise."""
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or len(self.x_test) != len(self.y_test):
            raise ValueError(f"experience {self.name!r}: inputs and targets differ in length")
        if self.batch_size < 1:
            raise ValueError(f"experience {self.name!r}: batch_size must be >= 1")

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(0, len(self.x), self.batch_size):
            yield self.x[i : i + self.batch_size], self.y[i : i + self.batch_size]

    def __len__(self) -> int:
        """Number of batches in the training stream."""
        return -(-len(self.x) // self.batch_size)

    @property
    def n_train(self) -> int:
        return len(self.x)

    @property
    def n_test(self) -> int:
        return len(self.x_test)


@dataclass(frozen=True, eq=False)
class LabeledPool:
    """Labelled meta-training data (classes disjoint from evaluation) with sampling helpers.

    `x[i]` has label `y[i]` in `0..n_classes-1`. All sampling takes an explicit generator so
    meta-training is reproducible from the seed.
    """

    x: Tensor
    y: Tensor
    n_classes: int
    name: str = ""
    _index: list[Tensor] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"pool {self.name!r}: inputs and labels differ in length")
        order = torch.argsort(self.y, stable=True)
        counts = torch.bincount(self.y, minlength=self.n_classes).tolist()
        self._index.extend(torch.split(order, counts))

    def class_indices(self, c: int) -> Tensor:
        """Indices of all samples of class `c`."""
        return self._index[c]

    def sample_classes(self, k: int, generator: torch.Generator) -> Tensor:
        """`k` distinct classes, uniformly."""
        return torch.randperm(self.n_classes, generator=generator)[:k]

    def sample_from_class(self, c: int, n: int, generator: torch.Generator) -> Tensor:
        """Indices of `n` distinct samples of class `c` (fewer if the class is smaller)."""
        idx = self._index[c]
        return idx[torch.randperm(len(idx), generator=generator)[:n]]

    def sample_random(self, n: int, generator: torch.Generator) -> Tensor:
        """Indices of `n` samples drawn uniformly without replacement from the whole pool."""
        return torch.randperm(len(self.y), generator=generator)[:n]


@runtime_checkable
class TaskSampler(Protocol):
    """Meta-training tasks for scenarios whose tasks are generated (e.g. sine functions).

    Classification scenarios expose a `LabeledPool` instead; a meta-learner declares which it
    needs. `sample(generator)` returns one task as a list of experiences.
    """

    def sample(self, generator: torch.Generator) -> list[Experience]: ...


@dataclass(frozen=True)
class Budget:
    """How much meta-training a learner may spend (steps and/or seconds; 0 = unlimited)."""

    steps: int = 0
    seconds: float = 0.0


@runtime_checkable
class Learner(Protocol):
    """An online learner. The runner calls `predict(x)` then `observe(x, y)` for every batch.

    Contract:
    - `predict(x)` returns logits `[B, n_outputs]` for classification or outputs `[B, D]` for
      regression. It must not learn from `x`.
    - `observe(x, y)` learns from one labelled batch that was just predicted. It never sees
      test data, and never task ids unless the scenario's spec grants them.
    Optional capabilities (meta-training, reset, state_dict, set_task, ...) are the typed
    protocols of `harness.capabilities`, checked with isinstance (docs/design.md D2).
    """

    def predict(self, x: Tensor) -> Tensor: ...

    def observe(self, x: Tensor, y: Tensor) -> None: ...


@runtime_checkable
class Scenario(Protocol):
    """A plain, re-iterable benchmark stream.

    Attributes:
        id: versioned id, e.g. 'omniglot-stream'.
        version: bumped whenever a split, order or preprocessing changes.
        spec: what the learner may know.
        experiences: the scored experiences, in order.
        val_experiences: experiences for hyper-parameter selection, disjoint from the scored.
        meta_train: a LabeledPool or TaskSampler over data disjoint from evaluation, or None.
        params: the scenario's parameters (recorded with every result).
    """

    id: str
    version: int
    spec: ScenarioSpec
    experiences: Sequence[Experience]
    val_experiences: Sequence[Experience]
    meta_train: LabeledPool | TaskSampler | None
    params: dict[str, Any]

    @property
    def stream_hash(self) -> str: ...


def tensor_digest(*tensors: Tensor) -> str:
    """A stable sha256 over tensors' dtype, shape and bytes (CPU, contiguous)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def experiences_hash(experiences: Sequence[Experience]) -> str:
    """Hash of the exact streams and test sets, so identical streams can be verified."""
    h = hashlib.sha256()
    for e in experiences:
        h.update(tensor_digest(e.x, e.y, e.x_test, e.y_test).encode())
        h.update(f"{e.batch_size}/{e.task_id}".encode())
    return h.hexdigest()[:16]
