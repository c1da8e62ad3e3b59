"""The `video-frames` scenario: frames of real videos, in temporal order (docs/design.md D3).

A *sequence* is one labelled run of consecutive frames: a whole video, a labelled segment of a
video (rows of a labels CSV with `start`/`end` seconds), or one `<class>/<sequence>/` folder of
frame images (the CORe50 / Stream-51 layout). Each sequence has one class label.

Inputs (`--data-dir DIR`, else the clips shipped in scenarios/data/video/, see its README.md):
  - videos: `DIR/labels.csv` with columns `file,label` and optional `start,end` (seconds; one
    row per labelled segment; other columns are ignored), `file` relative to DIR. Decoded with
    PyAV (the `video` extra, imported only here, only when a video is decoded).
  - frame tree: `DIR/<class>/<sequence>/<frame>.png|.jpg` (frames in natural name order).
Frames are centre-cropped to a square, resized to `image_size` (area interpolation), and cached
as uint8 arrays under `<cache dir>/video/`, keyed by the sha256 of the source file(s) and the
decoding parameters, with a checksum of the arrays; a bad cache entry is decoded again.

Held-out frames (per sequence, independent of the seed): `test_segments` contiguous segments
centred at (k + 0.5) / test_segments of the sequence, `test_fraction` of its frames in all;
`gap` frames on each side of every segment are used for neither training nor testing, so
neighbouring, nearly identical frames never straddle the split.

Orderings of the training frames (Roady et al. 2020, Stream-51), drawn from the seed:
  - `iid`: all training frames shuffled;
  - `class-iid`: classes in a random order, frames of a class shuffled;
  - `instance`: sequences in a random order, frames of each in temporal order;
  - `class-instance`: classes in a random order, then that class's sequences in a random order,
    frames in temporal order.
Experiences: one per sequence (`instance`, and `iid` cut in as many equal chunks) or one per
class (`class-*`), merged into `n_experiences` groups when that is set. An experience's test set
is the held-out frames of the sequences it trains on; an `iid` chunk trains on every sequence,
so its test set is an interleaved 1/n share of every sequence's held-out frames. Every ordering
is scored on the same held-out frames.

Validation stream (hyper-parameter selection): the first `val_fraction` of every sequence,
followed by `gap` unused frames, is set aside; the scored stream uses only the rest. The
validation stream is built from the set-aside frames the same way (one held-out segment per
sequence), ordered with a seed derived from the run's seed, so it shares no frame with the
scored stream.

Pre-training pool (`meta_train`, for `pretrain`/`slda`-style learners): Omniglot background
characters, classes disjoint from any video (Stream-51 pre-trains on ImageNet); `pretrain_pool=
none` drops it. Per-video metrics: `VideoFrames.test_groups` names the video of every held-out
frame, from which the harness reports `acc_sequence_macro` and `acc_sequence_majority`
(`harness.metrics.group_metrics`).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from harness.config import default_cache_dir
from harness.errors import DataError, HarnessError
from harness.fileio import atomic_write_bytes
from harness.protocol import Experience, LabeledPool, ScenarioSpec
from scenarios.base import (
    BuiltScenario,
    ScenarioConfig,
    bounded,
    derive_seed,
    generator,
    one_of,
)
from scenarios.base import file_sha256 as _file_sha256

Ordering = Literal["iid", "class-iid", "instance", "class-instance"]
ORDERINGS: tuple[str, ...] = ("iid", "class-iid", "instance", "class-instance")

DATA_DIR = Path(__file__).resolve().parent / "data" / "video"
"""The shipped clips (see data/video/README.md for origins and licences)."""
LABELS_CSV = "labels.csv"
VIDEO_SUFFIXES = (".mp4", ".avi", ".gif", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
DECODER_VERSION = 1
"""Bumped when decoding/resizing changes, so old cache entries are not reused."""


# -- files and checksums ----------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return _file_sha256(Path(path))


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (memoized per process by path, size and mtime)."""
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


def shipped_checksums() -> dict[str, str]:
    """name -> sha256 from data/video/SHA256SUMS."""
    sums = DATA_DIR / "SHA256SUMS"
    if not sums.is_file():
        raise DataError(f"{sums} is missing; restore the shipped clips with "
                        "`git checkout scenarios/data/video` or reinstall the package")
    out = {}
    for line in sums.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.strip()] = digest
    return out


def verify_shipped() -> None:
    """Check every shipped file against SHA256SUMS; a missing or corrupt one is a DataError."""
    for name, expected in shipped_checksums().items():
        path = DATA_DIR / name
        if not path.is_file():
            raise DataError(f"shipped video file {path} is missing; restore it with "
                            "`git checkout scenarios/data/video` or reinstall the package")
        got = file_sha256(path)
        if got != expected:
            raise DataError(f"shipped video file {path} is corrupt (sha256 {got}, expected "
                            f"{expected}); restore it with `git checkout scenarios/data/video`")


# -- sources ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceSource:
    """Where one labelled sequence comes from."""

    label: str
    name: str
    """Unique, human-readable name (file or folder, plus the segment if any)."""
    path: Path
    """A video file, or a folder of frame images."""
    start: float | None = None
    """Segment start in seconds (videos only); None = from the beginning."""
    end: float | None = None
    """Segment end in seconds (videos only); None = to the end."""


def _natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _float_or_none(value: str | None, what: str) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{what}: {value!r} is not a number of seconds") from None


def read_labels_csv(root: Path) -> list[SequenceSource]:
    """Sequences listed in `root/labels.csv` (`file,label[,start,end]`)."""
    path = root / LABELS_CSV
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"file", "label"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path} lacks the column(s) {', '.join(sorted(missing))}; the "
                            "header must be `file,label` (optionally `,start,end` in seconds)")
        rows = list(reader)
    if not rows:
        raise DataError(f"{path} lists no videos; add rows `file,label`")
    out = []
    for k, row in enumerate(rows, start=2):
        file, label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
        if not file or not label:
            raise DataError(f"{path} line {k}: `file` and `label` must both be set")
        video = root / file
        if not video.is_file():
            raise DataError(f"{path} line {k}: video {video} does not exist; paths in "
                            f"{LABELS_CSV} are relative to {root}")
        start = _float_or_none(row.get("start"), f"{path} line {k} start")
        end = _float_or_none(row.get("end"), f"{path} line {k} end")
        if start is not None and end is not None and end <= start:
            raise DataError(f"{path} line {k}: end ({end}) must be after start ({start})")
        name = file if start is None and end is None else f"{file}[{start or 0:g}-{end or ''}]"
        out.append(SequenceSource(label=label, name=name, path=video, start=start, end=end))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise DataError(f"{path} lists the same file/segment twice; each row must be unique")
    return out


def read_frame_tree(root: Path) -> list[SequenceSource]:
    """Sequences of a `<class>/<sequence>/<frame>.png` tree (sorted, natural order)."""
    out = []
    for cls in sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.name):
        for seq in sorted((d for d in cls.iterdir() if d.is_dir()),
                          key=lambda d: _natural_key(d.name)):
            if any(f.suffix.lower() in IMAGE_SUFFIXES for f in seq.iterdir()):
                out.append(SequenceSource(label=cls.name, name=f"{cls.name}/{seq.name}",
                                          path=seq))
    return out


def _layout_help(root: Path) -> str:
    return (f"put either a `{LABELS_CSV}` (columns file,label[,start,end]) next to the videos "
            f"in {root}, or frame images as {root}/<class>/<sequence>/<frame>.png")


def discover(data_dir: Path | None) -> tuple[list[SequenceSource], str]:
    """The sequences under `data_dir` (None: the shipped clips) and a short source label."""
    if data_dir is None:
        verify_shipped()
        return read_labels_csv(DATA_DIR), "shipped"
    root = Path(data_dir).expanduser().resolve()
    if (root / "video").is_dir() and not (root / LABELS_CSV).is_file():
        root = root / "video"
    if not root.is_dir():
        raise DataError(f"video data folder {root} does not exist; {_layout_help(root)}")
    if (root / LABELS_CSV).is_file():
        sources = read_labels_csv(root)
    else:
        sources = read_frame_tree(root)
    if not sources:
        raise DataError(f"no videos or frame sequences found in {root}; {_layout_help(root)}")
    return sources, str(root)


# -- decoding and the cache -------------------------------------------------------------------


def _import_av():
    try:
        import av  # noqa: PLC0415 (optional dependency, imported only when decoding)
    except ImportError:
        raise HarnessError("decoding videos needs PyAV: pip install -e '.[video]' (or use a "
                           "<class>/<sequence>/<frame>.png tree, which needs no decoder)") from None
    return av


def _crop_square(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return a[top : top + s, left : left + s]


def _scaled_size(w: int, h: int, size: int) -> tuple[int, int]:
    """(w, h) with the short side = size, aspect kept (for a centre crop afterwards)."""
    if w <= h:
        return size, max(size, round(h * size / w))
    return max(size, round(w * size / h)), size


def select_by_rate(times: np.ndarray, fps: float) -> np.ndarray:
    """Indices keeping at most one frame per 1/fps interval (the first one); fps 0 keeps all."""
    if fps <= 0 or len(times) == 0:
        return np.arange(len(times))
    bins = np.floor(times * fps + 1e-6).astype(np.int64)
    keep = np.ones(len(times), dtype=bool)
    keep[1:] = bins[1:] != bins[:-1]
    return np.flatnonzero(keep)


def _decode_video(path: Path, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All coded frames of `path`: uint8 [N, s, s, 3] and their times in seconds [N]."""
    av = _import_av()
    frames, times = [], []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for k, frame in enumerate(container.decode(stream)):
                w, h = _scaled_size(frame.width, frame.height, image_size)
                rgb = frame.reformat(width=w, height=h, format="rgb24",
                                     interpolation="AREA").to_ndarray()
                frames.append(_crop_square(rgb))
                t = frame.time
                rate = float(stream.average_rate or 25)
                times.append(float(t) if t is not None else k / rate)
    except (av.error.FFmpegError, IndexError) as e:
        raise DataError(f"cannot decode video {path} ({e}); check that it is a valid video "
                        "file that FFmpeg reads") from None
    if not frames:
        raise DataError(f"video {path} has no decodable frames")
    return np.stack(frames), np.asarray(times, dtype=np.float64)


def _image_files(folder: Path) -> list[Path]:
    files = [f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda f: _natural_key(f.name))


def _decode_tree_sequence(folder: Path, image_size: int) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415

    out = []
    for f in _image_files(folder):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                w, h = _scaled_size(im.width, im.height, image_size)
                out.append(_crop_square(np.asarray(im.resize((w, h), Image.BOX))))
        except OSError as e:
            raise DataError(f"cannot read frame image {f} ({e}); replace or remove it") from None
    return np.stack(out)


def source_hash(src: SequenceSource) -> str:
    """sha256 of the source's bytes: the video file, or every frame file of a folder in order."""
    if src.path.is_file():
        return file_sha256(src.path)
    h = hashlib.sha256()
    for f in _image_files(src.path):
        h.update(f.name.encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def _cache_path(cache_dir: Path, digest: str, image_size: int) -> Path:
    return cache_dir / "video" / f"{digest[:32]}-s{image_size}-d{DECODER_VERSION}.npz"


def _array_checksum(frames: np.ndarray, times: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(f"{frames.shape}{frames.dtype}".encode())
    h.update(np.ascontiguousarray(frames).tobytes())
    h.update(np.ascontiguousarray(times).tobytes())
    return h.hexdigest()


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, or None if absent or failing their checksum (then re-decoded)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            frames, times = z["frames"], z["times"]
            meta = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    if meta.get("checksum") != _array_checksum(frames, times):
        return None
    return frames, times


def load_sequence_frames(
    src: SequenceSource, image_size: int, cache_dir: Path | None = None, use_cache: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Decoded frames of a whole source (before segment/rate selection), from the cache if there.

    Returns uint8 [N, s, s, 3] frames and float64 [N] times in seconds (frame index / 30 for a
    folder tree, whose true rate is unknown).
    """
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    digest = source_hash(src)
    path = _cache_path(cache_dir, digest, image_size)
    if use_cache:
        hit = _read_cache(path)
        if hit is not None:
            return hit
    if src.path.is_file():
        frames, times = _decode_video(src.path, image_size)
    else:
        frames = _decode_tree_sequence(src.path, image_size)
        times = np.arange(len(frames), dtype=np.float64) / 30.0
    if use_cache:
        meta = {"checksum": _array_checksum(frames, times), "source": str(src.path),
                "source_sha256": digest, "image_size": image_size,
                "decoder_version": DECODER_VERSION}
        buf = io.BytesIO()
        np.savez(buf, frames=frames, times=times, meta=np.asarray(json.dumps(meta)))
        try:
            atomic_write_bytes(path, buf.getvalue())
        except OSError:
            pass  # a read-only cache only costs speed; the decoded frames are still correct
    return frames, times


def sequence_frames(
    src: SequenceSource, image_size: int, fps: float, max_frames: int,
    cache_dir: Path | None = None, use_cache: bool = True,
) -> np.ndarray:
    """The sequence's frames after the segment cut, rate selection and the `max_frames` cap."""
    frames, times = load_sequence_frames(src, image_size, cache_dir, use_cache)
    keep = np.ones(len(times), dtype=bool)
    if src.start is not None:
        keep &= times >= src.start
    if src.end is not None:
        keep &= times < src.end
    idx = np.flatnonzero(keep)
    idx = idx[select_by_rate(times[idx], fps)]
    if max_frames and len(idx) > max_frames:
        idx = idx[np.linspace(0, len(idx) - 1, max_frames).round().astype(np.int64)]
    if len(idx) == 0:
        raise DataError(f"sequence {src.name} has no frames in its segment "
                        f"[{src.start}, {src.end}) s")
    return frames[idx]


def write_frame_tree(root: Path, n_classes: int = 3, seqs_per_class: int = 2,
                     n_frames: int = 40, size: int = 12) -> Path:
    """Write a synthetic `<class>/<sequence>/<frame>.png` tree (for tests and smoke runs).

    Class c has its own grey level; a bright bar moves one column per frame and the top rows
    encode the frame index, so every frame is distinct and consecutive frames are similar.
    """
    from PIL import Image  # noqa: PLC0415

    for c in range(n_classes):
        for s in range(seqs_per_class):
            d = root / f"class{c}" / f"seq{s}"
            d.mkdir(parents=True, exist_ok=True)
            for t in range(n_frames):
                a = np.full((size, size + 4, 3), (60 + 60 * c + 10 * s) % 256, dtype=np.uint8)
                a[:, t % (size + 4), :] = 255
                a[:2, :, 1] = (6 * t) % 256
                Image.fromarray(a).save(d / f"frame{t}.png")  # natural order: 2 < 10
    return root


# -- held-out segments ------------------------------------------------------------------------


def split_held_out(
    n: int, test_fraction: float, test_segments: int, gap: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) frame indices of a sequence of `n` frames; see the module docstring.

    Raises ValueError when the sequence is too short to leave training frames.
    """
    n_test = max(test_segments, int(round(n * test_fraction)))
    lengths = [n_test // test_segments + (k < n_test % test_segments)
               for k in range(test_segments)]
    test = np.zeros(n, dtype=bool)
    blocked = np.zeros(n, dtype=bool)
    for k, length in enumerate(lengths):
        centre = (k + 0.5) * n / test_segments
        start = int(min(max(round(centre - length / 2), 0), n - length))
        test[start : start + length] = True
        blocked[max(start - gap, 0) : start + length + gap] = True
    train = ~blocked
    if n_test >= n or not train.any():
        raise ValueError(f"{n} frames are too few for test_fraction={test_fraction}, "
                         f"test_segments={test_segments} and gap={gap}")
    return np.flatnonzero(train), np.flatnonzero(test)


# -- the scenario -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VideoFrames(BuiltScenario):
    """A built `video-frames`: also publishes classes, sequences and per-frame sequence ids."""

    ordering: str = "instance"
    """The training-frame ordering (also in `params`); results separate orderings by it."""
    class_names: tuple[str, ...] = ()
    """Label k is class_names[k] (sorted)."""
    sequence_names: tuple[str, ...] = ()
    """Sequence id k is sequence_names[k] (sorted by class, then name)."""
    test_sequence_ids: tuple[Tensor, ...] = field(default=(), repr=False)
    """Per scored experience, the sequence id of every held-out frame (aligned with y_test)."""
    train_sequence_ids: tuple[Tensor, ...] = field(default=(), repr=False)
    """Per scored experience, the sequence id of every training frame (aligned with y)."""

    @property
    def variant(self) -> str:
        """Short name that separates results of different orderings (e.g. on a leaderboard)."""
        return self.ordering

    @property
    def test_groups(self) -> Tensor:
        """The sequence id of every held-out frame over all scored experiences, in order: the
        harness reports per-video accuracy from them (`harness.metrics.group_metrics`)."""
        return torch.cat(list(self.test_sequence_ids))


@dataclass(frozen=True)
class VideoFramesConfig(ScenarioConfig):
    """Frames of real videos in temporal order, one label per video/segment (Stream-51 style)."""

    ordering: Ordering = one_of("instance", ORDERINGS)
    """Training-frame order: iid, class-iid, instance or class-instance (see module doc)."""
    image_size: int = bounded(32, ge=8, le=512)
    """Side of the square (centre-cropped) frames."""
    fps: float = bounded(0.0, ge=0)
    """Frames per second kept (at most one per 1/fps interval); 0 keeps every coded frame."""
    max_frames: int = bounded(150, ge=0)
    """Cap on frames per sequence after rate selection, kept evenly in time; 0 = no cap."""
    test_fraction: float = bounded(0.25, gt=0, lt=1)
    """Fraction of each sequence's frames held out for testing (0 < f < 1)."""
    test_segments: int = bounded(2, ge=1)
    """Number of contiguous held-out segments per sequence, spread evenly in time."""
    gap: int = bounded(2, ge=0)
    """Frames on each side of a held-out segment used for neither training nor testing."""
    val_fraction: float = bounded(0.2, ge=0, lt=1)
    """Leading fraction of each sequence set aside for the validation stream (0 = none)."""
    pretrain_pool: Literal["omniglot", "none"] = one_of("omniglot", ("omniglot", "none"))
    """Meta-/pre-training pool with classes disjoint from the videos (as Stream-51 pre-trains
    on ImageNet): 'omniglot' = the first `pretrain_classes` Omniglot background characters
    (shipped), grey replicated to RGB and resized; 'none' = no pool."""
    pretrain_classes: int = bounded(100, ge=1, le=964)
    """Omniglot background characters in the pool (20 drawings each; 1..964)."""
    n_experiences: int = bounded(0, ge=0)
    """Merge consecutive sequences (or classes) into this many experiences; 0 = one each."""
    batch_size: int = bounded(1, ge=1)
    """Training batch size of the stream."""

    ID = "video-frames"
    VERSION = 1
    VARIANTS = {o: {"ordering": o} for o in ("iid", "instance", "class-instance")}
    """Named parameter sets whose results a comparison reports side by side."""
    SMOKE = {"image_size": 8, "pretrain_pool": "none"}
    """Small parameters for conformance checks (with `fake_data`)."""

    @staticmethod
    def fake_data(root: Path) -> Path:
        """A tiny `<class>/<sequence>/<frame>.png` tree under `root` (needs no decoder)."""
        return write_frame_tree(Path(root) / "video-frames")

    # -- construction --

    def _order(
        self, seq_frames: Sequence[np.ndarray], seq_class: np.ndarray, g: torch.Generator
    ) -> list[tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]]:
        """Blocks of the training stream: (sequence ids, frame indices, test shares).

        A test share (k, j, m) is every m-th held-out frame of sequence k starting at j. For
        instance orderings a block is one sequence, tested on that sequence; for class
        orderings one class, tested on its sequences; for `iid` one of n_sequences equal
        chunks, tested on the j-th of n interleaved shares of every sequence's held-out frames
        (an iid chunk holds every class, so its test set does too).
        """
        n_seq = len(seq_frames)
        seq_ids = [np.full(len(f), k) for k, f in enumerate(seq_frames)]
        frame_idx = [np.arange(len(f)) for f in seq_frames]
        if self.ordering == "iid":
            sid, fid = np.concatenate(seq_ids), np.concatenate(frame_idx)
            perm = torch.randperm(len(sid), generator=g).numpy()
            return [(sid[p], fid[p], [(k, j, n_seq) for k in range(n_seq)])
                    for j, p in enumerate(np.array_split(perm, n_seq))]
        if self.ordering == "instance":
            return [(seq_ids[k], frame_idx[k], [(k, 0, 1)])
                    for k in torch.randperm(n_seq, generator=g).tolist()]
        blocks = []
        for c in torch.randperm(int(seq_class.max()) + 1, generator=g).tolist():
            members = np.flatnonzero(seq_class == c).tolist()
            if self.ordering == "class-iid":
                sid = np.concatenate([seq_ids[k] for k in members])
                fid = np.concatenate([frame_idx[k] for k in members])
                perm = torch.randperm(len(sid), generator=g).numpy()
                blocks.append((sid[perm], fid[perm], [(k, 0, 1) for k in members]))
            else:  # class-instance
                for j in torch.randperm(len(members), generator=g).tolist():
                    k = members[j]
                    blocks.append((seq_ids[k], frame_idx[k], [(k, 0, 1)]))
        return blocks

    def _stream(
        self, frames: list[np.ndarray], labels: np.ndarray, parts: list[tuple[np.ndarray,
        np.ndarray]], g: torch.Generator, prefix: str,
    ) -> tuple[list[Experience], list[Tensor], list[Tensor]]:
        """Experiences over `frames` (per sequence) split into (train, test) index `parts`."""
        train_frames = [frames[k][tr] for k, (tr, _) in enumerate(parts)]
        blocks = self._order(train_frames, labels, g)
        if self.n_experiences and self.n_experiences < len(blocks):
            groups = [a.tolist() for a in np.array_split(np.arange(len(blocks)),
                                                         self.n_experiences)]
        else:
            groups = [[b] for b in range(len(blocks))]

        def to_x(a: np.ndarray) -> Tensor:
            return torch.from_numpy(a).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)

        exps, test_ids, train_ids = [], [], []
        for i, group in enumerate(groups):
            sid = np.concatenate([blocks[b][0] for b in group])
            fid = np.concatenate([blocks[b][1] for b in group])
            shares = sorted({t for b in group for t in blocks[b][2]})
            x = np.stack([train_frames[s][f] for s, f in zip(sid, fid, strict=True)])
            test_idx = [(k, parts[k][1][j::m]) for k, j, m in shares]
            x_test = np.concatenate([frames[k][idx] for k, idx in test_idx])
            t_ids = np.concatenate([np.full(len(idx), k) for k, idx in test_idx])
            classes = tuple(sorted({int(labels[s]) for s in sid}))
            exps.append(Experience(
                x=to_x(x), y=torch.from_numpy(labels[sid]).long(),
                x_test=to_x(x_test), y_test=torch.from_numpy(labels[t_ids]).long(),
                batch_size=self.batch_size, task_id=i, classes=classes,
                name=f"{prefix}{self.ordering} {i}: classes {','.join(map(str, classes))}",
            ))
            test_ids.append(torch.from_numpy(t_ids).long())
            train_ids.append(torch.from_numpy(sid).long())
        return exps, test_ids, train_ids

    def _split(self, n: int, name: str, segments: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        try:
            return split_held_out(n, self.test_fraction, segments or self.test_segments,
                                  self.gap)
        except ValueError as e:
            raise DataError(f"sequence {name}: {e}; lower them (--set test_fraction=..., "
                            "gap=...) or use longer videos / a higher fps") from None

    def _pretrain_pool(self) -> LabeledPool | None:
        """The first `pretrain_classes` Omniglot background characters as RGB images."""
        if self.pretrain_pool == "none":
            return None
        from scenarios.omniglot import N_DRAWINGS, load_omniglot  # noqa: PLC0415

        images, _ = load_omniglot("background", self.image_size)
        s, n = self.image_size, self.pretrain_classes
        x = images[:n].reshape(-1, 1, s, s).expand(-1, 3, -1, -1).contiguous()
        return LabeledPool(x=x, y=torch.arange(n).repeat_interleave(N_DRAWINGS), n_classes=n,
                           name=f"omniglot-background-{n}")

    def build(self, seed: int, data_dir: Path | None = None,
              cache_dir: Path | None = None) -> VideoFrames:
        """The stream for `seed` over `data_dir` (None: the shipped clips)."""
        sources, origin = discover(data_dir)
        sources = sorted(sources, key=lambda s: (s.label, _natural_key(s.name)))
        class_names = tuple(sorted({s.label for s in sources}))
        labels = np.array([class_names.index(s.label) for s in sources], dtype=np.int64)
        whole = [sequence_frames(s, self.image_size, self.fps, self.max_frames, cache_dir)
                 for s in sources]
        # The leading val_fraction of each sequence (then a gap) is the validation material.
        n_val = [int(round(len(f) * self.val_fraction)) for f in whole]
        frames = [f[k + self.gap if k else 0 :] for f, k in zip(whole, n_val, strict=True)]
        parts = [self._split(len(f), s.name) for f, s in zip(frames, sources, strict=True)]
        experiences, test_ids, train_ids = self._stream(frames, labels, parts,
                                                        generator(seed), "")
        val_experiences: list[Experience] = []
        if self.val_fraction > 0:
            val_frames = [f[:k] for f, k in zip(whole, n_val, strict=True)]
            val_parts = [self._split(len(f), s.name + " (validation part)", segments=1)
                         for f, s in zip(val_frames, sources, strict=True)]
            val_experiences, _, _ = self._stream(val_frames, labels, val_parts,
                                                 generator(derive_seed(seed, "val")), "val ")
        data_hash = hashlib.sha256("".join(
            f"{s.name}:{s.label}:{s.start}:{s.end}:{source_hash(s)};" for s in sources
        ).encode()).hexdigest()[:16]
        spec = ScenarioSpec(input_shape=(3, self.image_size, self.image_size),
                            n_outputs=len(class_names))
        return self.built(
            VideoFrames, seed, spec=spec,
            experiences=experiences, val_experiences=val_experiences,
            meta_train=self._pretrain_pool(),
            extra_params={"data": origin, "data_hash": data_hash, "variant": self.ordering},
            ordering=self.ordering, class_names=class_names,
            sequence_names=tuple(s.name for s in sources),
            test_sequence_ids=tuple(test_ids), train_sequence_ids=tuple(train_ids),
        )
