"""`video-nextframe` and `video-egomotion`: parts and their disjointness, targets, regime
changes, exact camera motion, persistence's closed form, meta-training tasks, clip names and
bad parameters (frame trees written here, no decoder needed; the shipped clips: slow tier)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import api
from harness.errors import DataError
from scenarios.video import SequenceSource
from scenarios.video_regression import (
    ZOOM_RANGE,
    VideoEgomotionConfig,
    VideoNextFrameConfig,
    camera_path,
    clip_name,
    clip_sources,
    crops,
    pingpong,
)

C = 3
"""Frame t of the clip 'ramp' is the constant grey C * t / 255 (exact in uint8)."""


def _clip(root: Path, name: str, values: list[int], size: int = 12) -> None:
    """A frame-tree clip `<root>/<name>/seq/frameT.png` (clip name `<name>-seq`) whose frame t
    is the constant grey values[t] / 255."""
    from PIL import Image

    d = root / name / "seq"
    d.mkdir(parents=True)
    for t, v in enumerate(values):
        Image.fromarray(np.full((size, size, 3), v, dtype=np.uint8)).save(d / f"frame{t}.png")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "clips"
    _clip(root, "ramp", [C * t for t in range(40)])
    _clip(root, "fast", [5 * t for t in range(40)])
    _clip(root, "meta", [250 - 2 * t for t in range(30)])
    return root


def _frames(t: torch.Tensor, c: int = C) -> list[int]:
    """The frame index of each constant frame in `t` [N, ...] of a clip with grey c * t."""
    return [round(float(v) * 255 / c) for v in t.flatten(1)[:, 0]]


def test_nextframe_parts_are_disjoint_and_targets_k_ahead(tree: Path, tmp_path: Path):
    sc = VideoNextFrameConfig(clips="ramp-seq", meta_clips="meta-seq", k=2, image_size=8,
                              gap=2, meta_length=8).build(0, tree, tmp_path)
    exp, val = sc.experiences[0], sc.val_experiences[0]
    # 40 frames: validation 0-7 (round(40 * 0.2)), 2 unused, scored 10-29, 2 unused, test 32-39
    assert (_frames(val.x), _frames(val.y)) == (list(range(0, 6)), list(range(2, 8)))
    assert (_frames(exp.x), _frames(exp.y)) == (list(range(10, 28)), list(range(12, 30)))
    assert (_frames(exp.x_test), _frames(exp.y_test)) == (list(range(32, 38)),
                                                          list(range(34, 40)))
    used = [set(_frames(a.x)) | set(_frames(a.y)) for a in (val, exp)]
    used.append(set(_frames(exp.x_test)) | set(_frames(exp.y_test)))
    assert not (used[0] & used[1] or used[1] & used[2] or used[0] & used[2])
    assert exp.x.shape == (18, 1, 8, 8) and exp.y.shape == (18, 64) and val.n_test == 0
    assert exp.y.dtype == torch.float32 and float(exp.y[0, 0]) == pytest.approx(12 * C / 255)
    assert sc.spec.input_shape == (1, 8, 8) and sc.spec.n_outputs == 64
    assert sc.spec.task == "regression" and sc.spec.persistence == tuple(range(64))
    assert sc.change_points == ()
    # same for every seed (frames in temporal order)
    assert VideoNextFrameConfig(clips="ramp-seq", meta_clips="meta-seq", k=2, image_size=8,
                                gap=2, meta_length=8).build(5, tree, tmp_path).stream_hash \
        == sc.stream_hash


def test_nextframe_meta_task_is_consecutive_pairs_of_a_meta_clip(tree: Path, tmp_path: Path):
    sc = VideoNextFrameConfig(clips="ramp-seq", meta_clips="meta-seq", k=2, image_size=8,
                              meta_length=8).build(0, tree, tmp_path)
    for s in range(3):
        task, = sc.meta_train.sample(torch.Generator().manual_seed(s))
        frame = [(250 - round(float(v) * 255)) // 2 for v in torch.cat(
            [task.x.flatten(1)[:, 0], task.x_test.flatten(1)[:, 0]])]
        target = [(250 - round(float(v) * 255)) // 2 for v in torch.cat(
            [task.y[:, 0], task.y_test[:, 0]])]
        start = frame[0]
        assert frame == list(range(start, start + 10))  # 8 pairs, then 8 // 4 = 2 test pairs
        assert target == [t + 2 for t in frame] and start + 11 <= 29
        assert task.x.shape == (8, 1, 8, 8) and task.y_test.shape == (2, 64)


def test_nextframe_persistence_closed_form_and_clip_changes(tree: Path, tmp_path: Path):
    """Frame t of 'ramp' is 3t/255 and of 'fast' 5t/255: persistence (the current frame) errs
    by 3k/255 and 5k/255 on every pixel of every pair, scored and held out."""
    sets = dict(clips="ramp-seq,fast-seq", meta_clips="meta-seq", k=2, image_size=8, gap=2,
                meta_length=8)
    sc = VideoNextFrameConfig(**sets).build(0, tree, tmp_path / "cache")
    assert [(e.name, e.n_train, e.n_test) for e in sc.experiences] == [
        ("ramp-seq", 18, 6), ("fast-seq", 18, 6)]
    assert sc.change_points == (18,)
    res = api.run("video-nextframe", "persistence", out_dir=tmp_path / "out", data_dir=tree,
                  cache_dir=tmp_path / "cache", progress=False, **sets)
    assert res.status == "ok", res.error
    ramp, fast = (3 * 2 / 255) ** 2, (5 * 2 / 255) ** 2
    m = res.metrics
    assert m["online_mse"] == pytest.approx((ramp + fast) / 2, rel=1e-5)  # 18 pairs each
    assert m["online_mae"] == pytest.approx((6 / 255 + 10 / 255) / 2, rel=1e-5)
    assert m["mse_exp0"] == pytest.approx(ramp, rel=1e-5)  # held-out segments after the stream
    assert m["mse_exp1"] == pytest.approx(fast, rel=1e-5)
    assert m["mse_final"] == pytest.approx((ramp + fast) / 2, rel=1e-5)
    assert m["mse_before_change"] == pytest.approx(ramp, rel=1e-5)
    assert m["mse_after_change"] == pytest.approx(fast, rel=1e-5)
    assert m["skill_persistence"] == pytest.approx(0.0, abs=1e-6)
    assert m["test_skill_persistence"] == pytest.approx(0.0, abs=1e-6)


def test_nextframe_meta_clips_default_to_the_others_and_skip_short_ones(tree: Path,
                                                                        tmp_path: Path):
    sc = VideoNextFrameConfig(clips="ramp-seq", image_size=8, meta_length=4).build(0, tree,
                                                                                  tmp_path)
    assert sorted(len(c) for c in sc.meta_train.clips) == [30, 40]  # meta-seq, fast-seq
    # a task of 24 + 6 + 1 frames: 'meta' (30 frames) is left out, 'fast' (40) is kept
    sc = VideoNextFrameConfig(clips="ramp-seq", image_size=8, meta_length=24).build(0, tree,
                                                                                   tmp_path)
    assert [len(c) for c in sc.meta_train.clips] == [40]
    sc = VideoNextFrameConfig(clips="ramp-seq,fast-seq,meta-seq", image_size=8,
                              meta_length=4).build(0, tree, tmp_path)
    assert sc.meta_train is None and sc.change_points == (21, 42)  # no clip left


def test_camera_motion_is_exact_on_a_ramp():
    # a horizontal ramp: grey = normalised x coordinate, so a window's mean is its centre's x
    size = 64
    u = (torch.arange(size) + 0.5) / size * 2 - 1
    frames = u.repeat(size, 1).expand(3, size, size).contiguous()
    poses = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.05, 0.2, 0.1]],
                         dtype=torch.float64)
    w = crops(frames, poses, 0.25, 16)
    assert [round(float(v), 4) for v in w.mean(dim=(1, 2))] == [0.0, 0.1, 0.05]
    # zooming keeps the centre and widens the window: the ramp's slope inside grows by e^z
    slope = (w[:, 0, -1] - w[:, 0, 0]).tolist()
    assert slope[2] / slope[0] == pytest.approx(float(np.exp(0.1)), rel=1e-3)
    # by hand: the window of side 0.5 at 0.1 has 16 columns of 1/32 from 0.1 - 0.25 + 1/64
    assert float(w[1, 0, 0]) == pytest.approx(0.1 - 0.25 + 1 / 64, abs=1e-6)


@pytest.mark.parametrize("axis", [0, 1])
def test_egomotion_targets_are_the_applied_motion(axis: int):
    """On a ramp along x (y) the windows' mean grey is their centre's x (y), and the ramp's
    slope across a window grows with its side: the targets are read back from the images."""
    cfg = VideoEgomotionConfig(frame_size=64, crop=16, image_size=8, regime_length=5,
                               speed=0.2)
    u = (torch.arange(64) + 0.5) / 64 * 2 - 1
    ramp = u.repeat(64, 1) if axis == 0 else u.repeat(64, 1).T
    frames = ramp.expand(4, 64, 64).contiguous()
    x, y, starts = cfg.samples([frames], 12, torch.Generator().manual_seed(3))
    assert x.shape == (12, 2, 8, 8) and y.shape == (12, 3) and starts.tolist() == [0, 5, 10]
    pixel = 2 * cfg.half / cfg.image_size  # an input pixel at zoom 0, normalised coordinates
    shift = (x[:, 1].mean(dim=(1, 2)) - x[:, 0].mean(dim=(1, 2))).double() / pixel
    assert torch.allclose(shift, y[:, axis].double(), atol=2e-3)
    assert y[:, axis].abs().max() > 1.0  # the path moves by pixels, not by rounding errors
    edge = (lambda w: w[:, :, -1] - w[:, :, 0]) if axis == 0 else (lambda w: w[:, -1] - w[:, 0])
    growth = 100 * torch.log(edge(x[:, 1]).mean(1) / edge(x[:, 0]).mean(1)).double()
    assert torch.allclose(growth, y[:, 2].double(), atol=2e-2)  # zoom in percent


def test_camera_path_stays_inside_the_frame_and_zoom_range():
    for jitter in (0.5, 10.0):
        poses, _ = camera_path(1000, torch.Generator().manual_seed(0), 0.5, 50, 0.5, jitter)
        h = 0.5 * torch.exp(poses[:, 2:])
        assert torch.all(poses[:, :2].abs() <= 1 - h + 1e-9)
        assert ZOOM_RANGE[0] <= float(poses[:, 2].min()) <= float(poses[:, 2].max()) \
            <= ZOOM_RANGE[1]


def test_pingpong_has_no_jump():
    assert pingpong(4, 9).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert pingpong(4, 4, start=5).tolist() == [1, 0, 1, 2]


EGO = dict(frame_size=16, crop=8, image_size=8, steps=30, val_steps=10, test_steps=10,
           regime_length=10, meta_length=4)


def _window_frames(w: torch.Tensor, c: int = C) -> list[int]:
    """The frame of each window [N, S, S] of a constant-frame clip, from its centre pixel."""
    s = w.shape[-1] // 2
    return [round(float(v) * 255 / c) for v in w[:, s, s]]


def test_egomotion_paths_run_over_disjoint_frames(tree: Path, tmp_path: Path):
    sc = VideoEgomotionConfig(clips="ramp-seq", **EGO).build(0, tree, tmp_path)
    exp, val = sc.experiences[0], sc.val_experiences[0]
    # 40 frames: validation 0-7, one unused, scored 9-30, one unused, test 32-39
    for xs, part in ((val.x, range(0, 8)), (exp.x, range(9, 31)), (exp.x_test, range(32, 40))):
        first, second = _window_frames(xs[:, 0]), _window_frames(xs[:, 1])
        assert set(first) | set(second) <= set(part)
        assert all(abs(a - b) == 1 for a, b in zip(first, second, strict=True))
        assert first[1:] == second[:-1]  # the clip plays on: no jump between samples
    assert _window_frames(exp.x[:, 0])[:3] == [9, 10, 11]


def test_egomotion_clips_in_turn_never_pair_two_clips(tree: Path, tmp_path: Path):
    sc = VideoEgomotionConfig(clips="ramp-seq,fast-seq", **EGO).build(0, tree, tmp_path)
    x = sc.experiences[0].x
    # steps 0-14 on 'ramp' (scored frames 9-30), steps 15-29 on 'fast' (same frame numbers)
    assert _window_frames(x[:15, 1]) == list(range(10, 25))
    assert _window_frames(x[15:, 0], c=5) == list(range(9, 24))
    assert _window_frames(x[15:, 1], c=5) == list(range(10, 25))


def test_egomotion_paths_follow_the_seed(tree: Path, tmp_path: Path):
    a = VideoEgomotionConfig(clips="ramp-seq", **EGO).build(0, tree, tmp_path)
    b = VideoEgomotionConfig(clips="ramp-seq", **EGO).build(0, tree, tmp_path)
    c = VideoEgomotionConfig(clips="ramp-seq", **EGO).build(1, tree, tmp_path)
    assert a.stream_hash == b.stream_hash != c.stream_hash
    assert not torch.equal(a.experiences[0].y, c.experiences[0].y)
    assert not torch.equal(a.experiences[0].y[:10], a.val_experiences[0].y)  # its own path
    assert a.change_points == (10, 20)
    assert a.spec.input_shape == (2, 8, 8) and a.spec.n_outputs == 3
    assert a.spec.output_names == ("dx", "dy", "zoom") and a.spec.persistence == ()
    assert [(e.n_train, e.n_test) for e in a.experiences] == [(30, 10)]
    assert [(e.n_train, e.n_test) for e in a.val_experiences] == [(10, 0)]
    task, = a.meta_train.sample(torch.Generator().manual_seed(0))
    assert task.x.shape == (4, 2, 8, 8) and task.y.shape == (4, 3) and task.n_test == 1


def test_clip_names(tmp_path: Path):
    video = SequenceSource(label="a", name="sub/walk.mp4", path=tmp_path / "sub" / "walk.mp4")
    part = SequenceSource(label="a", name="walk.mp4[2-5.5]", path=tmp_path / "walk.mp4",
                          start=2.0, end=5.5)
    tree = SequenceSource(label="cat", name="cat/seq1", path=tmp_path)
    assert [clip_name(s) for s in (video, part, tree)] == ["walk", "walk[2-5.5]", "cat-seq1"]
    root = tmp_path / "videos"
    for sub in ("a", "b"):
        (root / sub).mkdir(parents=True)
        (root / sub / "walk.mp4").write_bytes(b"")
    (root / "labels.csv").write_text("file,label\na/walk.mp4,x\nb/walk.mp4,y\n")
    with pytest.raises(DataError, match="both clip 'walk'"):
        clip_sources(root)


@pytest.mark.parametrize("scenario, sets, needle", [
    ("video-nextframe", ["clips=nosuch"], "no clip 'nosuch' for clips; the clips are fast-seq"),
    ("video-nextframe", ["clips=ramp-seq", "meta_clips=ramp-seq"], "never see a scored clip"),
    ("video-nextframe", ["clips=ramp-seq", "k=30"], "clip 'ramp-seq' (40 frames) is too short"),
    ("video-nextframe", ["clips=ramp-seq", "val_fraction=0.5", "test_fraction=0.5"],
     "too short"),
    ("video-nextframe", ["clips=ramp-seq", "val_fraction=1.5"], "val_fraction"),
    ("video-nextframe", ["clips=ramp-seq,ramp-seq"], "names a clip twice"),
    ("video-nextframe", ["clips=ramp-seq", "meta_clips=meta-seq", "meta_length=24"],
     "meta clip 'meta-seq' (30 frames) is shorter than one task"),
    ("video-egomotion", ["clips=nosuch"], "no clip 'nosuch'"),
    ("video-egomotion", ["clips=ramp-seq", "meta_clips=fast-seq,ramp-seq"], "share ramp-seq"),
    ("video-egomotion", ["clips=ramp-seq", "val_fraction=0.6", "test_fraction=0.4"],
     "clip 'ramp-seq' (40 frames) is too short"),
    ("video-egomotion", ["clips=ramp-seq", "crop=72"], "use crop <= 71"),
])
def test_bad_parameters_exit_2_with_one_line(tree: Path, tmp_path: Path, scenario, sets,
                                             needle, usage_error):
    args = ["run", "--scenario", scenario, "--learner", "persistence", "--baselines", "none",
            "--data-dir", str(tree), "--cache-dir", str(tmp_path / "c"), "--out",
            str(tmp_path / "out"), "--threads", "1"]
    for s in sets:
        args += ["--set", s]
    assert needle in usage_error(args)


@pytest.mark.slow
def test_shipped_clips():
    start = time.perf_counter()
    nf = VideoNextFrameConfig().build(0)
    assert [(e.name, e.n_train, e.n_test) for e in nf.experiences] == [
        ("cockatoo", 165, 55), ("bigbuckbunny", 77, 25)]
    assert [e.n_train for e in nf.val_experiences] == [55, 25]
    assert nf.change_points == (165,)
    eg = VideoEgomotionConfig().build(0)
    assert eg.experiences[0].x.shape == (1500, 2, 32, 32)
    assert (eg.experiences[0].n_test, eg.val_experiences[0].n_train) == (300, 300)
    assert eg.change_points == (250, 500, 750, 1000, 1250)
    assert time.perf_counter() - start < 60  # decoding the clips included, on one core
    # the clips not scored: newtonscradle, tree (and bigbuckbunny for egomotion)
    for sc, lengths in ((nf, [36, 68]), (eg, [36, 68, 132])):
        assert sorted(len(c) for c in sc.meta_train.clips) == lengths
        task, = sc.meta_train.sample(torch.Generator().manual_seed(0))
        assert task.n_train == 16 and task.n_test == 4
        assert math.isfinite(float(task.y.sum()))
