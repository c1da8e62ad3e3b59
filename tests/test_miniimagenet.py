"""split-miniimagenet (OML protocol) and split-miniimagenet-cil on small fake image sets."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import scenarios.miniimagenet_data as mid
from harness.errors import DataError
from harness.experiment import build_scenario
from harness.registry import get_scenario
from scenarios.miniimagenet import (
    ENV_DIR,
    SplitMiniImageNetCILConfig,
    SplitMiniImageNetConfig,
    order_hash,
)

N = {"train": 4, "val": 2, "test": 5}
PER = 12


def wnid(split: str, k: int) -> str:
    return f"n{ {'train': 1, 'val': 2, 'test': 3}[split] }{k:07d}"


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> dict[str, Path]:
    """Split CSVs (4/2/5 classes x 12 images) and the images in both documented layouts."""
    root = tmp_path_factory.mktemp("mini")
    splits = root / "splits"
    splits.mkdir()
    by_class, images = root / "by_class", root / "rl" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in N.items():
        rows = ["filename,label"]
        for c in range(n):
            w = wnid(split, c)
            (by_class / w).mkdir(parents=True)
            base = rng.integers(0, 256, 3)
            for i in range(PER):
                name = f"{w}{i + 1:08d}.jpg"
                rows.append(f"{name},{w}")
                a = np.clip(base + rng.integers(-30, 30, (10, 12, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(by_class / w / name, quality=95)
                Image.fromarray(a).save(images / name, quality=95)
        (splits / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return {"splits": splits, "by_class": by_class, "rl": root / "rl"}


def oml(fake, **kw) -> SplitMiniImageNetConfig:
    args = dict(n_classes=5, classes_per_exp=2, train_per_class=4, test_per_class=3,
                n_val_classes=2, meta_train_per_class=5, image_size=8, split_dir=fake["splits"])
    return SplitMiniImageNetConfig(**{**args, **kw})


def test_oml_protocol_stream(fake):
    sc = oml(fake).build(0, fake["by_class"])
    assert sc.spec.input_shape == (3, 8, 8) and sc.spec.n_outputs == 5
    assert [len(e.classes) for e in sc.experiences] == [2, 2, 1]
    assert all(e.batch_size == 1 for e in sc.experiences)
    e0 = sc.experiences[0]
    assert e0.n_train == 8 and e0.n_test == 6
    # class after class, labels in stream order
    assert e0.y.tolist() == [0] * 4 + [1] * 4
    # held-out images are never training images
    train = {t.numpy().tobytes() for e in sc.experiences for t in e.x}
    assert not train & {t.numpy().tobytes() for e in sc.experiences for t in e.x_test}
    # meta-train pool: the 4 train classes, disjoint from the streamed test classes
    assert sc.meta_train.n_classes == 4 and sc.meta_train.x.shape == (20, 3, 8, 8)
    assert not train & {t.numpy().tobytes() for t in sc.meta_train.x}
    assert sorted(sc.class_order) == [wnid("test", k) for k in range(5)]
    assert sc.params["class_order_hash"] == order_hash(sc.class_order)
    assert sc.val_spec is not None and sc.val_spec.n_outputs == 2
    assert {w[:2] for w in sc.val_class_order} == {"n2"}
    assert 0.0 <= float(e0.x.min()) and float(e0.x.max()) <= 1.0


def test_seed_and_layouts(fake):
    a = oml(fake).build(0, fake["by_class"])
    assert oml(fake).build(0, fake["by_class"]).stream_hash == a.stream_hash
    assert oml(fake).build(1, fake["by_class"]).stream_hash != a.stream_hash
    # the Ravi & Larochelle images/ layout gives the identical stream
    assert oml(fake).build(0, fake["rl"]).stream_hash == a.stream_hash


def test_decoded_images_are_cached(fake, monkeypatch):
    oml(fake, image_size=9).build(0, fake["by_class"])  # decodes and writes the cache
    assert list((fake["by_class"] / ".harness-cache").glob("*-9.npy"))

    def boom(*a, **k):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(mid, "_decode", boom)
    t0 = time.perf_counter()
    oml(fake, image_size=9).build(0, fake["by_class"])
    assert time.perf_counter() - t0 < 5


def test_missing_images_name_folder_and_layout(fake, tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_DIR, raising=False)
    with pytest.raises(DataError, match=r"<wnid>/<filename>\.jpg.*images/<filename>\.jpg"):
        oml(fake).build(0, None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MiniImageNet images found in .*empty"):
        oml(fake).build(0, tmp_path / "empty")
    # some images missing: named
    partial = tmp_path / "partial"
    for split, n in N.items():
        for c in range(n):
            (partial / wnid(split, c)).mkdir(parents=True)
    with pytest.raises(DataError, match="images are missing"):
        oml(fake).build(0, partial)
    # the environment variable stands in for --data-dir
    monkeypatch.setenv(ENV_DIR, str(fake["by_class"]))
    assert oml(fake).build(0, None).spec.n_outputs == 5


def test_bad_parameters(fake):
    with pytest.raises(ValueError, match="may not overlap"):
        oml(fake, train_per_class=10, test_per_class=5).build(0, fake["by_class"])
    with pytest.raises(ValueError, match="n_classes"):
        SplitMiniImageNetConfig(n_classes=21)
    with pytest.raises(ValueError, match="divide"):
        SplitMiniImageNetCILConfig(n_experiences=4, train_per_class=4, val_per_class=4,
                                   test_per_class=4, image_size=8,
                                   split_dir=fake["splits"]).build(0, fake["by_class"])


def test_class_incremental_split(fake):
    cfg = SplitMiniImageNetCILConfig(n_experiences=11, train_per_class=6, val_per_class=4,
                                     test_per_class=2, n_val_experiences=2, image_size=8,
                                     batch_size=3, split_dir=fake["splits"])
    sc = cfg.build(0, fake["by_class"])
    assert sc.spec.n_outputs == 11 and len(sc.experiences) == 11
    assert sorted(sc.class_order) == sorted(wnid(s, k) for s, n in N.items() for k in range(n))
    assert all(e.n_train == 6 and e.n_test == 2 and e.batch_size == 3 for e in sc.experiences)
    assert sc.meta_train is None
    assert len(sc.val_experiences) == 2 and sc.val_experiences[0].n_train == 3
    scored = {t.numpy().tobytes() for e in sc.experiences for t in torch.cat([e.x, e.x_test])}
    val = {t.numpy().tobytes() for e in sc.val_experiences for t in torch.cat([e.x, e.x_test])}
    assert not scored & val
    other = cfg.build(1, fake["by_class"])
    assert other.class_order != sc.class_order
    assert other.params["class_order_hash"] != sc.params["class_order_hash"]
    no_val = SplitMiniImageNetCILConfig(n_experiences=11, train_per_class=6, val_per_class=0,
                                        test_per_class=2, image_size=8,
                                        split_dir=fake["splits"]).build(0, fake["by_class"])
    assert no_val.val_experiences == []


def test_shipped_split_with_fake_cache(tmp_path):
    data = SplitMiniImageNetCILConfig.fake_data(tmp_path)
    sc = build_scenario("split-miniimagenet-cil", 0, data, dict(SplitMiniImageNetCILConfig.SMOKE))
    assert len(sc.experiences) == 20 and sc.spec.n_outputs == 100
    assert len(set(sc.class_order)) == 100
    shipped = {w for split in ("train", "val", "test") for _, w in mid.split_rows(split)}
    assert set(sc.class_order) == shipped
    oml_sc = build_scenario("split-miniimagenet", 0, data, dict(SplitMiniImageNetConfig.SMOKE))
    assert oml_sc.meta_train.n_classes == 64 and len(oml_sc.experiences) == 4


def test_registered():
    assert get_scenario("split-miniimagenet").config_class() is SplitMiniImageNetConfig
    assert get_scenario("split-miniimagenet-cil").config_class() is SplitMiniImageNetCILConfig


@pytest.mark.parametrize("layout", ["by_class", "rl"])
def test_cli_run_replay_on_either_layout(fake, tmp_path, layout):
    from typer.testing import CliRunner

    from harness.cli import app

    args = ["run", "--scenario", "split-miniimagenet", "--learner", "replay",
            "--data-dir", str(fake[layout]), "--out", str(tmp_path / "res"),
            "--cache-dir", str(tmp_path / "cache"), "--quiet", "--no-tune",
            "--set", f"split_dir={fake['splits']}", "--set", "image_size=8",
            "--set", "n_classes=4", "--set", "train_per_class=3", "--set", "test_per_class=2",
            "--set", "n_val_classes=2", "--set", "meta_train_per_class=4"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert list((tmp_path / "res" / "split-miniimagenet").glob("replay-*.csv"))


def test_cli_without_images_is_a_clear_error(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from harness.cli import app

    monkeypatch.delenv(ENV_DIR, raising=False)
    res = CliRunner().invoke(app, ["run", "--scenario", "split-miniimagenet", "--learner",
                                   "replay", "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 2
    assert "<wnid>/<filename>.jpg" in res.output and ENV_DIR in res.output
