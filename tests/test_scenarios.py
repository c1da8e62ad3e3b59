"""Tests of the scenario families: shipped data, splits, determinism, shapes, learnability."""

from __future__ import annotations

import ast
import hashlib
import inspect
import math
import shutil
import textwrap
from dataclasses import asdict, dataclass, fields

import pytest
import torch

from harness.errors import DataError
from harness.protocol import Experience, LabeledPool, Scenario, ScenarioSpec, TaskSampler
from harness.registry import get_scenario, list_scenarios
from scenarios import omniglot as og
from scenarios.base import BuiltScenario, ScenarioConfig, bounded, one_of
from scenarios.sine import SineIncrementalConfig, SineTaskSampler
from scenarios.synthetic import SyntheticStreamConfig

SMALL_OMNIGLOT = {"n_classes": 30, "n_val_classes": 12}


@pytest.fixture(scope="module")
def omni():
    return og.OmniglotStreamConfig(**SMALL_OMNIGLOT).build(seed=0)


# -- shipped data -----------------------------------------------------------------------------


def test_shipped_files_match_sha256sums_and_hardcoded_hashes():
    sums = (og.DATA_DIR / "SHA256SUMS").read_text().split("\n")
    listed = dict(reversed(line.split()) for line in sums if line.strip())
    assert listed == og.SHA256
    for name, expected in og.SHA256.items():
        assert hashlib.sha256((og.DATA_DIR / name).read_bytes()).hexdigest() == expected
        assert og.verified_path(name) == og.DATA_DIR / name


def test_corrupt_file_raises_data_error_naming_it(tmp_path):
    data = bytearray((og.DATA_DIR / "images_evaluation.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "images_evaluation.npz").write_bytes(bytes(data))
    with pytest.raises(DataError, match="images_evaluation.npz") as err:
        og.load_omniglot("evaluation", 28, root=tmp_path)
    assert og.SHA256["images_evaluation.npz"] in str(err.value)
    assert "corrupt" in str(err.value)


def test_missing_file_raises_data_error_with_fix(tmp_path):
    with pytest.raises(DataError, match="images_background.npz.*missing"):
        og.load_omniglot("background", 28, root=tmp_path)
    with pytest.raises(DataError, match="omniglot_characters.csv"):
        og.omniglot_characters(tmp_path)
    with pytest.raises(DataError, match=str(tmp_path)):
        og.OmniglotStreamConfig().build(0, data_dir=tmp_path)


def test_missing_shipped_file_message_says_how_to_restore(monkeypatch, tmp_path):
    monkeypatch.setattr(og, "DATA_DIR", tmp_path)
    with pytest.raises(DataError, match="git checkout scenarios/data"):
        og.verified_path("LICENSE")


def test_good_copy_in_data_dir_is_accepted(tmp_path):
    shutil.copy(og.DATA_DIR / "omniglot_characters.csv", tmp_path)
    assert og.omniglot_characters(tmp_path) == og.omniglot_characters()
    assert og.verified_path("omniglot_characters.csv", tmp_path).parent == tmp_path.resolve()


@pytest.mark.parametrize("size", [28, 84])
def test_loaded_images_shape_range_and_ink_fraction(size):
    images, ids = og.load_omniglot("evaluation", size)
    assert images.shape == (659, 20, 1, size, size)
    assert images.dtype == torch.float32
    assert ids.tolist() == sorted(ids.tolist()) == list(og.EVALUATION_CHAR_IDS)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    # Ink = 1: about 8 % of the mass (92 % if the data were not inverted).
    assert 0.05 < float(images.mean()) < 0.12
    # Border pixels are background.
    assert float(images[..., 0, :].mean()) < 0.02
    assert og.load_omniglot("evaluation", size)[0] is images  # cached per (split, size)


def test_background_split_and_character_table():
    images, ids = og.load_omniglot("background", 28)
    assert images.shape == (964, 20, 1, 28, 28)
    assert ids.tolist() == list(og.BACKGROUND_CHAR_IDS)
    rows = og.omniglot_characters()
    assert len(rows) == 1623
    split_of = {int(r["char_id"]): r["split"] for r in rows}
    assert {c for c, s in split_of.items() if s == "background"} == set(og.BACKGROUND_CHAR_IDS)


# -- splits -----------------------------------------------------------------------------------


def test_class_pools_disjoint_and_cover_all_characters():
    bg, scored, val = map(set, (og.BACKGROUND_CHAR_IDS, og.SCORED_CHAR_IDS,
                                og.VALIDATION_CHAR_IDS))
    assert (len(bg), len(scored), len(val)) == (964, 600, 59)
    assert not bg & scored and not bg & val and not scored & val
    assert bg | scored | val == set(range(1, 1624))


def test_validation_pool_is_the_documented_permutation():
    assert og.evaluation_split_from_permutation() == (og.SCORED_CHAR_IDS,
                                                      og.VALIDATION_CHAR_IDS)


def test_stream_classes_come_from_their_pools(omni):
    assert len(omni.class_ids) == len(set(omni.class_ids)) == SMALL_OMNIGLOT["n_classes"]
    assert set(omni.class_ids) <= set(og.SCORED_CHAR_IDS)
    assert len(omni.val_class_ids) == SMALL_OMNIGLOT["n_val_classes"]
    assert set(omni.val_class_ids) <= set(og.VALIDATION_CHAR_IDS)


def test_train_and_test_drawings_disjoint_and_correct(omni):
    images, _ = og.load_omniglot("evaluation", 28)
    for e in omni.experiences:
        for label in e.classes:
            row = omni.class_ids[label] - 965
            train = e.x[e.y == label]
            test = e.x_test[e.y_test == label]
            assert len(train) == 15 and len(test) == 5
            # Training images are drawings 1..15 in some order, test images drawings 16..20.
            train_sorted = sorted(train.flatten(1).tolist())
            assert train_sorted == sorted(images[row, :15].flatten(1).tolist())
            assert torch.equal(test, images[row, 15:])


def test_meta_train_pool_is_the_background_split(omni):
    pool = omni.meta_train
    assert isinstance(pool, LabeledPool)
    assert pool.n_classes == 964 and pool.x.shape == (964 * 20, 1, 28, 28)
    images, _ = og.load_omniglot("background", 28)
    idx = pool.class_indices(5)
    assert torch.equal(pool.x[idx], images[5])


# -- the omniglot-stream scenario -------------------------------------------------------------


def test_omniglot_stream_structure(omni):
    assert isinstance(omni, Scenario)
    assert omni.id == "omniglot-stream" and omni.version == 1
    assert omni.spec.input_shape == (1, 28, 28) and omni.spec.n_outputs == 30
    assert [e.classes for e in omni.experiences] == [tuple(range(i, i + 10)) for i in (0, 10, 20)]
    y = torch.cat([e.y for e in omni.experiences])
    # Class after class, batch 1, 15 consecutive images per class.
    assert y.tolist() == [c for c in range(30) for _ in range(15)]
    assert all(e.batch_size == 1 and len(e) == 150 for e in omni.experiences)
    assert omni.val_spec is not None and omni.val_spec.n_outputs == 12
    vy = torch.cat([e.y for e in omni.val_experiences])
    assert vy.tolist() == [c for c in range(12) for _ in range(15)]
    assert [len(e.classes) for e in omni.val_experiences] == [10, 2]
    assert omni.params == {**asdict(og.OmniglotStreamConfig(**SMALL_OMNIGLOT)), "seed": 0}


def test_omniglot_stream_determinism(omni):
    again = og.OmniglotStreamConfig(**SMALL_OMNIGLOT).build(seed=0)
    assert again.stream_hash == omni.stream_hash
    assert omni.stream_hash.startswith("omniglot-stream-v1-")
    other = og.OmniglotStreamConfig(**SMALL_OMNIGLOT).build(seed=1)
    assert other.stream_hash != omni.stream_hash
    assert other.class_ids != omni.class_ids
    # A longer stream from the same seed does not change the validation stream.
    longer = og.OmniglotStreamConfig(n_classes=40, n_val_classes=12).build(seed=0)
    assert longer.val_class_ids == omni.val_class_ids
    assert longer.class_ids[:30] == omni.class_ids


def test_experience_is_reiterable(omni):
    e = omni.experiences[1]
    first, second = list(e), list(e)
    assert len(first) == len(e) == 150
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
               for a, b in zip(first, second, strict=True))


def test_omniglot_three_channels_and_uneven_last_experience():
    s = og.OmniglotStreamConfig(n_classes=12, classes_per_exp=5, channels=3,
                                n_val_classes=12).build(3)
    assert s.spec.input_shape == (3, 28, 28) and s.val_spec is None
    assert [len(e.classes) for e in s.experiences] == [5, 5, 2]
    x = s.experiences[0].x
    assert x.shape == (75, 3, 28, 28)
    assert torch.equal(x[:, 0], x[:, 2])
    assert s.meta_train.x.shape == (964 * 20, 3, 28, 28)


@pytest.mark.slow
def test_omniglot_84px_stream():
    s = og.OmniglotStreamConfig(n_classes=10, n_val_classes=5, image_size=84).build(0)
    assert s.spec.input_shape == (1, 84, 84)
    assert s.experiences[0].x.shape == (150, 1, 84, 84)
    assert s.experiences[0].x_test.shape == (50, 1, 84, 84)
    assert s.meta_train.x.shape == (964 * 20, 1, 84, 84)


@pytest.mark.parametrize(
    "kwargs",
    [{"n_classes": 0}, {"n_classes": 601}, {"classes_per_exp": 0}, {"channels": 2},
     {"image_size": 4}, {"train_per_class": 16, "test_per_class": 5}, {"test_per_class": 0},
     {"n_val_classes": 60}],
)
def test_omniglot_bad_config(kwargs):
    with pytest.raises(ValueError, match="must be"):
        og.OmniglotStreamConfig(**kwargs)


def test_registry_builds_omniglot_config():
    assert get_scenario("omniglot-stream").config_class() is og.OmniglotStreamConfig


# -- synthetic-stream -------------------------------------------------------------------------


def test_synthetic_stream_shapes_and_determinism():
    cfg = SyntheticStreamConfig()
    s = cfg.build(0)
    assert s.spec.input_shape == (1, 8, 8) and s.spec.n_outputs == 10
    assert [e.classes for e in s.experiences] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for e in s.experiences:
        assert e.x.shape == (40, 1, 8, 8) and e.x_test.shape == (20, 1, 8, 8)
        assert set(e.y.tolist()) == set(e.classes) == set(e.y_test.tolist())
    assert isinstance(s.meta_train, LabeledPool) and s.meta_train.n_classes == 20
    assert len(s.meta_train.x) == 400
    assert s.val_spec.n_outputs == 4 and {c for e in s.val_experiences for c in e.classes} == {
        0, 1, 2, 3}
    assert cfg.build(0).stream_hash == s.stream_hash != cfg.build(1).stream_hash
    assert s.params["seed"] == 0 and s.params["noise"] == 0.5


def test_synthetic_prototypes_fixed_across_seeds():
    # With no noise every sample is its class prototype, whatever the seed.
    a = SyntheticStreamConfig(noise=0.0).build(0).experiences[0]
    b = SyntheticStreamConfig(noise=0.0).build(7).experiences[0]
    for c in a.classes:
        assert torch.equal(a.x[a.y == c][0], b.x[b.y == c][0])


def test_synthetic_meta_train_pool_is_seed_independent_and_disjoint():
    a, b = SyntheticStreamConfig().build(0), SyntheticStreamConfig().build(5)
    assert torch.equal(a.meta_train.x, b.meta_train.x)
    assert torch.equal(a.meta_train.y, b.meta_train.y)
    scored = SyntheticStreamConfig(noise=0.0, meta_train_classes=0).build(0)
    assert scored.meta_train is None
    protos = torch.cat([e.x for e in scored.experiences]).flatten(1)
    meta = a.meta_train.x.flatten(1)
    # Meta-training classes are other prototypes: every class mean is far from every scored one.
    means = torch.stack([meta[a.meta_train.class_indices(c)].mean(0) for c in range(20)])
    assert float(torch.cdist(protos, means).min()) > 5.0


def _lstsq_accuracy(train: list[Experience], test: list[Experience], n_classes: int) -> float:
    x = torch.cat([e.x for e in train]).flatten(1).double()
    y = torch.cat([e.y for e in train])
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    w = torch.linalg.lstsq(x, torch.nn.functional.one_hot(y, n_classes).double()).solution
    xt = torch.cat([e.x_test for e in test]).flatten(1).double()
    xt = torch.cat([xt, torch.ones(len(xt), 1, dtype=xt.dtype)], 1)
    yt = torch.cat([e.y_test for e in test])
    return float(((xt @ w).argmax(1) == yt).double().mean())


def test_synthetic_stream_is_learnable():
    s = SyntheticStreamConfig().build(0)
    assert _lstsq_accuracy(s.experiences, s.experiences, 10) > 0.8


def test_synthetic_stream_learnable_online():
    torch.manual_seed(0)
    s = SyntheticStreamConfig().build(1)
    model = torch.nn.Linear(64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for e in s.experiences:
        for x, y in e:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x.flatten(1)), y).backward()
            opt.step()
    xt = torch.cat([e.x_test for e in s.experiences]).flatten(1)
    yt = torch.cat([e.y_test for e in s.experiences])
    # One online pass, class-incremental, chance = 0.1: the prototypes are far apart.
    assert float((model(xt).argmax(1) == yt).float().mean()) > 0.8


@pytest.mark.parametrize("kwargs", [{"n_classes": 0}, {"noise": -1.0}, {"batch_size": 0},
                                    {"size": 0}, {"channels": 4}, {"meta_train_classes": -1}])
def test_synthetic_bad_config(kwargs):
    with pytest.raises(ValueError, match="must be"):
        SyntheticStreamConfig(**kwargs)


# -- sine-incremental -------------------------------------------------------------------------


def test_sine_stream_shapes_and_targets():
    s = SineIncrementalConfig().build(0)
    assert s.spec.input_shape == (11,) and s.spec.n_outputs == 1
    assert s.spec.task == "regression"
    assert len(s.experiences) == 10 and len(s.val_experiences) == 10
    for k, e in enumerate(s.experiences):
        assert len(e) == 40 and e.batch_size == 8
        assert e.x.shape == (320, 11) and e.y.shape == (320, 1)
        assert e.x_test.shape == (100, 11) and e.y_test.shape == (100, 1)
        slot = torch.zeros(10)
        slot[k] = 1.0
        assert torch.equal(e.x[:, 1:], slot.expand(320, 10))
        z = e.x[:, 0]
        assert float(z.min()) >= -5 and float(z.max()) <= 5
        a, p = s.amplitude[k], s.phase[k]
        assert 0.1 <= a <= 5 and 0 <= p <= math.pi
        torch.testing.assert_close(e.y[:, 0], a * torch.sin(z + p))
        torch.testing.assert_close(e.y_test[:, 0], a * torch.sin(e.x_test[:, 0] + p))
        xb, yb = next(iter(e))
        assert xb.shape == (8, 11) and yb.shape == (8, 1)
    for k, e in enumerate(s.val_experiences):
        torch.testing.assert_close(
            e.y[:, 0], s.val_amplitude[k] * torch.sin(e.x[:, 0] + s.val_phase[k]))
    assert s.amplitude != s.val_amplitude


def test_sine_determinism_and_meta_train_sampler():
    cfg = SineIncrementalConfig()
    s = cfg.build(0)
    assert cfg.build(0).stream_hash == s.stream_hash != cfg.build(1).stream_hash
    assert s.stream_hash.startswith("sine-incremental-v1-")
    sampler = s.meta_train
    assert isinstance(sampler, SineTaskSampler) and isinstance(sampler, TaskSampler)
    g = torch.Generator().manual_seed(5)
    task1, task2 = sampler.sample(g), sampler.sample(g)
    assert len(task1) == 10 and task1[0].x.shape == (320, 11)
    assert not torch.equal(task1[0].y, task2[0].y)
    again = sampler.sample(torch.Generator().manual_seed(5))
    assert torch.equal(again[3].y, task1[3].y)


@pytest.mark.parametrize("kwargs", [{"n_functions": 0}, {"samples_per_function": 0},
                                    {"batch_size": 0}, {"test_points": 0}])
def test_sine_bad_config(kwargs):
    with pytest.raises(ValueError, match="must be"):
        SineIncrementalConfig(**kwargs)


@pytest.mark.parametrize("scenario_id", ["omniglot-stream", "synthetic-stream",
                                         "sine-incremental"])
def test_registered_configs_have_field_docstrings_and_defaults(scenario_id):
    cls = get_scenario(scenario_id).config_class()
    cfg = cls()
    assert callable(cfg.build) and cfg.ID == scenario_id
    # Every field is followed by a one-line docstring (a string literal) in the class body.
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    documented = {
        a.target.id for a, b in zip(body, body[1:], strict=False)
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr)
        and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str)
    }
    assert documented == {f.name for f in fields(cls)}


@dataclass(frozen=True)
class _Ranged(ScenarioConfig):
    n: int = bounded(3, ge=1, le=5)
    frac: float = bounded(0.5, gt=0, lt=1)
    mode: str = one_of("a", ("a", "b"))

    ID = "ranged"
    VERSION = 2


def test_scenario_config_checks_declared_ranges_and_stamps_what_it_builds():
    for entry in list_scenarios():
        assert issubclass(entry.config_class(), ScenarioConfig), entry.id
    with pytest.raises(ValueError, match=r"^n must be in \[1, 5\], got 6$"):
        _Ranged(n=6)
    with pytest.raises(ValueError, match=r"^frac must be in \(0, 1\), got 1.0$"):
        _Ranged(frac=1.0)
    with pytest.raises(ValueError, match=r"^mode must be 'a' or 'b', got 'c'$"):
        _Ranged(mode="c")
    spec = ScenarioSpec(input_shape=(1,), n_outputs=2)
    built = _Ranged(n=4).built(BuiltScenario, 7, {"data": "x"}, spec=spec, experiences=[],
                               val_experiences=[], meta_train=None)
    assert (built.id, built.version) == ("ranged", 2)
    assert built.params == {"n": 4, "frac": 0.5, "mode": "a", "seed": 7, "data": "x"}
