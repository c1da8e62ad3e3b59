"""MiniImageNet images on the Ravi & Larochelle split, from a user-supplied folder
(docs/design.md D3).

The split CSVs (`train.csv`, `val.csv`, `test.csv`: `filename,label`, 64/16/20 classes x 600
images) ship in scenarios/data/miniimagenet/ with their sha256 (MIT, Twitter, Inc.; from
twitter-research/meta-learning-lstm). The images are an ImageNet subset under ImageNet's terms
and do not ship: put them under `--data-dir` in one of two layouts,

    <data_dir>/<wnid>/<filename>.jpg      e.g. data/n01532829/n0153282900000005.jpg
    <data_dir>/images/<filename>.jpg      e.g. data/images/n0153282900000005.jpg

(`<data_dir>/miniimagenet/...` is accepted too). File names are the ones in the CSVs. Images
are decoded once, resized to `image_size` (bilinear, antialiased, like the usual 84x84
preprocessing) and cached as uint8 arrays `<data_dir>/.harness-cache/miniimagenet-<split>-
<size>.npy` with a sha256 beside them; a cache whose checksum or source listing no longer
matches is rebuilt.

Used by `miniimagenet-fewshot` (scenarios/fewshot.py) and `split-miniimagenet`.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from harness.errors import DataError
from harness.fileio import atomic_write_bytes
from scenarios.base import file_sha256

Split = Literal["train", "val", "test"]

SHA256 = {
    "train.csv": "498519cd8e49ce97ed26a4a3638966698ae41ab35e9c68538319fc9b46ba7d2f",
    "val.csv": "5658a59921ca027ee76af92949869c5d6f41d77592ff3b18db325a9d10c893b9",
    "test.csv": "2b7cfa78342995761a572a8158e539bc4e0a80f9bbd7d00c1e17a460fbbb93fa",
    "LICENSE": "376ee0a0dc83535320cbf7939984b31ff17a9d21ea823655202812495b784bd7",
}
"""Expected sha256 of every shipped file in `SPLIT_DIR` (also in its SHA256SUMS)."""
SPLIT_DIR = Path(__file__).resolve().parent / "data" / "miniimagenet"
N_CLASSES = {"train": 64, "val": 16, "test": 20}
PER_CLASS = 600
CACHE_FORMAT = 1
"""Bumped when decoding or resizing changes (invalidates caches)."""


def split_rows(split: Split, split_dir: Path | None = None) -> list[tuple[str, str]]:
    """(filename, wnid) rows of a split CSV, checksum-verified, in file order."""
    if split not in N_CLASSES:
        raise ValueError(f"split must be train, val or test, got {split!r}")
    root = SPLIT_DIR if split_dir is None else Path(split_dir)
    path = root / f"{split}.csv"
    if not path.exists():
        raise DataError(f"MiniImageNet split file {path} is missing; restore it with "
                        "`git checkout scenarios/data/miniimagenet` or reinstall the package")
    if split_dir is None and file_sha256(path) != SHA256[f"{split}.csv"]:
        raise DataError(f"MiniImageNet split file {path} is corrupt (sha256 mismatch, expected "
                        f"{SHA256[f'{split}.csv']}); restore it with "
                        "`git checkout scenarios/data/miniimagenet`")
    with path.open(newline="") as f:
        rows = [(r["filename"], r["label"]) for r in csv.DictReader(f)]
    return rows


@dataclass(frozen=True, eq=False)
class MiniImageNetSplit:
    """One split's images grouped by class."""

    images: Tensor
    """uint8 [n_classes, 600, H, W, 3] (decode with `.movedim(-1, -3) / 255`)."""
    wnids: tuple[str, ...]
    """WordNet ids of the classes, sorted (row i of `images`)."""
    filenames: tuple[tuple[str, ...], ...]
    """Per class, the CSV file names in the order of axis 1 (sorted)."""
    digest: str
    """sha256 of the cached uint8 array (identifies the decoded data)."""


_LAYOUT_HELP = (
    "put the MiniImageNet images under --data-dir as <data_dir>/<wnid>/<filename>.jpg or "
    "<data_dir>/images/<filename>.jpg, with the file names of the split CSVs in "
    f"{SPLIT_DIR} (e.g. n0153282900000005.jpg for class n01532829); 600 images for each of "
    "the 64 train, 16 val and 20 test classes"
)


def _find_root(data_dir: Path | None) -> Path:
    if data_dir is None:
        raise DataError(f"MiniImageNet images are not shipped (ImageNet terms): {_LAYOUT_HELP}")
    data_dir = Path(data_dir)
    for cand in (data_dir / "miniimagenet", data_dir / "mini-imagenet", data_dir):
        if cand.is_dir() and ((cand / "images").is_dir() or any(
                p.is_dir() and p.name.startswith("n") for p in cand.iterdir())):
            return cand
    raise DataError(f"no MiniImageNet images found in {data_dir}: {_LAYOUT_HELP}")


def _image_path(root: Path, filename: str, wnid: str) -> Path | None:
    for p in (root / wnid / filename, root / "images" / filename):
        if p.exists():
            return p
    return None


def _decode(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
        return np.asarray(im, dtype=np.uint8)


def _grouped(split: Split, split_dir: Path | None) -> tuple[tuple[str, ...],
                                                            tuple[tuple[str, ...], ...]]:
    """(sorted wnids, per class the sorted file names) of a split."""
    by_class: dict[str, list[str]] = {}
    for fname, wnid in split_rows(split, split_dir):
        by_class.setdefault(wnid, []).append(fname)
    wnids = tuple(sorted(by_class))
    return wnids, tuple(tuple(sorted(by_class[w])) for w in wnids)


def _listing(split: Split, image_size: int, files: tuple[tuple[str, ...], ...]) -> str:
    return hashlib.sha256(json.dumps([CACHE_FORMAT, split, image_size, files]).encode()
                          ).hexdigest()


def _write_cache(cache: Path, arr: np.ndarray, listing: str) -> str:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    data = buf.getvalue()
    atomic_write_bytes(cache, data)
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(cache.with_suffix(".json"), json.dumps(
        {"listing": listing, "sha256": digest, "shape": list(arr.shape)}).encode())
    return digest


def write_fake_cache(root: Path, image_size: int = 8, seed: int = 0) -> Path:
    """A fake MiniImageNet folder for tests and checks: random images written directly in the
    cache format for the shipped split (one empty <wnid>/ folder per class). Returns root."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        wnids, files = _grouped(split, None)  # type: ignore[arg-type]
        for w in wnids:
            (root / w).mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (len(wnids), PER_CLASS, image_size, image_size, 3),
                           dtype=np.uint8)
        cache = root / ".harness-cache" / f"miniimagenet-{split}-{image_size}.npy"
        _write_cache(cache, arr, _listing(split, image_size, files))  # type: ignore[arg-type]
    return root


def fake_data(folder: Path) -> Path:
    """A fake image set for checks: random 8x8 images in the cache format (no JPEGs), in
    `folder`/miniimagenet (the `fake_data` of the MiniImageNet scenario configs)."""
    return write_fake_cache(Path(folder) / "miniimagenet", image_size=8)


def load_miniimagenet(split: Split, data_dir: Path | None, image_size: int = 84,
                      split_dir: Path | None = None) -> MiniImageNetSplit:
    """All images of one split as uint8 [n_classes, 600, s, s, 3], classes sorted by wnid.

    `split_dir`: a folder with other split CSVs in the same format (tests, custom splits);
    every class must have the same number of images.

    Raises:
        DataError: no images under `data_dir` (the message says what to put where), or some
            listed images are missing (the first few are named).
    """
    wnids, files = _grouped(split, split_dir)
    n_per = {len(f) for f in files}
    if split_dir is None and (len(wnids) != N_CLASSES[split] or n_per != {PER_CLASS}):
        raise DataError(f"split CSV {split}.csv does not list {N_CLASSES[split]} classes x "
                        f"{PER_CLASS} images; restore scenarios/data/miniimagenet")
    if len(n_per) != 1:
        raise DataError(f"{split_dir}/{split}.csv: classes have different numbers of images")
    per_class = n_per.pop()
    root = _find_root(data_dir)
    listing = _listing(split, image_size, files)
    cache = root / ".harness-cache" / f"miniimagenet-{split}-{image_size}.npy"
    meta_path = cache.with_suffix(".json")
    if cache.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("listing") == listing and file_sha256(cache) == meta.get("sha256"):
            arr = np.load(cache, allow_pickle=False)
            return MiniImageNetSplit(torch.from_numpy(arr), wnids, files, meta["sha256"])
    paths, missing = [], []
    for w, fs in zip(wnids, files, strict=True):
        for f in fs:
            p = _image_path(root, f, w)
            if p is None:
                missing.append(f"{w}/{f}")
            paths.append(p)
    if missing:
        raise DataError(
            f"{len(missing)} of {len(paths)} MiniImageNet {split} images are missing under "
            f"{root} (first: {', '.join(missing[:3])}); {_LAYOUT_HELP}")
    arr = np.empty((len(wnids), per_class, image_size, image_size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        arr[i // per_class, i % per_class] = _decode(p, image_size)
    try:
        digest = _write_cache(cache, arr, listing)
    except OSError:
        # A read-only data folder: work from memory, decode again next time.
        digest = hashlib.sha256(arr.tobytes()).hexdigest()
    return MiniImageNetSplit(torch.from_numpy(arr), wnids, files, digest)
