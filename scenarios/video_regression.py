"""Regression streams from real video (docs/design.md D3): `video-nextframe` and
`video-egomotion`.

Frames come from the loaders of `video-frames` (scenarios/video.py): the shipped clips by
default, or `--data-dir` with videos and a `labels.csv`, or a `<class>/<sequence>/<frame>.png`
tree. Labels are not used here. A clip is one sequence, named by its video's file stem (plus
`[start-end]` for a labelled segment of it) or `<class>-<sequence>` for a frame tree; two
clips of one name are a DataError. Frames are centre-cropped, resized (area interpolation) and
made grey with equal weights, (R + G + B) / 3, float32 in [0, 1]. Only the clips a scenario
uses are decoded.

`video-nextframe`: predict the frame `k` steps ahead from the current one. Each scored clip
(`clips`, in order) is cut by frame index into a leading `val_fraction` (the validation
stream), a trailing `test_fraction` (the held-out test segment) and the middle (the scored
stream), `gap` frames left unused between the parts; a sample (x = frame t [1, S, S], y =
frame t + k flattened [S*S]) belongs to a part when both of its frames do, so the parts share
no frame. One experience per clip, in temporal order, batch 1, tested on that clip's held-out
segment (validation experiences: no test set); where one clip ends and the next starts is a
regime change (`change_points`). Persistence (`spec.persistence`) is the current frame. The
stream is the same for every seed. Targets are revealed right after each prediction, as in
every stream of the harness: with k > 1 a learner has seen frame t + k - 1 when it predicts
t + k. A scored clip too short for its three parts is an error naming it.

`video-egomotion`: camera-motion regression with exact ground truth. A virtual camera, a
square window of side `crop` x exp(z) pixels on frames decoded at `frame_size`, moves over a
clip while the clip plays (one frame a step, back and forth at its ends, so there is no jump).
Its motion per step (dx, dy, dz) is a regime velocity, redrawn from the seed every
`regime_length` steps (dx, dy uniform in +-`speed` window sides, dz in +-`speed` / 4), plus
Gaussian jitter of `jitter` times that scale per component, so the last motion predicts the
next one poorly; a step that would leave the frame (or the log-zoom range [-0.5, 0.3]) is
reflected (and stopped at the limit if it still overshoots); the target is the motion
applied. Sample t: x = the windows at steps t and t + 1, resized to `image_size` (bilinear)
and stacked [2, S, S]; y = (dx, dy, zoom) (`output_names`): dx, dy in pixels of the input at
zoom 0 (one is `crop` / `image_size` frame pixels), positive when the window moves right /
down (the content shifts left / up); zoom = 100 dz, dz the change of the window's log side
(about the percent it grows; positive: zooming out). With the defaults a regime moves up to
1.6 px and 1.25 % a step, and the jitter's standard deviations are 0.8 px and 0.625 %. The
scene's own motion between frames shows in the windows too; the target is the camera's alone.
Each scored clip is cut as in `video-nextframe` (one frame between the parts): the scored path
runs over the middle frames and is drawn from the run seed, the validation path over the
leading `val_fraction` (seed derived 'val'), the test path over the trailing `test_fraction`
(seed derived 'test'). With several clips, a path's steps are cut into equal consecutive
blocks, one per clip in order, each playing its clip: the camera moves on across the cut, and
no sample pairs frames of two clips. One experience; the regime starts inside it are
`change_points`. No persistence in the input: the harness's persistence is the last target.

Meta-training (`meta_train`, both scenarios): a `TaskSampler` over `meta_clips` (default:
every clip not scored; never a scored one): one task is `meta_length` consecutive samples of
a random meta clip from a random start (egomotion: a fresh path), its test set the
max(1, meta_length // 4) samples after them. A `video-nextframe` task needs meta_length +
max(1, meta_length // 4) + k frames: a clip named in `meta_clips` that has fewer is an error,
one of the default set is left out. No meta clip: `meta_train` is None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from harness.errors import DataError, HarnessError
from harness.protocol import Experience, ScenarioSpec
from scenarios.base import BuiltScenario, ScenarioConfig, bounded, derive_seed, generator
from scenarios.video import SequenceSource, discover, sequence_frames, write_frame_tree

ZOOM_RANGE = (-0.5, 0.3)
"""Log-zoom limits of the egomotion window."""


def clip_name(src: SequenceSource) -> str:
    """A clip's name: its video's file stem (plus a labelled segment's `[start-end]`), or
    `<class>-<sequence>` for a frame tree."""
    if src.path.is_dir():
        return src.name.replace("/", "-")
    segment = src.start is not None or src.end is not None
    return src.path.stem + (src.name[src.name.rfind("[") :] if segment else "")


def clip_sources(data_dir: Path | None) -> dict[str, SequenceSource]:
    """name -> source of every discovered clip (None: the shipped clips)."""
    out: dict[str, SequenceSource] = {}
    for src in discover(data_dir)[0]:
        name = clip_name(src)
        if name in out:
            raise DataError(f"{out[name].name} and {src.name} are both clip {name!r}; rename one "
                            "of them")
        out[name] = src
    return out


def grey_frames(src: SequenceSource, size: int, cache_dir: Path | None) -> Tensor:
    """float32 [N, size, size] grey frames in [0, 1]: (R + G + B) / 3."""
    frames = sequence_frames(src, size, 0.0, 0, cache_dir)
    return torch.from_numpy(frames.astype(np.float32).mean(axis=3) / 255.0)


def choose(names: str, available: dict[str, SequenceSource], what: str) -> list[str]:
    """The clip names of a comma-separated `what` parameter, each checked to exist."""
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    listing = ", ".join(sorted(available))
    if not chosen:
        raise HarnessError(f"{what} names no clip; name one or more of {listing}")
    for n in chosen:
        if n not in available:
            raise HarnessError(f"no clip {n!r} for {what}; the clips are {listing}")
    if len(set(chosen)) < len(chosen):
        raise HarnessError(f"{what} names a clip twice; name each once")
    return chosen


def meta_names(cfg: VideoNextFrameConfig | VideoEgomotionConfig,
               sources: dict[str, SequenceSource], scored: list[str]) -> list[str]:
    """The meta-training clips: `meta_clips`, or every clip not scored; never a scored one."""
    if not cfg.meta_clips.strip():
        return [n for n in sorted(sources) if n not in scored]
    chosen = choose(cfg.meta_clips, sources, "meta_clips")
    both = sorted(set(chosen) & set(scored))
    if both:
        raise HarnessError(f"meta_clips and clips share {', '.join(both)}; meta-training must "
                           "never see a scored clip")
    return chosen


def parts(n: int, val_fraction: float, test_fraction: float, gap: int) -> list[range]:
    """Frame ranges of the validation, scored and test parts of an n-frame clip."""
    n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
    return [range(0, n_val), range(n_val + gap, n - n_test - gap), range(n - n_test, n)]


@dataclass(frozen=True, eq=False)
class VideoRegression(BuiltScenario):
    """A built video regression scenario: also where its regimes change (RegimeChanges)."""

    change_points: tuple[int, ...] = ()
    """Sample indices of the scored stream where a new clip (nextframe) or a new velocity
    regime (egomotion) starts."""


# -- video-nextframe --------------------------------------------------------------------------


def frame_pairs(frames: Tensor, part: range, k: int) -> tuple[Tensor, Tensor]:
    """x = frame t [1, S, S] and y = frame t + k flattened, for t, t + k in `part`."""
    t = torch.arange(part.start, max(part.start, part.stop - k))
    return frames[t].unsqueeze(1).contiguous(), frames[t + k].flatten(1).contiguous()


@dataclass(frozen=True)
class FrameTaskSampler:
    """Meta-training tasks of `video-nextframe` (module docstring)."""

    clips: tuple[Tensor, ...]
    k: int
    length: int

    def sample(self, generator: torch.Generator) -> list[Experience]:
        frames = self.clips[int(torch.randint(len(self.clips), (1,), generator=generator))]
        q = max(1, self.length // 4)
        n = self.length + q + self.k
        start = int(torch.randint(len(frames) - n + 1, (1,), generator=generator))
        x, y = frame_pairs(frames, range(start, start + n), self.k)
        return [Experience(x=x[: self.length], y=y[: self.length], x_test=x[self.length :],
                           y_test=y[self.length :])]


@dataclass(frozen=True)
class VideoNextFrameConfig(ScenarioConfig):
    """Online prediction of the frame k steps ahead (module docstring)."""

    clips: str = "cockatoo,bigbuckbunny"
    """Scored clips, comma-separated, in stream order."""
    meta_clips: str = ""
    """Clips for meta-training; '' = every clip not scored."""
    k: int = bounded(1, ge=1, le=100)
    """Frames ahead."""
    image_size: int = bounded(32, ge=8, le=128)
    """Side of the grey frames."""
    val_fraction: float = bounded(0.2, gt=0.0, lt=1.0)
    """Leading share of each clip's frames for the validation stream."""
    test_fraction: float = bounded(0.2, gt=0.0, lt=1.0)
    """Trailing share of each clip's frames held out as its test segment."""
    gap: int = bounded(1, ge=0)
    """Frames left unused between the parts."""
    meta_length: int = bounded(16, ge=2, le=10_000)
    """Samples per meta-training task."""

    ID = "video-nextframe"
    VERSION = 1
    FIXED_STREAM = True
    """The stream is the same for every seed (frames or values in temporal order); seeds vary
    the learners' initialisation and meta-training."""
    SMOKE = {"clips": "class0-seq0", "image_size": 8, "meta_length": 4}
    """Small parameters for conformance checks (with `fake_data`)."""

    @staticmethod
    def fake_data(root: Path) -> Path:
        """A tiny frame tree under `root` (needs no decoder)."""
        return write_frame_tree(Path(root) / "video", n_classes=2, seqs_per_class=1,
                                n_frames=30)

    def task_frames(self) -> int:
        """Frames one meta-training task spans."""
        return self.meta_length + max(1, self.meta_length // 4) + self.k

    def build(self, seed: int, data_dir: Path | None = None,
              cache_dir: Path | None = None) -> VideoRegression:
        """The stream (the same for every seed: frames are in temporal order)."""
        sources = clip_sources(data_dir)
        scored = choose(self.clips, sources, "clips")
        exps, vals, changes, seen = [], [], [], 0
        for name in scored:
            frames = grey_frames(sources[name], self.image_size, cache_dir)
            cut = parts(len(frames), self.val_fraction, self.test_fraction, self.gap)
            pairs = [frame_pairs(frames, p, self.k) for p in cut]
            if min(len(x) for x, _ in pairs) < 1:
                raise HarnessError(f"clip {name!r} ({len(frames)} frames) is too short for "
                                   f"k={self.k}, gap={self.gap}, val_fraction="
                                   f"{self.val_fraction} and test_fraction={self.test_fraction};"
                                   " lower them or drop the clip")
            (xv, yv), (x, y), (xt, yt) = pairs
            exps.append(Experience(x=x, y=y, x_test=xt, y_test=yt, task_id=len(exps),
                                   name=name))
            vals.append(Experience(x=xv, y=yv, x_test=xt[:0], y_test=yt[:0],
                                   task_id=len(vals), name=f"val {name}"))
            if seen:
                changes.append(seen)
            seen += len(x)
        meta = []
        for name in meta_names(self, sources, scored):
            frames = grey_frames(sources[name], self.image_size, cache_dir)
            if len(frames) >= self.task_frames():
                meta.append(frames)
            elif self.meta_clips.strip():
                raise HarnessError(f"meta clip {name!r} ({len(frames)} frames) is shorter than "
                                   f"one task ({self.task_frames()} frames); lower meta_length "
                                   "or drop the clip")
        s = self.image_size
        return self.built(
            VideoRegression, seed,
            spec=ScenarioSpec(input_shape=(1, s, s), n_outputs=s * s, task="regression",
                              persistence=tuple(range(s * s))),
            experiences=exps, val_experiences=vals,
            meta_train=FrameTaskSampler(tuple(meta), self.k, self.meta_length) if meta else None,
            change_points=tuple(changes),
        )


# -- video-egomotion --------------------------------------------------------------------------


def camera_path(steps: int, g: torch.Generator, half: float, regime_length: int, speed: float,
                jitter: float) -> tuple[Tensor, Tensor]:
    """Poses [steps + 1, 3] (cx, cy in normalised frame coordinates, -1..1; log-zoom z) and
    the regime starts. `speed` is in window sides at zoom 0 (2 * half) per step."""
    poses = torch.zeros(steps + 1, 3, dtype=torch.float64)
    side = 2 * half
    scale = torch.tensor([speed, speed, speed / 4], dtype=torch.float64)
    starts, v = [], torch.zeros(3, dtype=torch.float64)
    for t in range(steps):
        if t % regime_length == 0:
            v = (torch.rand(3, generator=g, dtype=torch.float64) * 2 - 1) * scale
            starts.append(t)
        m = v + jitter * scale * torch.randn(3, generator=g, dtype=torch.float64)
        step = m * torch.tensor([side, side, 1.0], dtype=torch.float64)
        new = poses[t] + step
        h = half * torch.exp(new[2])
        for i in range(2):
            if abs(float(new[i])) > 1 - h:  # reflect at the frame's border
                step[i], v[i] = -step[i], -v[i]
        if not ZOOM_RANGE[0] <= float(new[2]) <= ZOOM_RANGE[1]:
            step[2], v[2] = -step[2], -v[2]
        poses[t + 1] = poses[t] + step
        poses[t + 1, 2] = poses[t + 1, 2].clamp(*ZOOM_RANGE)  # a reflected step can overshoot
        h = half * torch.exp(poses[t + 1, 2])
        poses[t + 1, :2] = poses[t + 1, :2].clamp(-1 + h, 1 - h)
    return poses, torch.tensor(starts)


def crops(frames: Tensor, poses: Tensor, half: float, size: int) -> Tensor:
    """Windows [len(poses), size, size] of `frames` [len(poses), F, F] at `poses`, all in one
    batched bilinear `grid_sample`."""
    n = len(poses)
    theta = torch.zeros(n, 2, 3)
    scale = (half * torch.exp(poses[:, 2])).float()
    theta[:, 0, 0], theta[:, 1, 1] = scale, scale
    theta[:, 0, 2], theta[:, 1, 2] = poses[:, 0].float(), poses[:, 1].float()
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    return F.grid_sample(frames.unsqueeze(1), grid, align_corners=False).squeeze(1)


def pingpong(n_frames: int, steps: int, start: int = 0) -> Tensor:
    """Frame indices start, start + 1, ... played back and forth over n_frames."""
    if n_frames == 1:
        return torch.zeros(steps, dtype=torch.long)
    period = 2 * (n_frames - 1)
    t = (torch.arange(steps) + start) % period
    return torch.where(t < n_frames, t, period - t)


@dataclass(frozen=True)
class EgomotionTaskSampler:
    """Meta-training tasks of `video-egomotion`: fresh paths over the meta clips."""

    clips: tuple[Tensor, ...]
    cfg: VideoEgomotionConfig

    def sample(self, generator: torch.Generator) -> list[Experience]:
        frames = self.clips[int(torch.randint(len(self.clips), (1,), generator=generator))]
        q = max(1, self.cfg.meta_length // 4)
        start = int(torch.randint(len(frames), (1,), generator=generator))
        x, y, _ = self.cfg.samples([frames], self.cfg.meta_length + q, generator, start)
        n = self.cfg.meta_length
        return [Experience(x=x[:n], y=y[:n], x_test=x[n:], y_test=y[n:])]


@dataclass(frozen=True)
class VideoEgomotionConfig(ScenarioConfig):
    """Camera-motion regression over real frames (module docstring)."""

    clips: str = "cockatoo"
    """Scored clips, comma-separated; the camera moves over their frames in turn."""
    meta_clips: str = ""
    """Clips for meta-training; '' = every clip not scored."""
    frame_size: int = bounded(96, ge=16, le=512)
    """Side of the decoded frames the window moves on."""
    crop: int = bounded(48, ge=4)
    """Window side at zoom 0, pixels of the decoded frame (the window zoomed out by e^0.3
    must fit in the frame)."""
    image_size: int = bounded(32, ge=4, le=128)
    """Side of each window in the input."""
    steps: int = bounded(1500, ge=2, le=100_000)
    """Scored samples."""
    val_steps: int = bounded(300, ge=1, le=100_000)
    """Validation samples."""
    test_steps: int = bounded(300, ge=1, le=100_000)
    """Held-out test samples."""
    regime_length: int = bounded(250, ge=1)
    """Steps between velocity changes."""
    speed: float = bounded(0.05, gt=0.0, le=0.5)
    """Largest regime velocity of dx and dy, in window sides per step (dz: a quarter)."""
    jitter: float = bounded(0.5, ge=0.0, le=10.0)
    """Per-step noise of each component, relative to `speed`."""
    val_fraction: float = bounded(0.2, gt=0.0, lt=1.0)
    """Leading share of the frames the validation path runs over."""
    test_fraction: float = bounded(0.2, gt=0.0, lt=1.0)
    """Trailing share of the frames the test path runs over."""
    meta_length: int = bounded(16, ge=2, le=10_000)
    """Samples per meta-training task."""

    ID = "video-egomotion"
    VERSION = 1
    SMOKE = {"clips": "class0-seq0", "frame_size": 16, "crop": 8, "image_size": 8,
             "steps": 20, "val_steps": 10, "test_steps": 10, "regime_length": 10,
             "meta_length": 4}
    """Small parameters for conformance checks (with `fake_data`)."""

    @staticmethod
    def fake_data(root: Path) -> Path:
        """A tiny frame tree under `root` (needs no decoder)."""
        return write_frame_tree(Path(root) / "video", n_classes=2, seqs_per_class=1,
                                n_frames=30)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.crop * math.exp(ZOOM_RANGE[1]) >= self.frame_size:
            most = math.ceil(self.frame_size * math.exp(-ZOOM_RANGE[1])) - 1
            raise HarnessError(f"crop={self.crop} is too large for frame_size={self.frame_size}"
                               f" (the window zoomed out must fit in the frame); use crop <= "
                               f"{most} or a larger frame_size")

    @property
    def half(self) -> float:
        """Half the window's side at zoom 0, in normalised frame coordinates."""
        return self.crop / self.frame_size

    def samples(self, clips: list[Tensor], steps: int, g: torch.Generator,
                start: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """(x [steps, 2, S, S], y [steps, 3], regime starts) of a fresh path whose steps are
        cut into equal consecutive blocks, one per clip (frames [N, F, F]); the first block's
        clip starts at frame `start`."""
        poses, starts = camera_path(steps, g, self.half, self.regime_length, self.speed,
                                    self.jitter)
        xs = []
        for j, block in enumerate(np.array_split(np.arange(steps), len(clips))):
            if len(block) == 0:
                continue
            first = int(block[0])
            idx = pingpong(len(clips[j]), len(block) + 1, start if j == 0 else 0)
            w = crops(clips[j][idx], poses[first : first + len(block) + 1], self.half,
                      self.image_size)
            xs.append(torch.stack([w[:-1], w[1:]], dim=1))
        unit = torch.tensor([2 * self.half / self.image_size] * 2 + [0.01], dtype=torch.float64)
        motion = (poses[1:] - poses[:-1]) / unit
        return torch.cat(xs).contiguous(), motion.float(), starts

    def build(self, seed: int, data_dir: Path | None = None,
              cache_dir: Path | None = None) -> VideoRegression:
        """The stream; its path comes from the seed."""
        sources = clip_sources(data_dir)
        scored = choose(self.clips, sources, "clips")
        split: list[list[Tensor]] = [[], [], []]  # validation, scored and test frames per clip
        for name in scored:
            frames = grey_frames(sources[name], self.frame_size, cache_dir)
            cut = parts(len(frames), self.val_fraction, self.test_fraction, 1)
            if min(len(p) for p in cut) < 1:
                raise HarnessError(f"clip {name!r} ({len(frames)} frames) is too short for "
                                   f"val_fraction={self.val_fraction} and test_fraction="
                                   f"{self.test_fraction}; lower them or drop the clip")
            for i, p in enumerate(cut):
                split[i].append(frames[p.start : p.stop])
        x, y, starts = self.samples(split[1], self.steps, generator(seed))
        xv, yv, _ = self.samples(split[0], self.val_steps, generator(derive_seed(seed, "val")))
        xt, yt, _ = self.samples(split[2], self.test_steps,
                                 generator(derive_seed(seed, "test")))
        meta = tuple(grey_frames(sources[n], self.frame_size, cache_dir)
                     for n in meta_names(self, sources, scored))
        s = self.image_size
        return self.built(
            VideoRegression, seed,
            spec=ScenarioSpec(input_shape=(2, s, s), n_outputs=3, task="regression",
                              output_names=("dx", "dy", "zoom")),
            experiences=[Experience(x=x, y=y, x_test=xt, y_test=yt, name="path")],
            val_experiences=[Experience(x=xv, y=yv, x_test=xt[:0], y_test=yt[:0],
                                        name="val path")],
            meta_train=EgomotionTaskSampler(meta, self) if meta else None,
            change_points=tuple(int(t) for t in starts if t > 0),
        )
