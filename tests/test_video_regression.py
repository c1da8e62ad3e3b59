"""`video-nextframe` and `video-egomotion`: parts, targets, regime changes, exact camera motion,
persistence's closed form, and bad parameters (frame trees, no decoder needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness import api
from scenarios.video_regression import (
    VideoEgomotionConfig,
    VideoNextFrameConfig,
    camera_path,
    crops,
    pingpong,
)


def _clip(root: Path, name: str, values: list[float], size: int = 12) -> None:
    """A frame-tree clip `<root>/<name>/seq/frameT.png` whose frame t is the constant grey
    values[t] (0-1, stored as uint8)."""
    from PIL import Image

    d = root / name / "seq"
    d.mkdir(parents=True)
    for t, v in enumerate(values):
        a = np.full((size, size, 3), round(v * 255), dtype=np.uint8)
        Image.fromarray(a).save(d / f"frame{t}.png")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "clips"
    _clip(root, "ramp", [t / 50 for t in range(40)])  # frame t has grey t/50 (t * 5.1 / 255)
    _clip(root, "other", [0.5] * 30)
    return root


def _grey(t: int) -> float:
    return round(t / 50 * 255) / 255


def test_nextframe_parts_targets_and_persistence_closed_form(tree: Path, tmp_path: Path):
    cfg = VideoNextFrameConfig(clips="ramp-seq", meta_clips="other-seq", k=2, image_size=8,
                               gap=2, meta_length=8)
    sc = cfg.build(0, tree, tmp_path / "cache")
    exp, val = sc.experiences[0], sc.val_experiences[0]
    # 40 frames: validation frames 0-7, scored 10-29, test 32-39 (gap 2 on each side)
    frame_of = lambda x: [round(float(v) * 50) for v in x.flatten(1)[:, 0]]  # noqa: E731
    assert frame_of(val.x) == list(range(0, 6))  # pairs (t, t + 2) inside 0-7
    assert frame_of(exp.x) == list(range(10, 28))
    assert frame_of(exp.x_test) == list(range(32, 38))
    assert torch.allclose(exp.y[:, 0], torch.tensor([_grey(t + 2) for t in range(10, 28)]),
                          atol=1e-6)  # the target is frame t + 2
    assert sc.spec.persistence == tuple(range(64)) and sc.change_points == ()
    task = sc.meta_train.sample(torch.Generator().manual_seed(0))[0]
    assert task.x.shape == (8, 1, 8, 8) and task.y.shape == (8, 64)
    assert torch.allclose(task.x, torch.full_like(task.x, round(0.5 * 255) / 255))  # "other"
    res = api.run("video-nextframe", "persistence", out_dir=tmp_path, data_dir=tree,
                  cache_dir=tmp_path / "cache", progress=False, clips="ramp-seq",
                  meta_clips="other-seq", k=2, image_size=8, gap=2, meta_length=8)
    assert res.status == "ok", res.error
    # persistence's error on every pixel is grey(t + 2) - grey(t), about (2 / 50)^2
    want = np.mean([(_grey(t + 2) - _grey(t)) ** 2 for t in range(10, 28)])
    assert res.metrics["online_mse"] == pytest.approx(want, rel=1e-4)
    want_test = np.mean([(_grey(t + 2) - _grey(t)) ** 2 for t in range(32, 38)])
    assert res.metrics["mse_final"] == pytest.approx(want_test, rel=1e-4)
    assert res.metrics["skill_persistence"] == pytest.approx(0.0, abs=1e-6)


def test_nextframe_clips_in_turn_are_regime_changes(tree: Path, tmp_path: Path):
    sc = VideoNextFrameConfig(clips="ramp-seq,other-seq", meta_clips="", image_size=8,
                              meta_length=4).build(0, tree, tmp_path)
    assert [e.name for e in sc.experiences] == ["ramp-seq", "other-seq"]
    assert sc.change_points == (len(sc.experiences[0].x),)
    assert sc.meta_train is None  # no clip left for meta-training


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


def test_egomotion_targets_are_the_applied_motion():
    cfg = VideoEgomotionConfig(frame_size=64, crop=16, image_size=8, regime_length=5)
    size = 64
    u = (torch.arange(size) + 0.5) / size * 2 - 1
    frames = u.repeat(size, 1).expand(4, size, size).contiguous()  # the same ramp every frame
    x, y, starts = cfg.samples(frames, 12, torch.Generator().manual_seed(3))
    assert starts.tolist() == [0, 5, 10]
    # mean grey of a window = its centre's x; dx is in input pixels: side / image_size each
    dx_norm = (x[:, 1].mean(dim=(1, 2)) - x[:, 0].mean(dim=(1, 2))).double()
    pixel = 2 * cfg.half / cfg.image_size
    assert torch.allclose(dx_norm / pixel, y[:, 0].double(), atol=2e-3)
    poses, _ = camera_path(12, torch.Generator().manual_seed(3), cfg.half, 5, cfg.speed,
                           cfg.jitter)
    assert torch.all(poses[:, :2].abs() <= 1 - cfg.half * torch.exp(poses[:, 2:]) + 1e-9)


def test_pingpong_has_no_jump():
    assert pingpong(4, 9).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]


def test_egomotion_paths_follow_the_seed(tree: Path, tmp_path: Path):
    small = dict(clips="ramp-seq", frame_size=16, crop=8, image_size=8, steps=30,
                 val_steps=10, test_steps=10, regime_length=10, meta_length=4)
    a = VideoEgomotionConfig(**small).build(0, tree, tmp_path)
    b = VideoEgomotionConfig(**small).build(0, tree, tmp_path)
    c = VideoEgomotionConfig(**small).build(1, tree, tmp_path)
    assert a.stream_hash == b.stream_hash != c.stream_hash
    assert a.change_points == (10, 20)
    assert a.spec.output_names == ("dx", "dy", "zoom") and a.spec.persistence == ()
    assert a.meta_train.sample(torch.Generator().manual_seed(0))[0].x.shape == (4, 2, 8, 8)


@pytest.mark.parametrize("scenario, sets, needle", [
    ("video-nextframe", ["clips=nosuch"], "no clip 'nosuch'"),
    ("video-nextframe", ["clips=ramp-seq", "meta_clips=ramp-seq"], "never see a scored clip"),
    ("video-nextframe", ["clips=ramp-seq", "k=30"], "too short"),
    ("video-nextframe", ["clips=ramp-seq", "val_fraction=1.5"], "val_fraction"),
    ("video-egomotion", ["clips=ramp-seq", "crop=200"], "crop"),
])
def test_bad_parameters_exit_2_with_one_line(tree: Path, tmp_path: Path, scenario, sets,
                                             needle, usage_error):
    args = ["run", "--scenario", scenario, "--learner", "persistence", "--baselines", "none",
            "--data-dir", str(tree), "--cache-dir", str(tmp_path / "c"), "--out",
            str(tmp_path / "out")]
    for s in sets:
        args += ["--set", s]
    assert needle in usage_error(args)


@pytest.mark.slow
def test_shipped_clips():
    nf = VideoNextFrameConfig().build(0)
    assert [(e.name, len(e.x), len(e.x_test)) for e in nf.experiences] == [
        ("cockatoo", 165, 55), ("bigbuckbunny", 77, 25)]
    assert nf.change_points == (165,)
    eg = VideoEgomotionConfig().build(0)
    assert eg.experiences[0].x.shape == (1500, 2, 32, 32)
    assert eg.change_points == (250, 500, 750, 1000, 1250)
    for sc in (nf, eg):
        assert len(sc.meta_train.sample(torch.Generator().manual_seed(0))[0].x) == 16
