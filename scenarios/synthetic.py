"""`synthetic-stream`: a tiny class-incremental Gaussian stream for tests and smoke runs.

Each class has a prototype image drawn once from N(0, 1) with a FIXED seed, so class k looks
the same for every run seed; a sample is `prototype + noise * N(0, 1)`. The run seed changes
the sample noise and the order of the samples within each experience. Three disjoint sets of
prototypes are used: the scored classes, 4 validation classes and `meta_train_classes`
meta-training classes (whose samples are fixed too, so one meta-trained checkpoint serves all
seeds). Built in milliseconds; a linear model learns it easily.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from harness.config import check_range, to_dict
from harness.protocol import Experience, LabeledPool, ScenarioSpec
from scenarios.base import BuiltScenario, chunks, class_range_name

PROTOTYPE_SEED = 20240601
"""Fixed seed of the class prototypes (part of the scenario version, not of the run seed)."""
N_VAL_CLASSES = 4
META_TRAIN_PER_CLASS = 20
_ROLES = {"scored": 0, "val": 1, "meta": 2}


def prototypes(role: str, n: int, shape: tuple[int, ...]) -> Tensor:
    """The first `n` prototypes of a role ('scored', 'val', 'meta'), float32 [n, *shape].

    Prototype k depends only on (role, k, shape), not on `n` or on the run seed.
    """
    out = [np.random.default_rng([PROTOTYPE_SEED, _ROLES[role], k]).standard_normal(shape)
           for k in range(n)]
    return torch.from_numpy(np.stack(out) if out else np.zeros((0, *shape))).to(torch.float32)


def _entropy(seed: int) -> int:
    """A run seed as non-negative entropy for numpy's SeedSequence (negative seeds allowed)."""
    return int(seed) % (1 << 64)


def _samples(protos: Tensor, per_class: int, noise: float, rng: np.random.Generator) -> Tensor:
    """[n, per_class, *shape]: each prototype plus Gaussian noise."""
    eps = rng.standard_normal((len(protos), per_class, *protos.shape[1:]), dtype=np.float32)
    return protos[:, None] + noise * torch.from_numpy(eps)


@dataclass(frozen=True)
class SyntheticStreamConfig:
    """Tiny class-incremental stream of noisy Gaussian prototypes."""

    n_classes: int = 10
    """Number of scored classes (1..1000)."""
    classes_per_exp: int = 2
    """Classes per experience (>= 1; the last experience may have fewer)."""
    train_per_class: int = 20
    """Training samples per class (1..10000)."""
    test_per_class: int = 10
    """Held-out test samples per class (1..10000)."""
    channels: int = 1
    """Channels of an input image (1..3)."""
    size: int = 8
    """Side of the square input images (1..64)."""
    noise: float = 0.5
    """Standard deviation of the per-sample Gaussian noise (0..10; prototypes have std 1)."""
    batch_size: int = 1
    """Batch size of the training stream (1..1000)."""
    meta_train_classes: int = 20
    """Meta-training classes (0..1000; 0 = no meta-training pool), 20 samples each."""

    ID = "synthetic-stream"
    VERSION = 1

    def __post_init__(self) -> None:
        check_range(self, "n_classes", ge=1, le=1000)
        check_range(self, "classes_per_exp", ge=1)
        check_range(self, "train_per_class", "test_per_class", ge=1, le=10000)
        check_range(self, "channels", ge=1, le=3)
        check_range(self, "size", ge=1, le=64)
        check_range(self, "noise", ge=0.0, le=10.0)
        check_range(self, "batch_size", ge=1, le=1000)
        check_range(self, "meta_train_classes", ge=0, le=1000)

    def _stream(self, protos: Tensor, rng: np.random.Generator, prefix: str) -> list[Experience]:
        n = len(protos)
        tr, te = self.train_per_class, self.test_per_class
        x = _samples(protos, tr, self.noise, rng)
        x_test = _samples(protos, te, self.noise, rng)
        exps = []
        for i, cls in enumerate(chunks(n, self.classes_per_exp)):
            c = slice(cls.start, cls.stop)
            xe = x[c].reshape(-1, *protos.shape[1:])
            ye = torch.arange(cls.start, cls.stop).repeat_interleave(tr)
            order = torch.from_numpy(rng.permutation(len(xe)))
            exps.append(Experience(
                x=xe[order].contiguous(),
                y=ye[order],
                x_test=x_test[c].reshape(-1, *protos.shape[1:]).contiguous(),
                y_test=torch.arange(cls.start, cls.stop).repeat_interleave(te),
                batch_size=self.batch_size,
                task_id=i,
                classes=tuple(cls),
                name=f"{prefix}{class_range_name(cls)}",
            ))
        return exps

    def build(self, seed: int, data_dir: Path | None = None,
              cache_dir: Path | None = None) -> BuiltScenario:
        """The stream for `seed` (`data_dir` is unused: the data is generated)."""
        shape = (self.channels, self.size, self.size)
        experiences = self._stream(
            prototypes("scored", self.n_classes, shape),
            np.random.default_rng([_entropy(seed), _ROLES["scored"]]), "")
        val_experiences = self._stream(
            prototypes("val", N_VAL_CLASSES, shape),
            np.random.default_rng([_entropy(seed), _ROLES["val"]]), "val ")
        meta_train = None
        if self.meta_train_classes:
            m = self.meta_train_classes
            # Seed-independent, like Omniglot's background split: one meta-trained checkpoint
            # serves every run seed.
            x = _samples(prototypes("meta", m, shape), META_TRAIN_PER_CLASS, self.noise,
                         np.random.default_rng([PROTOTYPE_SEED, _ROLES["meta"]]))
            meta_train = LabeledPool(
                x=x.reshape(-1, *shape),
                y=torch.arange(m).repeat_interleave(META_TRAIN_PER_CLASS),
                n_classes=m,
                name="synthetic-meta",
            )
        spec = ScenarioSpec(input_shape=shape, n_outputs=self.n_classes)
        val_spec = None
        if N_VAL_CLASSES != self.n_classes:
            val_spec = ScenarioSpec(input_shape=shape, n_outputs=N_VAL_CLASSES)
        return BuiltScenario(
            id=self.ID,
            version=self.VERSION,
            spec=spec,
            experiences=experiences,
            val_experiences=val_experiences,
            meta_train=meta_train,
            params={**to_dict(self), "seed": int(seed)},
            val_spec=val_spec,
        )
