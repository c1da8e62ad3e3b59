"""Episodic scenarios: shapes, fixed-by-seed episodes, disjoint splits, the sinusoid task
distribution, MiniImageNet layouts, cache and errors (on a small fake image set)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.errors import DataError
from harness.runner import run_episodes
from scenarios.fewshot import (
    EpisodeSampler,
    MiniImageNetFewShotConfig,
    OmniglotFewShotConfig,
    SinusoidFewShotConfig,
)
from scenarios.miniimagenet_data import load_miniimagenet

# -- sinusoid -----------------------------------------------------------------------------------


def test_sinusoid_episodes_fixed_by_seed_and_nested_shots() -> None:
    a = SinusoidFewShotConfig(test_episodes=20, val_episodes=5).build(0)
    b = SinusoidFewShotConfig(test_episodes=20, val_episodes=5).build(0)
    c = SinusoidFewShotConfig(test_episodes=20, val_episodes=5).build(1)
    assert a.stream_hash == b.stream_hash != c.stream_hash
    assert a.spec.episodic and a.spec.task == "regression"
    five, ten = a.episode_sets["5shot"], a.episode_sets["10shot"]
    assert a.experiences is ten  # default shots=10
    for e5, e10 in zip(five, ten, strict=True):
        assert e5.x.shape == (5, 1) and e10.x.shape == (10, 1) and e5.n_test == 100
        assert torch.equal(e5.x, e10.x[:5]) and torch.equal(e5.x_test, e10.x_test)
        assert len(list(e5)) == 1, "the support set is one batch"
    assert a.test_steps_grid == (1, 5, 10)


def test_sinusoid_task_distribution() -> None:
    sampler = SinusoidFewShotConfig().build(0).meta_train
    xs, ys, xq, yq = sampler.sample_batch(2000, torch.Generator().manual_seed(0))
    assert xs.shape == (2000, 10, 1) and xq.shape == (2000, 10, 1)
    x = torch.cat([xs, xq], 1)
    y = torch.cat([ys, yq], 1)
    assert x.min() >= -5 and x.max() <= 5
    amp = y.abs().amax(1)  # close to A for 20 points spread over more than a period
    assert amp.max() <= 5.0 + 1e-5 and amp.min() >= 0.0
    # y = A sin(x - phase): recover A and phase from two points exactly for one task.
    a = SinusoidFewShotConfig(test_episodes=3).build(0).experiences
    e = a[0]
    amp0, ph0 = a.amp[0], a.phase[0]
    assert 0.1 <= amp0 <= 5.0 and 0 <= ph0 <= math.pi
    torch.testing.assert_close(e.y, amp0 * torch.sin(e.x - ph0))


def test_maml_runs_on_sinusoid_episodes() -> None:
    from baselines.maml import MAMLConfig
    from harness.config import BuildContext

    sc = SinusoidFewShotConfig(test_episodes=10, val_episodes=0).build(0)
    learner = MAMLConfig(test_steps=1).build(BuildContext(spec=sc.spec))
    rec = run_episodes(learner, sc.experiences, sc.spec)
    assert rec.scores.shape == (10,) and np.isfinite(rec.scores).all()


# -- Omniglot ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def omniglot():
    return OmniglotFewShotConfig(test_episodes=30, val_episodes=10).build(0)


def test_omniglot_episode_shapes_and_labels(omniglot) -> None:
    sc = omniglot
    assert sc.spec.episodic and sc.spec.input_shape == (1, 28, 28) and sc.spec.n_outputs == 5
    assert len(sc.experiences) == 30 and len(sc.val_experiences) == 10
    e = sc.experiences[0]
    assert e.x.shape == (5, 1, 28, 28) and e.x_test.shape == (75, 1, 28, 28)
    assert e.y.tolist() == [0, 1, 2, 3, 4]
    assert torch.bincount(e.y_test).tolist() == [15] * 5
    assert 0.0 <= float(e.x.min()) and float(e.x.max()) <= 1.0
    assert float(e.x.mean()) < 0.5, "ink = 1 on a 0 background"
    again = OmniglotFewShotConfig(test_episodes=30, val_episodes=10).build(0)
    assert again.stream_hash == sc.stream_hash
    assert torch.equal(again.experiences[7].x_test, sc.experiences[7].x_test)
    other = OmniglotFewShotConfig(test_episodes=30, val_episodes=10).build(1)
    assert other.stream_hash != sc.stream_hash


def _rows(x: torch.Tensor) -> set[bytes]:
    return {t.numpy().tobytes() for t in x}


def test_omniglot_splits_are_disjoint(omniglot) -> None:
    test = set().union(*(_rows(torch.cat([e.x, e.x_test])) for e in omniglot.experiences))
    val = set().union(*(_rows(torch.cat([e.x, e.x_test])) for e in omniglot.val_experiences))
    meta = _rows(omniglot.meta_train.images.reshape(-1, 1, 28, 28))
    assert not test & val and not test & meta and not val & meta
    # support and query images of an episode are different drawings
    e = omniglot.experiences[0]
    assert not _rows(e.x) & _rows(e.x_test)


def test_omniglot_sampler_rotations_and_batches(omniglot) -> None:
    s = omniglot.meta_train
    assert isinstance(s, EpisodeSampler) and s.n_classes == 4 * 964
    xs, ys, xq, yq = s.sample_batch(4, torch.Generator().manual_seed(0), ways=20, queries=3)
    assert xs.shape == (4, 20, 1, 28, 28) and xq.shape == (4, 60, 1, 28, 28)
    assert ys[0].tolist() == list(range(20)) and yq.shape == (4, 60)
    one = s.sample(torch.Generator().manual_seed(0))
    assert len(one) == 1 and one[0].x.shape == (5, 1, 28, 28)
    # A rotated class is the same drawings turned by quarter turns.
    imgs = torch.arange(2 * 3 * 16, dtype=torch.float32).reshape(2, 3, 1, 4, 4)
    rs = EpisodeSampler(imgs, ways=2, shots=1, queries=1, rotations=True)
    seen = set()
    for i in range(40):
        x, _, _, _ = rs.sample_batch(1, torch.Generator().manual_seed(i))
        for img in x[0]:
            match = [k for k in range(4) for c in range(2) for d in range(3)
                     if torch.equal(img[0], torch.rot90(imgs[c, d, 0], k))]
            assert match, "every sampled image is a rotation of a stored one"
            seen.add(match[0])
    assert seen == {0, 1, 2, 3}


def test_omniglot_20_way_and_bad_shapes() -> None:
    sc = OmniglotFewShotConfig(ways=20, shots=5, queries=5, test_episodes=2,
                               val_episodes=2).build(0)
    assert sc.experiences[0].x.shape == (100, 1, 28, 28) and sc.spec.n_outputs == 20
    with pytest.raises(ValueError, match="shots \\+ queries"):
        OmniglotFewShotConfig(shots=5, queries=16)


# -- MiniImageNet (small fake image set) -------------------------------------------------------


def _fake_split(root: Path, layout: str, n_classes: int = 3, per_class: int = 4) -> Path:
    """Tiny JPEGs for a custom split of 3 classes x 4 images; returns the split CSV folder."""
    from PIL import Image

    split_dir = root / "split"
    split_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, offset in (("train", 0), ("val", 10), ("test", 20)):
        with (split_dir / f"{split}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", "label"])
            for c in range(n_classes):
                wnid = f"n{offset + c:08d}"
                for i in range(per_class):
                    name = f"{wnid}{i:08d}.jpg"
                    w.writerow([name, wnid])
                    folder = root / "data" / (wnid if layout == "wnid" else "images")
                    folder.mkdir(parents=True, exist_ok=True)
                    arr = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                    Image.fromarray(arr).save(folder / name)
    return split_dir


@pytest.mark.parametrize("layout", ["wnid", "images"])
def test_miniimagenet_layouts_and_cache(tmp_path: Path, layout: str) -> None:
    split_dir = _fake_split(tmp_path, layout)
    data = tmp_path / "data"
    first = load_miniimagenet("train", data, 12, split_dir=split_dir)
    assert first.images.shape == (3, 4, 12, 12, 3) and first.images.dtype == torch.uint8
    assert first.wnids == ("n00000000", "n00000001", "n00000002")
    assert (data / ".harness-cache" / "miniimagenet-train-12.npy").exists()
    for jpg in data.rglob("*.jpg"):  # the cache alone now serves the split
        jpg.unlink()
    again = load_miniimagenet("train", data, 12, split_dir=split_dir)
    assert torch.equal(again.images, first.images) and again.digest == first.digest
    with pytest.raises(DataError, match="missing"):
        load_miniimagenet("val", data, 12, split_dir=split_dir)


def test_miniimagenet_missing_images_error_names_the_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"<data_dir>/<wnid>/<filename>\.jpg"):
        MiniImageNetFewShotConfig().build(0, tmp_path)
    with pytest.raises(DataError, match="not shipped"):
        MiniImageNetFewShotConfig().build(0, None)
    (tmp_path / "n01532829").mkdir()
    with pytest.raises(DataError, match=r"38400 MiniImageNet train images are missing"):
        MiniImageNetFewShotConfig().build(0, tmp_path)


def test_miniimagenet_scenario_on_fake_cache(tmp_path: Path) -> None:
    data = MiniImageNetFewShotConfig.fake_data(tmp_path)
    cfg = MiniImageNetFewShotConfig(shots=5, test_episodes=4, val_episodes=2, image_size=8)
    sc = cfg.build(0, data)
    e = sc.experiences[0]
    assert e.x.shape == (25, 3, 8, 8) and e.x_test.shape == (75, 3, 8, 8)
    assert e.x.dtype == torch.float32 and 0 <= float(e.x.min()) and float(e.x.max()) <= 1
    assert sc.meta_train.n_classes == 64 and sc.spec.input_shape == (3, 8, 8)
    assert sc.stream_hash == cfg.build(0, data).stream_hash
