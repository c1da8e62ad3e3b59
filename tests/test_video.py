"""video-frames: held-out segments, orderings, inputs, decoding and the frame cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import need
from PIL import Image

import scenarios.video as video
from harness import metrics
from harness.errors import DataError
from harness.registry import get_scenario
from harness.runner import run_stream
from scenarios.video import (
    VideoFramesConfig,
    select_by_rate,
    split_held_out,
)

# -- pure pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize("n,frac,segs,gap", [(100, 0.25, 2, 2), (36, 0.25, 2, 2),
                                             (20, 0.1, 1, 0), (57, 0.3, 3, 4)])
def test_held_out_segments_keep_a_gap(n, frac, segs, gap):
    train, test = split_held_out(n, frac, segs, gap)
    assert len(set(train) & set(test)) == 0
    assert len(test) == max(segs, round(n * frac))
    # no training frame within `gap` frames of a test frame
    dist = np.abs(train[:, None] - test[None, :]).min(axis=1)
    assert dist.min() > gap
    # test frames form exactly `segs` contiguous runs
    assert (np.diff(test) > 1).sum() == segs - 1


def test_held_out_too_short_is_an_error():
    with pytest.raises(ValueError, match="too few"):
        split_held_out(6, 0.5, 2, 3)


def test_select_by_rate_keeps_one_frame_per_interval():
    times = np.arange(0, 2, 0.04)  # 25 fps, 2 s
    assert len(select_by_rate(times, 0)) == 50
    kept = select_by_rate(times, 5)
    assert len(kept) == 10 and kept[0] == 0
    assert np.all(np.diff(times[kept]) >= 0.2 - 1e-9)


def test_sequence_metrics_golden():
    hits = torch.tensor([1, 1, 0, 0, 0, 1, 1, 1, 1, 0.0])
    ids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    m = metrics.group_metrics(hits, ids)
    assert m["acc_sequence_macro"] == (pytest.approx((2 / 3 + 1 / 3 + 3 / 4) / 3), 3)
    assert m["acc_sequence_majority"] == (pytest.approx(2 / 3), 3)


# -- a frame-image tree (CORe50 / Stream-51 layout) -------------------------------------------


def make_tree(root: Path, **kw) -> Path:
    return video.write_frame_tree(root, **kw)


@pytest.fixture()
def tree(tmp_path):
    return make_tree(tmp_path / "frames")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(d))
    return d


def _frame_key(x: torch.Tensor) -> list[bytes]:
    return [bytes((f * 255).round().to(torch.uint8).numpy().tobytes()) for f in x]


@pytest.mark.parametrize("ordering", video.ORDERINGS)
def test_tree_stream_structure(tree, cache, ordering):
    cfg = VideoFramesConfig(ordering=ordering, image_size=8, test_fraction=0.25, gap=1)
    sc = cfg.build(0, tree)
    assert sc.spec.input_shape == (3, 8, 8) and sc.spec.n_outputs == 3
    assert sc.class_names == ("class0", "class1", "class2")
    assert sc.params["variant"] == ordering and sc.variant == ordering
    n_exp = 3 if ordering.startswith("class") and ordering == "class-iid" else 6
    assert len(sc.experiences) == n_exp
    train = [k for e in sc.experiences for k in _frame_key(e.x)]
    test = [k for e in sc.experiences for k in _frame_key(e.x_test)]
    assert not set(train) & set(test), "a frame is both a training and a test frame"
    # every held-out frame's label matches its sequence's class
    for e, ids in zip(sc.experiences, sc.test_sequence_ids, strict=True):
        names = [sc.sequence_names[int(i)] for i in ids]
        assert [sc.class_names[int(y)] for y in e.y_test] == [n.split("/")[0] for n in names]
    # the same held-out frames, whatever the ordering
    base = VideoFramesConfig(ordering="instance", image_size=8, gap=1).build(0, tree)
    assert sorted(test) == sorted(k for e in base.experiences for k in _frame_key(e.x_test))
    # validation never touches a scored test frame
    val = [k for e in sc.val_experiences for k in _frame_key(torch.cat([e.x, e.x_test]))]
    assert not set(val) & set(test)


def test_orderings_are_what_they_say(tree, cache):
    def build(o, seed=0):
        return VideoFramesConfig(ordering=o, image_size=8, gap=1).build(seed, tree)

    inst = build("instance")
    for e, ids in zip(inst.experiences, inst.train_sequence_ids, strict=True):
        assert len(set(ids.tolist())) == 1 and len(e.classes) == 1
    # frames of a sequence in temporal order: the bar moves right one column per frame
    x = inst.experiences[0].x
    cols = x[:, 0, 4, :].argmax(dim=1)
    assert (cols[1:] >= cols[:-1]).float().mean() > 0.7
    ci = build("class-instance")
    classes = [e.classes[0] for e in ci.experiences]
    assert all(classes[2 * k] == classes[2 * k + 1] for k in range(3)), classes
    iid = build("iid")
    assert all(len(e.classes) > 1 for e in iid.experiences)
    # an iid chunk holds every class, and so does its test set
    assert all(set(e.y_test.tolist()) == {0, 1, 2} for e in iid.experiences)
    # deterministic in the seed, different across seeds
    assert build("iid").stream_hash == iid.stream_hash
    assert build("iid", seed=1).stream_hash != iid.stream_hash


def test_n_experiences_merges_blocks(tree, cache):
    sc = VideoFramesConfig(ordering="instance", image_size=8, gap=1, n_experiences=2).build(
        0, tree)
    assert len(sc.experiences) == 2 and sum(len(e.classes) for e in sc.experiences) >= 3


def test_frame_cache_is_used_and_checked(tree, cache, monkeypatch):
    cfg = VideoFramesConfig(ordering="instance", image_size=8, gap=1)
    first = cfg.build(0, tree)
    files = sorted((cache / "video").glob("*.npz"))
    assert len(files) == 6

    def boom(*a, **k):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(video, "_decode_tree_sequence", boom)
    assert cfg.build(0, tree).stream_hash == first.stream_hash
    # a corrupt cache entry is detected by its checksum and decoded again
    monkeypatch.undo()
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))
    files[0].write_bytes(files[0].read_bytes()[:-50] + b"x" * 50)
    assert cfg.build(0, tree).stream_hash == first.stream_hash
    # editing a frame changes the file hash, so the cache is not reused for it
    d = tree / "class0" / "seq0"
    Image.fromarray(np.full((12, 16, 3), 99, np.uint8)).save(d / "frame0.png")
    assert cfg.build(0, tree).stream_hash != first.stream_hash


def test_missing_and_bad_inputs_are_clear_errors(tmp_path, cache):
    with pytest.raises(DataError, match="does not exist"):
        VideoFramesConfig().build(0, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"labels\.csv.*<class>/<sequence>/<frame>\.png"):
        VideoFramesConfig().build(0, tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "labels.csv").write_text("video,label\nx.mp4,a\n")
    with pytest.raises(DataError, match="lacks the column"):
        VideoFramesConfig().build(0, bad)
    (bad / "labels.csv").write_text("file,label\nx.mp4,a\n")
    with pytest.raises(DataError, match="does not exist"):
        VideoFramesConfig().build(0, bad)
    short = make_tree(tmp_path / "short", n_classes=2, seqs_per_class=1, n_frames=4)
    with pytest.raises(DataError, match="too few"):
        VideoFramesConfig(image_size=8).build(0, short)
    with pytest.raises(ValueError, match="ordering"):
        VideoFramesConfig(ordering="random")  # type: ignore[arg-type]


def test_registered():
    assert get_scenario("video-frames").config_class() is VideoFramesConfig


class _Linear(torch.nn.Module):
    """A linear softmax classifier trained online with SGD (enough to show forgetting)."""

    def __init__(self, d: int, c: int, lr: float = 0.5):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(d, c)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr)

    def predict(self, x):
        return self.net(x.flatten(1))

    def observe(self, x, y):
        self.opt.zero_grad()
        torch.nn.functional.cross_entropy(self.net(x.flatten(1)), y).backward()
        self.opt.step()


def test_instance_ordering_forgets_more_than_iid(tree, cache):
    forget, final = {}, {}
    for o in ("iid", "instance"):
        sc = VideoFramesConfig(ordering=o, image_size=8, gap=1).build(0, tree)
        rec = run_stream(_Linear(3 * 64, 3, lr=0.02), sc.experiences, sc.spec)
        forget[o], final[o] = metrics.forgetting_max(rec.R), metrics.acc_final_macro(rec.R)
    assert forget["instance"] > forget["iid"] + 0.4, forget
    assert final["iid"] > final["instance"], final


def test_per_sequence_metrics_come_from_the_runners_final_evaluation(tree, cache):
    sc = VideoFramesConfig(ordering="instance", image_size=8, gap=1).build(0, tree)
    learner = _Linear(3 * 64, 3, lr=0.02)
    rec = run_stream(learner, sc.experiences, sc.spec)
    m = metrics.group_metrics(rec.final_test_scores, sc.test_groups)
    assert set(m) == {"acc_sequence_macro", "acc_sequence_majority"}
    assert m["acc_sequence_macro"][1] == 6  # six sequences
    # The runner's hits are those of the learner after the stream, frame by frame.
    with torch.no_grad():
        hits = torch.cat([(learner.predict(e.x_test).argmax(1) == e.y_test).float()
                          for e in sc.experiences])
    assert np.array_equal(rec.final_test_scores, hits.numpy())
    by_hand = [float(hits[sc.test_groups == g].mean()) for g in range(6)]
    assert m["acc_sequence_macro"][0] == pytest.approx(sum(by_hand) / 6)
    assert m["acc_sequence_majority"][0] == pytest.approx(sum(v > 0.5 for v in by_hand) / 6)


# -- the shipped clips (real decoding with PyAV) ----------------------------------------------


@pytest.mark.slow
def test_shipped_clips_decode_with_pyav(cache):
    need("av")
    sources, origin = video.discover(None)
    assert origin == "shipped" and [s.label for s in sources] == [
        "big_buck_bunny_animation", "cockatoo", "newtons_cradle", "tree"]
    counts = {}
    for s in sources:
        frames, times = video.load_sequence_frames(s, 16)
        assert frames.dtype == np.uint8 and frames.shape[1:] == (16, 16, 3)
        assert np.all(np.diff(times) > 0)
        counts[s.path.name] = len(frames)
    # coded frame counts as documented in data/video/README.md
    assert counts == {"bigbuckbunny.mp4": 132, "cockatoo.mp4": 280,
                      "newtonscradle.gif": 36, "tree.avi": 68}
    # second load comes from the cache, bit-identical
    for s in sources:
        a, _ = video.load_sequence_frames(s, 16)
        b, _ = video.load_sequence_frames(s, 16, use_cache=False)
        assert np.array_equal(a, b)
    assert len(list((cache / "video").glob("*.npz"))) == 4


@pytest.mark.slow
def test_default_scenario_on_shipped_clips(cache):
    need("av")
    sc = VideoFramesConfig().build(0)
    assert sc.spec.n_outputs == 4 and len(sc.experiences) == 4
    assert sc.params["data"] == "shipped"
    # pre-training pool: Omniglot background characters, classes disjoint from the videos
    assert sc.meta_train.n_classes == 100 and sc.meta_train.x.shape == (2000, 3, 32, 32)
    assert sum(e.n_train for e in sc.experiences) > 150
    for e in sc.experiences:
        assert e.x.dtype == torch.float32 and 0 <= e.x.min() and e.x.max() <= 1


def test_labelled_segments_and_corrupt_shipped_file(tmp_path, cache, monkeypatch):
    need("av")
    d = tmp_path / "clips"
    d.mkdir()
    shutil.copy(video.DATA_DIR / "bigbuckbunny.mp4", d / "bunny.mp4")
    (d / "labels.csv").write_text("file,label,start,end\nbunny.mp4,a,0,2.6\n"
                                  "bunny.mp4,b,2.6,\n")
    sc = VideoFramesConfig(image_size=8, gap=1).build(0, d)
    assert sc.class_names == ("a", "b") and len(sc.sequence_names) == 2
    assert sum(e.n_train + e.n_test for e in sc.experiences) <= 132
    # a corrupt shipped file is a DataError naming the fix
    shipped = tmp_path / "shipped"
    shutil.copytree(video.DATA_DIR, shipped)
    (shipped / "tree.avi").write_bytes(b"not a video")
    monkeypatch.setattr(video, "DATA_DIR", shipped)
    with pytest.raises(DataError, match="corrupt.*git checkout"):
        VideoFramesConfig().build(0)
