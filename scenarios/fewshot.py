"""Episodic few-shot scenarios: `sinusoid-fewshot`, `omniglot-fewshot`, `miniimagenet-fewshot`.

An episode is an `Experience` whose training stream is the support set (one batch: the whole
support set) and whose test set is the query set; the runner calls `reset()`,
`observe(support)`, `predict(query)` per episode (docs/design.md D2). Labels inside an episode are
0..N-1 in the order the episode's classes were drawn.

The scored episodes (`experiences`) and the validation episodes (`val_experiences`) are fixed by
the seed, so every learner sees the same episodes; they are built lazily from an index table
(a 20-way MiniImageNet test set would not fit in memory as tensors). `meta_train` is an
`EpisodeSampler` (or `SinusoidSampler`) over data disjoint from evaluation: `sample(g)` gives
one episode and `sample_batch(n, g, ...)` a stacked meta-batch `(xs, ys, xq, yq)` with a leading
task dimension, which is what the vectorised inner loops consume.

Splits (version 1):
  - Omniglot: meta-train on the 964 background characters (optionally x4 with 90-degree
    rotations as new classes); test episodes from the 600 scored evaluation characters and
    validation episodes from the 59 held-out ones (the same split as `omniglot-stream`, see
    scenarios/omniglot.py). Images 28x28, ink = 1.
  - MiniImageNet: Ravi & Larochelle train (64) / val (16) / test (20) classes, 84x84 RGB in
    [0, 1] (see scenarios/miniimagenet_data.py for the image layout).
  - Sinusoid: y = A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5] (Finn et al.
    2017). Every test function carries both a 5-shot and a 10-shot support set (the 5-shot one
    is the first five points of the 10-shot one) and the same query points; see
    `episode_sets`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from harness.config import check_range, eval_field, eval_params
from harness.protocol import Experience, ScenarioSpec, tensor_digest
from scenarios.base import BuiltScenario, ScenarioConfig, bounded, derive_seed, generator
from scenarios.miniimagenet_data import N_CLASSES, PER_CLASS, fake_data, load_miniimagenet
from scenarios.omniglot import (
    N_DRAWINGS,
    ORIGINAL_SIZE,
    SCORED_CHAR_IDS,
    SHA256,
    VALIDATION_CHAR_IDS,
    data_root,
    load_omniglot,
)

# -- classification episodes --------------------------------------------------------------------


def _as_float_images(x: Tensor) -> Tensor:
    """Stored images -> float [.., C, H, W] in [0, 1] (uint8 HWC is decoded, float passes)."""
    if x.dtype == torch.uint8:
        return x.movedim(-1, -3).to(torch.float32).div_(255.0)
    return x


def _rotate(x: Tensor, rot: Tensor) -> Tensor:
    """Rotate images x [T, N, M, C, H, W] by rot[T, N] quarter turns (per class)."""
    if not bool((rot != 0).any()):
        return x
    out = x.clone()
    for k in (1, 2, 3):
        m = rot == k
        if bool(m.any()):
            out[m] = torch.rot90(x[m], k, dims=(-2, -1))
    return out


def _draw(n_classes: int, per_class: int, n_tasks: int, ways: int, m: int,
          g: torch.Generator) -> tuple[Tensor, Tensor]:
    """(classes [n_tasks, ways], samples [n_tasks, ways, m]): distinct classes per task and
    distinct samples per class, uniformly."""
    if ways > n_classes:
        raise ValueError(f"{ways}-way episodes need at least {ways} classes, have {n_classes}")
    if m > per_class:
        raise ValueError(f"shots + queries = {m} exceeds the {per_class} samples per class")
    classes = torch.rand(n_tasks, n_classes, generator=g).argsort(dim=1)[:, :ways]
    samples = torch.rand(n_tasks, ways, per_class, generator=g).argsort(dim=2)[:, :, :m]
    return classes, samples


@dataclass(frozen=True, eq=False)
class EpisodeSampler:
    """Meta-training episodes over `images` [n_classes, per_class, ...] (a TaskSampler).

    With `rotations`, each class also appears rotated by 90, 180 and 270 degrees as three new
    classes (Santoro et al. 2016; Finn et al. 2017), so there are 4 x n_classes classes.
    """

    images: Tensor
    """[n_classes, per_class, C, H, W] float in [0, 1], or uint8 [.., H, W, C]."""
    ways: int
    shots: int
    queries: int
    rotations: bool = False
    name: str = ""

    @property
    def n_classes(self) -> int:
        return self.images.shape[0] * (4 if self.rotations else 1)

    def sample_batch(self, n_tasks: int, g: torch.Generator, ways: int | None = None,
                     shots: int | None = None, queries: int | None = None,
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A meta-batch: xs [T, N*K, ...], ys [T, N*K], xq [T, N*Q, ...], yq [T, N*Q].

        Support and query are grouped by class (labels 0..N-1 in draw order).
        """
        n = ways or self.ways
        k = self.shots if shots is None else shots
        q = self.queries if queries is None else queries
        base = self.images.shape[0]
        classes, samples = _draw(self.n_classes, self.images.shape[1], n_tasks, n, k + q, g)
        x = _as_float_images(self.images[(classes % base)[:, :, None], samples])
        if self.rotations:
            x = _rotate(x, classes // base)
        shape = x.shape[3:]
        labels = torch.arange(n)
        xs = x[:, :, :k].reshape(n_tasks, n * k, *shape)
        xq = x[:, :, k:].reshape(n_tasks, n * q, *shape)
        ys = labels.repeat_interleave(k).expand(n_tasks, -1).contiguous()
        yq = labels.repeat_interleave(q).expand(n_tasks, -1).contiguous()
        return xs, ys, xq, yq

    def sample(self, generator: torch.Generator) -> list[Experience]:
        """One episode (TaskSampler protocol): [Experience(support, query)]."""
        xs, ys, xq, yq = self.sample_batch(1, generator)
        return [Experience(xs[0], ys[0], xq[0], yq[0], batch_size=len(xs[0]))]


class FixedEpisodes(Sequence[Experience]):
    """Fixed episodes, each built on access by the subclass's `episode(i)` (re-iterable)."""

    def episode(self, i: int) -> Experience:
        """Episode `i`, 0 <= i < len(self)."""
        raise NotImplementedError

    def index_digest(self) -> str:
        """A digest of everything that fixes the episodes (for `stream_hash`)."""
        raise NotImplementedError

    def __getitem__(self, i: int) -> Experience:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.episode(i % len(self))

    def __iter__(self) -> Iterator[Experience]:
        for i in range(len(self)):
            yield self.episode(i)


class EpisodeSet(FixedEpisodes):
    """Fixed episodes built on access from an index table (re-iterable, memory-light)."""

    def __init__(self, images: Tensor, classes: Tensor, samples: Tensor, shots: int,
                 prefix: str = "episode") -> None:
        self.images, self.classes, self.samples = images, classes, samples
        self.shots, self.prefix = shots, prefix

    def __len__(self) -> int:
        return len(self.classes)

    def episode(self, i: int) -> Experience:
        cls, smp = self.classes[i], self.samples[i]
        n, k = len(cls), self.shots
        x = _as_float_images(self.images[cls[:, None], smp])  # [N, K+Q, ...]
        shape = x.shape[2:]
        q = x.shape[1] - k
        labels = torch.arange(n)
        return Experience(
            x=x[:, :k].reshape(n * k, *shape).contiguous(), y=labels.repeat_interleave(k),
            x_test=x[:, k:].reshape(n * q, *shape).contiguous(), y_test=labels.repeat_interleave(q),
            batch_size=n * k, task_id=0, classes=tuple(range(n)), name=f"{self.prefix} {i}")

    def index_digest(self) -> str:
        return tensor_digest(self.classes, self.samples)


def fixed_episodes(images: Tensor, n_episodes: int, ways: int, shots: int, queries: int,
                   g: torch.Generator, prefix: str) -> EpisodeSet:
    classes, samples = _draw(images.shape[0], images.shape[1], n_episodes, ways,
                             shots + queries, g)
    return EpisodeSet(images, classes, samples, shots, prefix)


@dataclass(frozen=True, eq=False)
class FewShotScenario(BuiltScenario):
    """A built episodic scenario. `episode_sets` names every scored episode set: a learner's
    result table has one metric per set (and per inner-step count, for regression)."""

    data_digest: str = ""
    """Fingerprint of the underlying data (file checksums, image size, preprocessing)."""
    episode_sets: dict[str, Sequence[Experience]] = field(default_factory=dict)
    """Further scored episode sets by name (e.g. {'5shot': ..., '10shot': ...}); the harness
    scores each (regression: at every step count of `test_steps_grid`) besides
    `experiences`. Empty when `experiences` is the only set."""
    test_steps_grid: tuple[int, ...] = ()
    """Regression: inner-step counts at which every set is scored (Finn et al.: 1, 5, 10)."""
    eval_params: tuple[str, ...] = ()
    """Scenario parameters that change only the scored episodes (e.g. `test_episodes`): left out
    of the meta-training fingerprint, so changing them reuses the meta-trained checkpoint.
    Whatever shapes the validation episodes stays in (MAML++ picks checkpoints on them)."""

    @cached_property
    def stream_hash(self) -> str:
        """'<id>-v<version>-<hash>' over the episode index tables and the data fingerprint."""
        h = hashlib.sha256(self.data_digest.encode())
        for name, eps in [("test", self.experiences), ("val", self.val_experiences),
                          *sorted(self.episode_sets.items())]:
            h.update(name.encode())
            if isinstance(eps, FixedEpisodes):
                h.update(eps.index_digest().encode())
            else:  # pragma: no cover - plain lists (user-built scenarios)
                for e in eps:
                    h.update(tensor_digest(e.x, e.y, e.x_test, e.y_test).encode())
        return f"{self.id}-v{self.version}-{h.hexdigest()[:16]}"


def _check_image_episodes(cfg: OmniglotFewShotConfig | MiniImageNetFewShotConfig,
                          per_class: int, what: str) -> None:
    """The checks shared by the image few-shot configs besides their fields' ranges (`what`
    has `per_class` images of each class, so shots + queries may not exceed it)."""
    check_range(cfg, "test_episodes", ge=1)
    for queries in (cfg.queries, cfg.train_queries):
        if cfg.shots + queries > per_class:
            raise ValueError(f"shots + queries must be <= {per_class} ({what} has {per_class} "
                             f"samples per class), got {cfg.shots} + {queries}")


def _image_episodes(cfg: OmniglotFewShotConfig | MiniImageNetFewShotConfig, seed: int,
                    test_images: Tensor, val_images: Tensor, sampler: EpisodeSampler,
                    channels: int, data_digest: str) -> FewShotScenario:
    """The scenario of an image few-shot config: its scored episodes over `test_images` and
    validation episodes over `val_images` ([n_classes, per_class, ...] each), fixed by the
    seed, and `sampler` for meta-training."""
    test = fixed_episodes(test_images, cfg.test_episodes, cfg.ways, cfg.shots, cfg.queries,
                          generator(seed), "episode")
    val = fixed_episodes(val_images, cfg.val_episodes, cfg.ways, cfg.shots, cfg.queries,
                         generator(derive_seed(seed, "val")), "val episode")
    s = cfg.image_size
    return cfg.built(
        FewShotScenario, seed,
        spec=ScenarioSpec(input_shape=(channels, s, s), n_outputs=cfg.ways, episodic=True),
        experiences=test, val_experiences=val, meta_train=sampler,
        eval_params=eval_params(cfg), data_digest=data_digest,
    )


# -- Omniglot -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OmniglotFewShotConfig(ScenarioConfig):
    """N-way K-shot Omniglot episodes: background alphabets meta-train, evaluation test."""

    ways: int = bounded(5, ge=2, le=len(VALIDATION_CHAR_IDS))
    """Classes per episode (5 or 20 in the papers)."""
    shots: int = bounded(1, ge=1)
    """Support images per class (1 or 5)."""
    queries: int = bounded(15, ge=1)
    """Query images per class in test and validation episodes."""
    test_episodes: int = eval_field(600, "Scored episodes.")
    """Scored episodes (mean and 1.96 sd/sqrt(n) CI over them)."""
    val_episodes: int = bounded(100, ge=0)
    """Validation episodes from the 59 held-out evaluation characters."""
    image_size: int = bounded(28, ge=8, le=ORIGINAL_SIZE)
    """Side of the square images."""
    rotations: bool = True
    """Meta-train on 90/180/270-degree rotations of the background classes as extra classes."""
    train_queries: int = bounded(15, ge=1)
    """Default query images per class in meta-training episodes (a learner may ask for fewer)."""

    ID = "omniglot-fewshot"
    VERSION = 1
    SMOKE: ClassVar[dict[str, Any]] = {"test_episodes": 5, "val_episodes": 3}
    """Small parameters for conformance checks."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_image_episodes(self, per_class=N_DRAWINGS, what="Omniglot")

    def build(self, seed: int, data_dir: Path | None = None,
              cache_dir: Path | None = None) -> FewShotScenario:
        s, root = self.image_size, data_root(data_dir)
        bg, _ = load_omniglot("background", s, root)
        ev, ev_ids = load_omniglot("evaluation", s, root)
        first = int(ev_ids[0])
        sampler = EpisodeSampler(bg, self.ways, self.shots, self.train_queries,
                                 rotations=self.rotations, name="omniglot-background")
        digest = f"omniglot:{SHA256['images_background.npz']}:{SHA256['images_evaluation.npz']}:{s}"
        return _image_episodes(self, seed, ev[torch.tensor(SCORED_CHAR_IDS) - first],
                               ev[torch.tensor(VALIDATION_CHAR_IDS) - first], sampler, 1, digest)


# -- MiniImageNet ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MiniImageNetFewShotConfig(ScenarioConfig):
    """5-way 1/5-shot MiniImageNet episodes on the Ravi & Larochelle split (user-supplied images).

    Put the images under `--data-dir` as `<data_dir>/<wnid>/<file>.jpg` or
    `<data_dir>/images/<file>.jpg` (file names as in the shipped split CSVs).
    """

    ways: int = bounded(5, ge=2, le=N_CLASSES["val"])
    """Classes per episode."""
    shots: int = bounded(1, ge=1)
    """Support images per class (1 or 5)."""
    queries: int = bounded(15, ge=1)
    """Query images per class in test and validation episodes."""
    test_episodes: int = eval_field(600, "Scored episodes from the 20 test classes.")
    """Scored episodes from the 20 test classes."""
    val_episodes: int = bounded(100, ge=0)
    """Validation episodes from the 16 validation classes."""
    image_size: int = bounded(84, ge=8, le=512)
    """Side of the square images."""
    train_queries: int = bounded(15, ge=1)
    """Default query images per class in meta-training episodes."""

    ID = "miniimagenet-fewshot"
    VERSION = 1
    SMOKE: ClassVar[dict[str, Any]] = {"test_episodes": 5, "val_episodes": 3, "image_size": 8}
    fake_data = staticmethod(fake_data)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_image_episodes(self, per_class=PER_CLASS, what="MiniImageNet")

    def build(self, seed: int, data_dir: Path | None = None,
              cache_dir: Path | None = None) -> FewShotScenario:
        s = self.image_size
        train = load_miniimagenet("train", data_dir, s)
        val = load_miniimagenet("val", data_dir, s)
        test = load_miniimagenet("test", data_dir, s)
        sampler = EpisodeSampler(train.images, self.ways, self.shots, self.train_queries,
                                 name="miniimagenet-train")
        digest = f"miniimagenet:{train.digest}:{val.digest}:{test.digest}:{s}"
        return _image_episodes(self, seed, test.images, val.images, sampler, 3, digest)


# -- Sinusoid regression --------------------------------------------------------------------------

AMP_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


def _uniform(shape: tuple[int, ...], lo: float, hi: float, g: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


@dataclass(frozen=True, eq=False)
class SinusoidSampler:
    """Meta-training sine tasks y = A sin(x - phase) (a TaskSampler)."""

    shots: int
    queries: int

    def sample_batch(self, n_tasks: int, g: torch.Generator, ways: int | None = None,
                     shots: int | None = None, queries: int | None = None,
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """xs [T, K, 1], ys [T, K, 1], xq [T, Q, 1], yq [T, Q, 1] (`ways` is ignored)."""
        k = self.shots if shots is None else shots
        q = self.queries if queries is None else queries
        amp = _uniform((n_tasks, 1, 1), *AMP_RANGE, g)
        phase = _uniform((n_tasks, 1, 1), *PHASE_RANGE, g)
        x = _uniform((n_tasks, k + q, 1), *X_RANGE, g)
        y = amp * torch.sin(x - phase)
        return x[:, :k], y[:, :k], x[:, k:], y[:, k:]

    def sample(self, generator: torch.Generator) -> list[Experience]:
        xs, ys, xq, yq = self.sample_batch(1, generator)
        return [Experience(xs[0], ys[0], xq[0], yq[0], batch_size=len(xs[0]))]


class SinusoidEpisodes(FixedEpisodes):
    """Fixed sine test functions; `shots` support points (a prefix of the stored ones)."""

    def __init__(self, amp: Tensor, phase: Tensor, x: Tensor, xq: Tensor, shots: int,
                 prefix: str = "episode") -> None:
        self.amp, self.phase, self.x, self.xq = amp, phase, x, xq
        self.shots, self.prefix = shots, prefix

    def __len__(self) -> int:
        return len(self.amp)

    def episode(self, i: int) -> Experience:
        a, p = self.amp[i], self.phase[i]
        xs = self.x[i, : self.shots]
        xq = self.xq[i]
        return Experience(x=xs, y=a * torch.sin(xs - p), x_test=xq, y_test=a * torch.sin(xq - p),
                          batch_size=len(xs), name=f"{self.prefix} {i}")

    def index_digest(self) -> str:
        return tensor_digest(self.amp, self.phase, self.x[:, : self.shots], self.xq)


def sinusoid_episodes(n: int, max_shots: int, queries: int, g: torch.Generator,
                      prefix: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    amp = _uniform((n,), *AMP_RANGE, g)
    phase = _uniform((n,), *PHASE_RANGE, g)
    x = _uniform((n, max_shots, 1), *X_RANGE, g)
    xq = _uniform((n, queries, 1), *X_RANGE, g)
    return amp, phase, x, xq


@dataclass(frozen=True)
class SinusoidFewShotConfig(ScenarioConfig):
    """MAML's sinusoid regression (Finn et al. 2017, Sec. 5.1): K-shot, MSE after 1/5/10 steps."""

    shots: int = bounded(10, ge=1)
    """K of the scored episode set (`experiences`); every set in `eval_shots` is scored too."""
    eval_shots: tuple[int, ...] = eval_field((5, 10), "K values with a scored episode set.")
    """K values with a scored episode set (same functions and query points for each)."""
    queries: int = bounded(100, ge=1)
    """Held-out query points per test function (x ~ U[-5, 5])."""
    test_episodes: int = eval_field(600, "Scored test functions.")
    """Scored test functions."""
    val_episodes: int = bounded(100, ge=0)
    """Validation functions (drawn with a seed derived from the scenario seed)."""
    train_shots: int = bounded(10, ge=1)
    """K of the meta-training tasks (MAML: trained 10-shot, tested 5- and 10-shot)."""
    train_queries: int = bounded(10, ge=1)
    """Query points per meta-training task (MAML: K)."""
    test_steps_grid: tuple[int, ...] = eval_field((1, 5, 10), "Scored inner-step counts.")
    """Inner-step counts at which every episode set is scored (mse_{K}shot_{S}step)."""

    ID = "sinusoid-fewshot"
    VERSION = 1
    SMOKE: ClassVar[dict[str, Any]] = {"test_episodes": 5, "val_episodes": 3}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.eval_shots or min(self.eval_shots) < 1:
            raise ValueError(f"eval_shots must be positive K values, got {self.eval_shots!r}")
        check_range(self, "test_episodes", ge=1)
        if not self.test_steps_grid or min(self.test_steps_grid) < 0:
            raise ValueError(f"test_steps_grid must be >= 0 step counts, got "
                             f"{self.test_steps_grid!r}")

    def build(self, seed: int, data_dir: Path | None = None,
              cache_dir: Path | None = None) -> FewShotScenario:
        shots_all = sorted({*self.eval_shots, self.shots})
        kmax = shots_all[-1]
        amp, phase, x, xq = sinusoid_episodes(self.test_episodes, kmax, self.queries,
                                              generator(seed), "episode")
        sets: dict[str, Sequence[Experience]] = {
            f"{k}shot": SinusoidEpisodes(amp, phase, x, xq, k) for k in shots_all}
        va, vp, vx, vq = sinusoid_episodes(self.val_episodes, self.shots, self.queries,
                                           generator(derive_seed(seed, "val")), "val")
        val_eps = SinusoidEpisodes(va, vp, vx, vq, self.shots, "val episode")
        return self.built(
            FewShotScenario, seed,
            spec=ScenarioSpec(input_shape=(1,), n_outputs=1, task="regression", episodic=True),
            experiences=sets[f"{self.shots}shot"], val_experiences=val_eps,
            meta_train=SinusoidSampler(self.train_shots, self.train_queries),
            eval_params=eval_params(self),
            data_digest=f"sinusoid:A{AMP_RANGE}:phase{PHASE_RANGE}:x{X_RANGE}",
            episode_sets=sets, test_steps_grid=tuple(self.test_steps_grid),
        )


def scenario_summary(scenario: FewShotScenario) -> dict[str, Any]:
    """Counts for provenance: episodes per set, ways/shots/queries."""
    return {name: len(eps) for name, eps in scenario.episode_sets.items()}

