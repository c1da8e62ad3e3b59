"""Split MiniImageNet as a continual stream, in two versioned variants (docs/design.md D3).

Images come from `--data-dir` (else `$HARNESS_MINIIMAGENET_DIR`) in either documented layout,
`<dir>/<wnid>/*.jpg` or the Ravi & Larochelle `<dir>/images/` folder, with the split CSVs shipped
in scenarios/data/miniimagenet/; decoding, resizing and the checksummed array cache are
`scenarios.miniimagenet_data.load_miniimagenet` (shared with `miniimagenet-fewshot`). Without
images the error names the folder and the layout expected. Inside a class, images are sorted by
file name; "the first k" below means in that order.

`split-miniimagenet` (version 1), the OML protocol (Javed & White 2019):
  - meta-training: the 64 train classes (`meta_train_per_class` images each, a LabeledPool);
  - scored stream: `n_classes` of the 20 test classes in an order drawn from the seed, the first
    `train_per_class` (30) images of each in a seed-shuffled order, batch 1, one pass, class
    after class, `classes_per_exp` classes per experience; held out: the last `test_per_class`
    images of the same classes;
  - validation stream: the 16 val classes, same protocol (disjoint classes).
`split-miniimagenet-cil` (version 1), the class-incremental split of the continual-learning
literature: all 100 classes (64 + 16 + 20) in `n_experiences` (20) experiences of 5, in a class
order drawn from the seed and published (`class_order`, and its hash `class_order_hash` in the
params). Per class: the first `train_per_class` (480) images train, the next `val_per_class`
(20) feed the validation stream (its first `n_val_experiences` experiences' classes, 15 train +
5 test each), the last `test_per_class` (100) are held out. `--set train_per_class=500
val_per_class=0` gives the common 500/100 split without a validation stream.

Memory: inputs are float32, 84x84x3 = 85 KB an image; the CIL stream at the defaults holds
58,000 images (4.9 GB), the OML meta-training pool 38,400 (3.3 GB). Lower `image_size`,
`meta_train_per_class` or the per-class counts on small machines.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from harness.errors import DataError
from harness.protocol import Experience, LabeledPool, ScenarioSpec
from scenarios.base import (
    BuiltScenario,
    ScenarioConfig,
    bounded,
    class_experiences,
    derive_seed,
    generator,
    stream_specs,
)
from scenarios.miniimagenet_data import (
    N_CLASSES,
    MiniImageNetSplit,
    fake_data,
    load_miniimagenet,
)

ENV_DIR = "HARNESS_MINIIMAGENET_DIR"
"""Environment variable naming the image folder when --data-dir is not given."""


def _data_dir(data_dir: Path | None) -> Path | None:
    if data_dir is None and os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    return data_dir


def _load_splits(data_dir: Path | None, image_size: int, split_dir: Path | None
                 ) -> tuple[MiniImageNetSplit, MiniImageNetSplit, MiniImageNetSplit]:
    """The train, val and test splits (in that order), from `data_dir` or $ENV_DIR."""
    folder = _data_dir(data_dir)
    try:
        return (load_miniimagenet("train", folder, image_size, split_dir=split_dir),
                load_miniimagenet("val", folder, image_size, split_dir=split_dir),
                load_miniimagenet("test", folder, image_size, split_dir=split_dir))
    except DataError as e:
        if folder is None:
            raise DataError(f"{e} (or name the folder in ${ENV_DIR})") from None
        raise


def to_float(images: Tensor) -> Tensor:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] in [0, 1]."""
    return images.movedim(-1, -3).to(torch.float32).div_(255.0)


def _class_stream(
    images: Tensor, classes: Tensor, train: tuple[int, int], test: tuple[int, int],
    classes_per_exp: int, batch_size: int, g: torch.Generator, prefix: str,
) -> list[Experience]:
    """Class-incremental experiences over `classes` (rows of `images`), in that order.

    Label k = the k-th class of `classes`. Training images: per class the index range `train`,
    order shuffled by `g`; test images: the index range `test`.
    """
    n_tr = train[1] - train[0]
    order = torch.stack([train[0] + torch.randperm(n_tr, generator=g) for _ in range(len(classes))])
    x = to_float(images[classes[:, None], order])  # [n, n_tr, 3, s, s]
    x_test = to_float(images[classes, test[0] : test[1]])
    return class_experiences(x, x_test, classes_per_exp, batch_size, prefix)


@dataclass(frozen=True, eq=False)
class SplitMiniImageNet(BuiltScenario):
    """A built split-miniimagenet stream: also publishes the class order (WordNet ids)."""

    class_order: tuple[str, ...] = ()
    """WordNet ids of the scored stream in stream order (label k = class_order[k])."""
    val_class_order: tuple[str, ...] = ()
    """WordNet ids of the validation stream in stream order."""


def order_hash(wnids: tuple[str, ...]) -> str:
    """Short sha256 of a class order, published with the results."""
    return hashlib.sha256(",".join(wnids).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SplitMiniImageNetConfig(ScenarioConfig):
    """OML protocol on MiniImageNet: meta-train on 64 classes, stream unseen test classes."""

    n_classes: int = bounded(20, ge=1, le=N_CLASSES["test"])
    """Scored classes, drawn in a seed-given order from the 20 test classes (1..20)."""
    classes_per_exp: int = bounded(5, ge=1)
    """Consecutive classes per experience for the R matrix (last may be smaller)."""
    train_per_class: int = bounded(30, ge=1)
    """Training images per class (the first ones), seen once in a seed-shuffled order."""
    test_per_class: int = bounded(100, ge=1)
    """Held-out images per class (the last ones; train + test <= images per class)."""
    n_val_classes: int = bounded(16, ge=1, le=N_CLASSES["val"])
    """Classes of the validation stream, from the 16 val classes (1..16)."""
    meta_train_per_class: int = bounded(600, ge=1)
    """Images per meta-training class in the pool (the first ones; 1..600)."""
    image_size: int = bounded(84, ge=8, le=512)
    """Side of the square images (84 as in OML and most MiniImageNet work)."""
    batch_size: int = bounded(1, ge=1)
    """Training batch size of the stream (1 in the OML protocol)."""
    split_dir: Path | None = None
    """Folder with other split CSVs (train/val/test.csv, `filename,label`); default shipped."""

    ID = "split-miniimagenet"
    VERSION = 1
    SMOKE = {"image_size": 8, "test_per_class": 5, "meta_train_per_class": 20}
    fake_data = staticmethod(fake_data)

    def build(self, seed: int, data_dir: Path | None = None,
              cache_dir: Path | None = None) -> SplitMiniImageNet:
        s = self.image_size
        train, val, test = _load_splits(data_dir, s, self.split_dir)
        per = test.images.shape[1]
        tr, te = self.train_per_class, self.test_per_class
        if tr + te > per or tr + te > val.images.shape[1]:
            raise ValueError(f"train_per_class + test_per_class must be <= {per} (images per "
                             f"class; train and test may not overlap), got {tr} + {te}")
        n, n_val = self.n_classes, self.n_val_classes
        if n > len(test.wnids) or n_val > len(val.wnids):
            raise ValueError(f"the split has {len(test.wnids)} test and {len(val.wnids)} val "
                             f"classes; n_classes={n}, n_val_classes={n_val} asked")
        g = generator(seed)
        classes = torch.randperm(len(test.wnids), generator=g)[:n]
        exps = _class_stream(test.images, classes, (0, tr), (per - te, per),
                             self.classes_per_exp, self.batch_size, g, "")
        gv = generator(derive_seed(seed, "val"))
        val_classes = torch.randperm(len(val.wnids), generator=gv)[:n_val]
        vper = val.images.shape[1]
        val_exps = _class_stream(val.images, val_classes, (0, tr), (vper - te, vper),
                                 self.classes_per_exp, self.batch_size, gv, "val ")
        m = min(self.meta_train_per_class, train.images.shape[1])
        pool = LabeledPool(
            x=to_float(train.images[:, :m]).reshape(-1, 3, s, s),
            y=torch.arange(len(train.wnids)).repeat_interleave(m),
            n_classes=len(train.wnids), name="miniimagenet-train")
        order = tuple(test.wnids[i] for i in classes.tolist())
        val_order = tuple(val.wnids[i] for i in val_classes.tolist())
        spec, val_spec = stream_specs((3, s, s), n, n_val)
        return self.built(
            SplitMiniImageNet, seed, spec=spec, experiences=exps,
            val_experiences=val_exps, meta_train=pool, val_spec=val_spec,
            extra_params={"class_order_hash": order_hash(order),
                          "data_digest": f"{train.digest[:12]}:{val.digest[:12]}:"
                                         f"{test.digest[:12]}"},
            class_order=order, val_class_order=val_order,
        )


@dataclass(frozen=True)
class SplitMiniImageNetCILConfig(ScenarioConfig):
    """Class-incremental MiniImageNet: 100 classes in 20 experiences of 5, seed-given order."""

    n_experiences: int = bounded(20, ge=1, le=sum(N_CLASSES.values()))
    """Experiences; the 100 classes are split evenly among them (must divide 100)."""
    train_per_class: int = bounded(480, ge=1)
    """Training images per class (the first ones), shuffled within the experience by the seed."""
    val_per_class: int = bounded(20, ge=0)
    """Images per class after the training ones reserved for validation (0 = no validation)."""
    test_per_class: int = bounded(100, ge=1)
    """Held-out images per class (the last ones)."""
    n_val_experiences: int = bounded(3, ge=1)
    """Validation stream: the classes of the first this many experiences (3/4 of each class's
    validation images train, 1/4 test)."""
    image_size: int = bounded(84, ge=8, le=512)
    """Side of the square images."""
    batch_size: int = bounded(10, ge=1)
    """Training batch size of the stream (10 is common in online continual learning)."""
    split_dir: Path | None = None
    """Folder with other split CSVs (train/val/test.csv, `filename,label`); default shipped."""

    ID = "split-miniimagenet-cil"
    VERSION = 1
    SMOKE = {"image_size": 8, "train_per_class": 10, "val_per_class": 8, "test_per_class": 4}
    fake_data = staticmethod(fake_data)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.val_per_class == 1:
            raise ValueError("val_per_class must be 0 (no validation) or >= 2")

    def build(self, seed: int, data_dir: Path | None = None,
              cache_dir: Path | None = None) -> SplitMiniImageNet:
        s = self.image_size
        parts = _load_splits(data_dir, s, self.split_dir)
        per = parts[0].images.shape[1]
        if any(p.images.shape[1] != per for p in parts):
            raise ValueError("every class must have the same number of images")
        tr, va, te = self.train_per_class, self.val_per_class, self.test_per_class
        if tr + va + te > per:
            raise ValueError(f"train_per_class + val_per_class + test_per_class must be <= "
                             f"{per} (images per class), got {tr} + {va} + {te}")
        images = torch.cat([p.images for p in parts])  # [100, per, s, s, 3] uint8
        wnids = tuple(w for p in parts for w in p.wnids)
        n_total = len(wnids)
        if n_total % self.n_experiences:
            raise ValueError(f"n_experiences={self.n_experiences} must divide the "
                             f"{n_total} classes")
        per_exp = n_total // self.n_experiences
        g = generator(seed)
        classes = torch.randperm(n_total, generator=g)
        exps = _class_stream(images, classes, (0, tr), (per - te, per), per_exp,
                             self.batch_size, g, "")
        val_exps: list[Experience] = []
        if va:
            n_val = min(self.n_val_experiences, self.n_experiences) * per_exp
            v_tr = (3 * va) // 4 or 1
            val_exps = _class_stream(images, classes[:n_val], (tr, tr + v_tr),
                                     (tr + v_tr, tr + va), per_exp, self.batch_size,
                                     generator(derive_seed(seed, "val")), "val ")
        order = tuple(wnids[i] for i in classes.tolist())
        spec = ScenarioSpec(input_shape=(3, s, s), n_outputs=n_total)
        return self.built(
            SplitMiniImageNet, seed, spec=spec, experiences=exps,
            val_experiences=val_exps, meta_train=None,
            extra_params={"class_order_hash": order_hash(order),
                          "data_digest": ":".join(p.digest[:12] for p in parts)},
            class_order=order, val_class_order=order[: len(val_exps) * per_exp],
        )
