"""Omniglot, shipped with the package, and the `omniglot-stream` scenario (docs/design.md D3).

Data (scenarios/data/omniglot/, see its README.md): all 1623 characters x 20 drawings at
105x105, MIT-licensed (Omniglot, Brenden Lake). Every file's sha256 is checked on first use in
a process; a missing or corrupt file is a `DataError` that says how to restore it.

Pixel convention: the npz stores the original mode-"1" PNG bits (True = white background,
False = ink). `load_omniglot` inverts them, so **ink = 1.0 and background = 0.0**, resizes with
antialiased bilinear interpolation (torchvision) and returns float32 in [0, 1]. About 8 % of
the pixels are ink.

Character ids are Omniglot's global ids: 1..964 are the 30 background alphabets (row
`char_id - 1` of images_background.npz), 965..1623 the 20 evaluation alphabets (row
`char_id - 965` of images_evaluation.npz). Drawings are indexed 1..20 (the `_01`..`_20` suffix
of the original file names); axis 1 of the arrays is `drawing - 1`.

Splits of `omniglot-stream` (version 1), fixed by the version and independent of the seed:
  - meta-training: all 964 background characters (`BACKGROUND_CHAR_IDS`);
  - the 659 evaluation characters, sorted by char_id, permuted once by
    `torch.randperm(659, generator=torch.Generator().manual_seed(0))`: the first 600 of the
    permutation are the scored pool (`SCORED_CHAR_IDS`, kept sorted), the last 59 the
    validation pool (`VALIDATION_CHAR_IDS`, hard-coded below; a test checks they are what the
    permutation gives).
  - per class, the sorted drawings are cut into the first `train_per_class` (training stream)
    and the last `test_per_class` (held-out test set).
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from harness.config import check_range
from harness.errors import DataError
from harness.protocol import Experience, LabeledPool
from scenarios.base import (
    BuiltScenario,
    ScenarioConfig,
    bounded,
    class_experiences,
    derive_seed,
    file_sha256,
    generator,
    one_of,
    stream_specs,
)

Split = Literal["background", "evaluation"]

DATA_DIR = Path(__file__).resolve().parent / "data" / "omniglot"
"""The shipped copy; `load_omniglot(..., root=...)` reads another folder with the same files."""

SHA256 = {
    "images_background.npz": "8bf84167413cd00beacdce3fe582f780ab538d8dbef043a6d688f2527bbce199",
    "images_evaluation.npz": "0b84c7ffd94c4841c0040e529c86a82eaaccb986d8eadad5673f7991b7475276",
    "omniglot_characters.csv": "5ec1dc5962580305acaeef16b5abc1bebeeadfe6524d19bf41d7517d0d1a1edf",
    "LICENSE": "2efb425d9850e7bce985f151dc2ee1f4485e926a3582e08fd879cd28eb0388f5",
}
"""Expected sha256 of every shipped file (also in data/omniglot/SHA256SUMS)."""

N_DRAWINGS = 20
ORIGINAL_SIZE = 105
_FIRST_ID = {"background": 1, "evaluation": 965}
_N_CHARS = {"background": 964, "evaluation": 659}

BACKGROUND_CHAR_IDS: tuple[int, ...] = tuple(range(1, 965))
"""Meta-training characters: all 964 of the background alphabets."""
EVALUATION_CHAR_IDS: tuple[int, ...] = tuple(range(965, 1624))
"""All 659 characters of the evaluation alphabets."""
VALIDATION_CHAR_IDS: tuple[int, ...] = (
    978, 996, 1000, 1013, 1022, 1051, 1055, 1058, 1066, 1074, 1079, 1099, 1100, 1106, 1119,
    1121, 1136, 1147, 1151, 1174, 1176, 1179, 1217, 1221, 1229, 1257, 1290, 1291, 1303, 1308,
    1318, 1324, 1326, 1355, 1359, 1382, 1398, 1416, 1419, 1444, 1456, 1466, 1487, 1505, 1518,
    1523, 1528, 1532, 1534, 1540, 1542, 1546, 1559, 1562, 1572, 1579, 1582, 1590, 1610,
)
"""The 59 evaluation characters used only for validation (hyper-parameter selection)."""
SCORED_CHAR_IDS: tuple[int, ...] = tuple(
    sorted(set(EVALUATION_CHAR_IDS) - set(VALIDATION_CHAR_IDS))
)
"""The 600 evaluation characters the scored streams are drawn from."""
SPLIT_SEED = 0
"""Seed of the one-off permutation that splits the evaluation characters (see module doc)."""


def evaluation_split_from_permutation() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(scored, validation) char ids recomputed from the fixed permutation, both sorted."""
    perm = torch.randperm(len(EVALUATION_CHAR_IDS),
                          generator=torch.Generator().manual_seed(SPLIT_SEED))
    ids = torch.tensor(EVALUATION_CHAR_IDS)[perm].tolist()
    return tuple(sorted(ids[:600])), tuple(sorted(ids[600:]))


# -- files and checksums ----------------------------------------------------------------------

_VERIFIED: set[tuple[str, int, int]] = set()


def _fix_hint(root: Path) -> str:
    if root == DATA_DIR:
        return ("reinstall the package (pip install -e .) or restore the shipped data with "
                "`git checkout scenarios/data`")
    return f"copy the files from {DATA_DIR} (the shipped copy) into {root}"


def verified_path(name: str, root: Path | None = None) -> Path:
    """Path of data file `name` under `root` (default: the shipped copy), sha256-checked.

    The hash is computed once per process per file (keyed by path, size and mtime).

    Raises:
        DataError: the file is missing or its sha256 differs from the expected one.
    """
    root = DATA_DIR if root is None else Path(root).resolve()
    path = root / name
    expected = SHA256[name]
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError(
            f"Omniglot data file {name} is missing (looked for {path}; expected sha256 "
            f"{expected}); {_fix_hint(root)}"
        ) from None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return path
    digest = file_sha256(path)
    if digest != expected:
        raise DataError(
            f"Omniglot data file {name} is corrupt ({path} has sha256 {digest}, "
            f"expected {expected}); {_fix_hint(root)}"
        )
    _VERIFIED.add(key)
    return path


def omniglot_characters(root: Path | None = None) -> list[dict[str, str]]:
    """Rows of omniglot_characters.csv (char_id, split, alphabet, character, npz_file, ...)."""
    with verified_path("omniglot_characters.csv", root).open(newline="") as f:
        return list(csv.DictReader(f))


# -- loading ----------------------------------------------------------------------------------

_RESIZE_CHUNK = 2048


def _resize_inverted(bits: np.ndarray, image_size: int) -> Tensor:
    """bool [n, 105, 105] (True = background) -> float32 [n, 1, s, s], ink = 1, in [0, 1]."""
    from torchvision.transforms.v2 import functional as TF  # noqa: N812 (torchvision's idiom)

    flat = torch.from_numpy(bits)
    out = torch.empty(len(flat), 1, image_size, image_size, dtype=torch.float32)
    # Batched in chunks: a 2048 x 105 x 105 float block is 90 MB, and the whole set at once
    # would need 1.4 GB for no speed gain.
    for i in range(0, len(flat), _RESIZE_CHUNK):
        ink = (~flat[i : i + _RESIZE_CHUNK]).to(torch.float32).unsqueeze(1)
        if image_size != ORIGINAL_SIZE:
            ink = TF.resize(ink, [image_size, image_size], antialias=True)
        out[i : i + _RESIZE_CHUNK] = ink.clamp_(0.0, 1.0)
    return out


@functools.lru_cache(maxsize=4)
def _load_cached(split: Split, image_size: int, root: str) -> tuple[Tensor, Tensor]:
    name = f"images_{split}.npz"
    path = verified_path(name, Path(root))
    with np.load(path, allow_pickle=False) as data:
        bits = data["images"]
    shape = (_N_CHARS[split], N_DRAWINGS, ORIGINAL_SIZE, ORIGINAL_SIZE)
    if bits.shape != shape or bits.dtype != np.bool_:
        raise DataError(f"{path}: images have shape {bits.shape} {bits.dtype}, expected {shape} "
                        f"bool; {_fix_hint(Path(root))}")
    images = _resize_inverted(bits.reshape(-1, ORIGINAL_SIZE, ORIGINAL_SIZE), image_size)
    images = images.reshape(shape[0], N_DRAWINGS, 1, image_size, image_size)
    char_ids = torch.arange(_FIRST_ID[split], _FIRST_ID[split] + shape[0])
    return images, char_ids


def load_omniglot(
    split: Split, image_size: int = 28, root: Path | None = None
) -> tuple[Tensor, Tensor]:
    """All drawings of one Omniglot split, inverted (ink = 1.0) and resized.

    Args:
        split: 'background' (964 characters) or 'evaluation' (659 characters).
        image_size: side of the square output images (105 = original resolution).
        root: folder holding the data files (default: the copy shipped with the package).

    Returns:
        images: float32 [n_chars, 20, 1, image_size, image_size] in [0, 1]; axis 1 is the
            drawing index minus 1.
        char_ids: int64 [n_chars], the global character ids, ascending (row i of `images`).
        Both are cached per (split, image_size, root) and shared: do not modify them in place.

    Raises:
        DataError: a data file is missing or corrupt.
    """
    if split not in _FIRST_ID:
        raise ValueError(f"split must be 'background' or 'evaluation', got {split!r}")
    check_range({"image_size": image_size}, "image_size", ge=1, le=512)
    root_str = str(DATA_DIR if root is None else Path(root).resolve())
    return _load_cached(split, int(image_size), root_str)


def data_root(data_dir: Path | None) -> Path | None:
    """The `root` for `load_omniglot` given a scenario's `data_dir`: the folder holding the
    files, or its parent with an omniglot/ in it (None: the shipped copy)."""
    if data_dir is None:
        return None
    sub = Path(data_dir) / "omniglot"
    return sub if sub.is_dir() else Path(data_dir)


# -- the omniglot-stream scenario -------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class OmniglotStream(BuiltScenario):
    """A built `omniglot-stream`: also publishes the class order of both streams."""

    class_ids: tuple[int, ...] = ()
    """Character ids of the scored stream in stream order (label k = class_ids[k])."""
    val_class_ids: tuple[int, ...] = ()
    """Character ids of the validation stream in stream order."""


@dataclass(frozen=True)
class OmniglotStreamConfig(ScenarioConfig):
    """OML/ANML meta-test stream: unseen Omniglot classes, one pass, batch 1, class by class."""

    n_classes: int = bounded(100, ge=1, le=len(SCORED_CHAR_IDS))
    """Number of scored classes in the stream (1..600), drawn from the scored pool by the seed."""
    classes_per_exp: int = bounded(10, ge=1)
    """Consecutive classes grouped into one experience for the R matrix (last may be smaller)."""
    image_size: int = bounded(28, ge=8, le=512)
    """Side of the square images (28 for ANML and most baselines, 84 for OML)."""
    channels: int = one_of(1, (1, 3))
    """1 (grey) or 3 (grey replicated, for ANML's 3x28x28 input)."""
    train_per_class: int = bounded(15, ge=1, le=N_DRAWINGS - 1)
    """Training drawings per class: the first ones in drawing order (1..19)."""
    test_per_class: int = bounded(5, ge=1, le=N_DRAWINGS - 1)
    """Held-out drawings per class: the last ones in drawing order (1..19, train+test <= 20)."""
    n_val_classes: int = bounded(20, ge=1, le=len(VALIDATION_CHAR_IDS))
    """Classes in the validation stream, drawn from the 59-class validation pool (1..59)."""

    ID = "omniglot-stream"
    VERSION = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_per_class + self.test_per_class > N_DRAWINGS:
            raise ValueError(
                f"train_per_class + test_per_class must be <= {N_DRAWINGS} (training and test "
                f"drawings may not overlap), got {self.train_per_class} + {self.test_per_class}"
            )

    def _stream(
        self, images: Tensor, pool: tuple[int, ...], n: int, g: torch.Generator, prefix: str
    ) -> tuple[list[Experience], tuple[int, ...]]:
        """n classes of `pool` (drawn with g), relabelled 0..n-1 in stream order."""
        chosen = torch.tensor(pool)[torch.randperm(len(pool), generator=g)[:n]]
        rows = chosen - _FIRST_ID["evaluation"]
        tr, te = self.train_per_class, self.test_per_class
        # Drawing order within a class is shuffled by the seed; the cut is on sorted drawings.
        order = torch.stack([torch.randperm(tr, generator=g) for _ in range(n)])
        x = images[rows[:, None], order]  # [n, tr, 1, s, s]
        x_test = images[rows, N_DRAWINGS - te :]  # [n, te, 1, s, s]
        if self.channels == 3:
            x = x.expand(-1, -1, 3, -1, -1)
            x_test = x_test.expand(-1, -1, 3, -1, -1)
        exps = class_experiences(x, x_test, self.classes_per_exp, 1, prefix)
        return exps, tuple(chosen.tolist())

    def build(self, seed: int, data_dir: Path | None = None,
              cache_dir: Path | None = None) -> OmniglotStream:
        """The stream for `seed`. `data_dir`: a folder with the same (checksummed) files."""
        root = data_root(data_dir)
        s, ch = self.image_size, self.channels
        bg_images, bg_ids = load_omniglot("background", s, root)
        ev_images, _ = load_omniglot("evaluation", s, root)

        x_meta = bg_images.reshape(-1, 1, s, s)
        if ch == 3:
            x_meta = x_meta.expand(-1, 3, -1, -1).contiguous()
        meta_train = LabeledPool(
            x=x_meta,
            y=torch.arange(len(bg_ids)).repeat_interleave(N_DRAWINGS),
            n_classes=len(bg_ids),
            name="omniglot-background",
        )
        experiences, class_ids = self._stream(
            ev_images, SCORED_CHAR_IDS, self.n_classes, generator(seed), "")
        val_experiences, val_class_ids = self._stream(
            ev_images, VALIDATION_CHAR_IDS, self.n_val_classes,
            generator(derive_seed(seed, "val")), "val ")
        spec, val_spec = stream_specs((ch, s, s), self.n_classes, self.n_val_classes)
        return self.built(
            OmniglotStream, seed, spec=spec, experiences=experiences,
            val_experiences=val_experiences, meta_train=meta_train, val_spec=val_spec,
            class_ids=class_ids, val_class_ids=val_class_ids,
        )
