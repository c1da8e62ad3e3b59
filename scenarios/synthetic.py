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

from harness.protocol import Experience, LabeledPool
from scenarios.base import (
    BuiltScenario,
    ScenarioConfig,
    bounded,
    class_experiences,
    stream_specs,
)

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
class SyntheticStreamConfig(ScenarioConfig):
    """Tiny class-incremental stream of noisy Gaussian prototypes."""

    n_classes: int = bounded(10, ge=1, le=1000)
    """Number of scored classes (1..1000)."""
    classes_per_exp: int = bounded(2, ge=1)
    """Classes per experience (>= 1; the last experience may have fewer)."""
    train_per_class: int = bounded(20, ge=1, le=10000)
    """Training samples per class (1..10000)."""
    test_per_class: int = bounded(10, ge=1, le=10000)
    """Held-out test samples per class (1..10000)."""
    channels: int = bounded(1, ge=1, le=3)
    """Channels of an input image (1..3)."""
    size: int = bounded(8, ge=1, le=64)
    """Side of the square input images (1..64)."""
    noise: float = bounded(0.5, ge=0.0, le=10.0)
    """Standard deviation of the per-sample Gaussian noise (0..10; prototypes have std 1)."""
    batch_size: int = bounded(1, ge=1, le=1000)
    """Batch size of the training stream (1..1000)."""
    meta_train_classes: int = bounded(20, ge=0, le=1000)
    """Meta-training classes (0..1000; 0 = no meta-training pool), 20 samples each."""

    ID = "synthetic-stream"
    VERSION = 1

    def _stream(self, protos: Tensor, rng: np.random.Generator, prefix: str) -> list[Experience]:
        x = _samples(protos, self.train_per_class, self.noise, rng)
        x_test = _samples(protos, self.test_per_class, self.noise, rng)
        return class_experiences(x, x_test, self.classes_per_exp, self.batch_size, prefix,
                                 shuffle=lambda m: torch.from_numpy(rng.permutation(m)))

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
        spec, val_spec = stream_specs(shape, self.n_classes, N_VAL_CLASSES)
        return self.built(BuiltScenario, seed, spec=spec, experiences=experiences,
                          val_experiences=val_experiences, meta_train=meta_train,
                          val_spec=val_spec)
