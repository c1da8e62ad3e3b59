"""MAML++'s checkpoint ensemble (`ensemble_top`): which checkpoints are kept, how their
predictions combine, that it is off by default and leaves training alone, that it survives a
resumed meta-training and the harness checkpoint, and that bad values are refused."""

from __future__ import annotations

import csv
import dataclasses
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_maml_family import _Interrupt, _RandomSampler

from baselines.maml_pp import MAMLPlusPlusConfig
from harness.building import build_learner
from harness.config import BuildContext, apply_overrides
from harness.errors import DivergedError, HarnessError
from harness.prepare import PreparedMemo
from harness.protocol import Budget, Experience, ScenarioSpec
from harness.runner import run_episodes

torch.set_num_threads(1)

IMG = ScenarioSpec(input_shape=(1, 16, 16), n_outputs=3, episodic=True)
# 2 inner steps, per-step BN, learned per-step lrs, multi-step loss and first order for the
# first 2 steps, cosine: every MAML++ switch is on, small enough for a few seconds on a CPU.
SMALL = dict(backbone="conv4", channels=4, inner_steps=2, test_steps=2, meta_batch=2,
             msl_steps=2, da_steps=2, checkpoint_every_s=0.0)


class _Tasks(_RandomSampler):
    """Random 3-way 2-shot tasks (interruptible at call `stop_at`) whose query labels are the
    classes in order, like the validation episodes', so validation scores move as it trains."""

    def draw(self, n, g):
        labels = torch.arange(3).repeat(2).expand(n, -1)
        return (torch.rand(n, 6, 1, 16, 16, generator=g), labels,
                torch.rand(n, 6, 1, 16, 16, generator=g), labels)


def _episodes(n: int, seed: int = 1) -> list[Experience]:
    """Fixed 3-way 2-shot validation or test episodes with 5 queries per class."""
    g = torch.Generator().manual_seed(seed)
    return [Experience(x=torch.rand(6, 1, 16, 16, generator=g), y=torch.arange(3).repeat(2),
                       x_test=torch.rand(15, 1, 16, 16, generator=g),
                       y_test=torch.arange(3).repeat(5), batch_size=6) for _ in range(n)]


class _Validate:
    """What the harness passes to meta_train as `validate`: `episodes` run through its episode
    loop on the learner as it is; the mean accuracy (minus the mean MSE), -inf on divergence."""

    def __init__(self, learner, episodes) -> None:
        self.learner, self.episodes, self.n_episodes = learner, episodes, len(episodes)

    def __call__(self) -> float:
        try:
            scores = run_episodes(self.learner, self.episodes, self.learner.spec).scores
        except DivergedError:
            return -math.inf
        mean = float(scores.mean())
        return -mean if self.learner.spec.task == "regression" else mean


def _build(resume_path=None, **changes):
    cfg = MAMLPlusPlusConfig(**{**SMALL, "meta_steps": 6, "ensemble_top": 3, "val_every": 1,
                                **changes})
    return cfg.build(BuildContext(spec=IMG, seed=0, resume_path=resume_path))


def _single_from(members_weights: dict, **changes):
    """A non-ensembling learner whose meta-weights are `members_weights`."""
    single = _build(ensemble_top=0, **changes)
    with torch.no_grad():
        for name, p in single.meta_params().items():
            p.copy_(members_weights[name])
    return single


def _val_score_by_hand(learner, episodes) -> float:
    """Mean query accuracy of the learner's current meta-weights after `test_steps` inner
    steps on each episode's support set, from the adaptation and forward primitives."""
    meta = {k: v.detach().clone() for k, v in learner.meta_params().items()}
    steps = learner.cfg.test_steps
    accs = []
    for ep in episodes:
        with torch.enable_grad():
            p, _ = learner.adapt(meta, ep.x, ep.y, steps, second_order=False)
        with torch.no_grad():
            out = learner._query_out(p, ep.x, ep.x_test, steps)
        accs.append((out.argmax(-1) == ep.y_test).float().mean().item())
    return float(np.mean(accs))


def test_keep_if_best_keeps_exactly_the_k_best_scores_ties_to_the_later() -> None:
    learner = _build(ensemble_top=3)
    offered = [(0.5, 1), (0.7, 2), (0.6, 3), (0.7, 4), (0.4, 5), (0.9, 6), (0.6, 7),
               (float("nan"), 8), (float("inf"), 9), (0.7, 10)]
    for score, step in offered:
        with torch.no_grad():  # weights that say which step they come from
            for p in learner.meta_params().values():
                p.fill_(float(step))
        learner.keep_if_best(score, step)
    # By hand: the three best of the finite scores; among equal scores the later step wins,
    # so of the three 0.7s, steps 10 and 4 stay and step 2 is dropped.
    held = sorted(zip(learner.ens_step.tolist(), learner.ens_score.tolist(), strict=True))
    assert held == [(4, 0.7), (6, 0.9), (10, 0.7)]
    for step, member in zip(learner.ens_step.tolist(), learner.members(), strict=True):
        for name, v in member.items():
            assert torch.all(v == step), f"slot of step {step}: {name} holds other weights"


def test_meta_training_keeps_the_k_best_validated_checkpoints() -> None:
    val = _episodes(2)
    learner = _build(meta_steps=8, ensemble_top=3, val_every=1)
    seen: list[tuple[float, int, dict]] = []

    def progress(phase, done, total, info) -> None:
        if phase == "validation":  # called right after each validation, before the next step
            seen.append((_val_score_by_hand(learner, val), done,
                         {k: v.detach().clone() for k, v in learner.meta_params().items()}))

    learner.meta_train(_Tasks(), Budget(), progress, _Validate(learner, val))
    assert [s for _, s, _ in seen] == list(range(1, 9)), "validated after every step"
    assert len({round(s, 6) for s, _, _ in seen}) > 2, "the scores must differ to test a pick"
    best = sorted(seen, key=lambda t: (t[0], t[1]), reverse=True)[:3]  # ties: the later step
    held = dict(zip(learner.ens_step.tolist(), learner.ens_score.tolist(), strict=True))
    assert sorted(held) == sorted(step for _, step, _ in best)
    by_step = {step: (score, weights) for score, step, weights in seen}
    slots = learner.ens_step.tolist()
    for slot, member in zip(range(3), learner.members(), strict=True):
        score, weights = by_step[slots[slot]]
        assert held[slots[slot]] == pytest.approx(score, abs=1e-12)
        for name, v in member.items():
            assert torch.equal(v, weights[name]), (slots[slot], name)
    assert int(learner.ens_n_val) == 2
    assert learner.describe()["checkpoint_selection"] == (
        "ensemble of top-3 by val accuracy (every 1 steps, 2 val episodes; members from steps "
        + ", ".join(map(str, sorted(held))) + ")")


def test_validation_every_n_steps_and_after_the_last() -> None:
    steps = []
    learner = _build(meta_steps=7, ensemble_top=2, val_every=3)
    learner.meta_train(_Tasks(), Budget(), lambda ph, d, t, i: steps.append(d)
                       if ph == "validation" else None, _Validate(learner, _episodes(1)))
    assert steps == [3, 6, 7]


def test_the_ensemble_predicts_the_mean_of_its_members_logits() -> None:
    learner = _build(meta_steps=6, ensemble_top=3, val_every=2)
    learner.meta_train(_Tasks(), Budget(), None, _Validate(learner, _episodes(2)))
    members = learner.members()
    assert len(members) == 3
    (ep,) = _episodes(1, seed=5)
    learner.reset()
    learner.observe(ep.x, ep.y)
    with torch.no_grad():
        combined = learner.predict(ep.x_test)
    assert len(learner._adapted) == 3, "every member adapts on the support set"
    by_member = []
    for m in members:  # each member alone, as a learner of its own
        single = _single_from(m, meta_steps=6)
        single.reset()
        single.observe(ep.x, ep.y)
        with torch.no_grad():
            by_member.append(single.predict(ep.x_test))
    by_hand = (by_member[0] + by_member[1] + by_member[2]) / 3
    torch.testing.assert_close(combined, by_hand, rtol=1e-6, atol=1e-6)
    for out in by_member:
        assert not torch.allclose(out, combined, atol=1e-4), "members must differ"
    probs = torch.stack([o.softmax(-1) for o in by_member]).mean(0)
    assert not torch.allclose(combined.softmax(-1), probs, atol=1e-6), \
        "logits are averaged, not probabilities"


def test_ensemble_top_0_is_the_last_checkpoint_as_before() -> None:
    """Off: no ensemble entries in the state dict (the checkpoint format is unchanged), rows say
    'last', meta_train needs no validation episodes, and a learner answers with its own
    meta-weights. Validation never perturbs training: with the ensemble on, the meta-weights
    (and the predictions of an off learner from them) are those of the run without it."""
    off = _build(ensemble_top=0)
    assert not [k for k in off.state_dict() if k.startswith("ens")]
    assert set(off.state_dict()) == {f"params.{k}" for k in off.params} | {
        f"lrs.{k}" for k in off.lrs}
    off.meta_train(_Tasks(), Budget(), None, None)
    assert off.describe()["checkpoint_selection"] == "last"
    on = _build(ensemble_top=2, val_every=2)
    on.meta_train(_Tasks(), Budget(), None, _Validate(on, _episodes(2)))
    for k, v in off.state_dict().items():
        assert torch.equal(on.state_dict()[k], v), k
    (ep,) = _episodes(1, seed=5)
    copy = _single_from({k: v.detach() for k, v in on.meta_params().items()})
    outs = []
    for learner in (off, copy):
        learner.reset()
        learner.observe(ep.x, ep.y)
        with torch.no_grad():
            outs.append(learner.predict(ep.x_test))
    assert torch.equal(outs[0], outs[1])
    on.reset()
    on.observe(ep.x, ep.y)
    with torch.no_grad():
        assert not torch.equal(on.predict(ep.x_test), outs[0]), "on: the ensemble answers"


def test_resumed_meta_training_keeps_the_same_ensemble(tmp_path) -> None:
    val = _episodes(2)
    straight = _build(meta_steps=8, ensemble_top=2, val_every=2)
    straight.meta_train(_Tasks(), Budget(), None, _Validate(straight, val))
    path = tmp_path / "partial.safetensors"
    first = _build(path, meta_steps=8, ensemble_top=2, val_every=2)
    with pytest.raises(_Interrupt):  # stops after 5 steps: two validations held
        first.meta_train(_Tasks(stop_at=5), Budget(), None, _Validate(first, val))
    saved = load_file(str(path))
    assert sorted(saved["model.ens_step"].tolist()) == [2, 4]
    assert "model.ens1/conv0/weight" in saved, "the partial checkpoint carries the members"
    restored = _build(path, meta_steps=8, ensemble_top=2, val_every=2)
    with pytest.raises(_Interrupt):  # restores the partial checkpoint, then stops at once
        restored.meta_train(_Tasks(stop_at=0), Budget(), None, _Validate(restored, val))
    assert restored.ens_step.tolist() == first.ens_step.tolist()
    assert restored.ens_score.tolist() == first.ens_score.tolist()
    for a, b in zip(restored.members(), first.members(), strict=True):
        for name, v in b.items():
            assert torch.equal(a[name], v), name
    resumed = _build(path, meta_steps=8, ensemble_top=2, val_every=2)
    resumed.meta_train(_Tasks(), Budget(), None, _Validate(resumed, val))
    assert not path.exists()
    assert resumed.ens_step.tolist() == straight.ens_step.tolist()
    assert resumed.ens_score.tolist() == straight.ens_score.tolist()
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=1e-5, atol=1e-6,
                                   msg=lambda m, k=k: f"{k}: {m}")


def test_a_cached_checkpoint_gives_the_same_ensemble_and_predictions(tmp_path, monkeypatch):
    """The members are in the harness checkpoint: a second run loads them from the file and
    predicts exactly what the freshly trained learner did."""
    from harness import experiment

    run = experiment.RunConfig(
        scenario="omniglot-fewshot", learner="maml++", out_dir=tmp_path / "res",
        cache_dir=tmp_path / "cache",
        overrides={"ways": "3", "test_episodes": "3", "val_episodes": "2", "meta_steps": "4",
                   "meta_batch": "2", "channels": "4", "ensemble_top": "2", "val_every": "2"})
    scenario = experiment.build_scenario("omniglot-fewshot", 0, None, {
        "ways": "3", "test_episodes": "3", "val_episodes": "2"})

    def execute():
        memo = PreparedMemo()
        res = experiment.execute(run, scenario=scenario, memo=memo)
        assert res.status == "ok", res.error
        rows = {r["metric"]: r for r in csv.DictReader(res.csv_path.open())}
        (prepared,) = memo.values()
        return prepared, rows["episode_acc"]

    trained, row = execute()
    cached, row2 = execute()
    assert not trained.info["checkpoint_cached"] and cached.info["checkpoint_cached"]
    assert row["checkpoint_selection"] == (
        "ensemble of top-2 by val accuracy (every 2 steps, 2 val episodes; members from steps "
        "2, 4)")
    assert (row2["checkpoint_selection"], row2["value"]) == (row["checkpoint_selection"],
                                                            row["value"])
    on_disk = load_file(tmp_path / "cache" / "checkpoints" / trained.info["checkpoint"])
    assert sorted(on_disk["ens_step"].tolist()) == [2, 4]
    for slot in (0, 1):  # the members' weights themselves are in the file
        assert on_disk[f"ens{slot}/conv0/weight"].abs().sum() > 0
    cfg = apply_overrides(MAMLPlusPlusConfig, {k: run.overrides[k] for k in (
        "meta_steps", "meta_batch", "channels", "ensemble_top", "val_every")}, "maml++")
    learners = [build_learner(cfg, scenario.spec, run, None, p.state)
                for p in (trained, cached)]
    assert [len(learner.members()) for learner in learners] == [2, 2]
    for ep in scenario.experiences:
        outs = []
        for learner in learners:
            learner.reset()
            learner.observe(ep.x, ep.y)
            with torch.no_grad():
                outs.append(learner.predict(ep.x_test))
        assert torch.equal(outs[0], outs[1])


def test_ensembling_without_validation_episodes_is_a_one_line_error(tmp_path, monkeypatch):
    from harness import experiment

    learner = _build()
    with pytest.raises(HarnessError, match="ensemble_top=3 picks checkpoints on validation") as e:
        learner.meta_train(_Tasks(), Budget(), None, None)
    assert "\n" not in str(e.value)
    run = experiment.RunConfig(
        scenario="omniglot-fewshot", learner="maml++", preset="paper", out_dir=tmp_path / "r",
        cache_dir=tmp_path / "c", overrides={"val_episodes": "0", "test_episodes": "2",
                                             "meta_steps": "1"})
    with pytest.raises(HarnessError, match="set the scenario's val_episodes > 0 or "
                                           "learner.ensemble_top=0"):
        experiment.execute(run)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("ensemble_top", "-1", "ensemble_top must be >= 0, got -1"),
    ("val_every", "0", "val_every must be >= 1, got 0"),
    ("ensemble_top", "two", "bad value 'two' for ensemble_top"),
])
def test_bad_ensemble_values_are_one_line_errors(key, value, message) -> None:
    with pytest.raises(HarnessError, match=message) as e:
        apply_overrides(MAMLPlusPlusConfig, {key: value}, "learner maml++")
    assert "\n" not in str(e.value)


def test_presets_paper_ensembles_top_5_every_500_steps_quick_does_not() -> None:
    omni20 = ScenarioSpec(input_shape=(1, 28, 28), n_outputs=20, episodic=True)
    paper = MAMLPlusPlusConfig(recipe="paper").resolved(omni20)
    quick = MAMLPlusPlusConfig(recipe="quick").resolved(omni20)
    assert (paper.ensemble_top, paper.val_every) == (5, 500)
    assert (paper.meta_batch, paper.meta_steps, paper.msl_steps, paper.da_steps,
            paper.backbone) == (8, 50000, 5000, 0, "conv4")
    assert quick.ensemble_top == 0
    assert dataclasses.replace(paper, ensemble_top=2).resolved(omni20).ensemble_top == 2


def test_paper_preset_on_miniimagenet_is_the_authors_config_and_set_values_win() -> None:
    # experiment_config/mini-imagenet_maml++-mini-imagenet_1_2_0.01_48_5_0.json: batch 2, 48
    # filters, inner lr 0.01, 100 epochs of 500, MSL over 15 epochs, second order from the
    # start, min lr = meta lr (no cosine), max pooling.
    mini = ScenarioSpec(input_shape=(3, 84, 84), n_outputs=5, episodic=True)
    paper = MAMLPlusPlusConfig(recipe="paper").resolved(mini)
    assert (paper.backbone, paper.channels, paper.meta_batch, paper.meta_steps,
            paper.msl_steps, paper.da_steps, paper.inner_lr, paper.cosine,
            paper.ensemble_top) == ("conv4", 48, 2, 50000, 7500, 0, 0.01, False, 5)
    # Omniglot keeps MAML++'s inner lr 0.1, cosine annealing and MAML's 64 channels.
    omni = MAMLPlusPlusConfig(recipe="paper").resolved(
        ScenarioSpec(input_shape=(1, 28, 28), n_outputs=5, episodic=True))
    assert (omni.inner_lr, omni.cosine, omni.channels) == (0.1, True, 0)
    # What the user sets is kept, including cosine=True and a width where the recipe has one.
    mine = MAMLPlusPlusConfig(recipe="paper", channels=32, inner_lr=0.05,
                              cosine=True).resolved(mini)
    assert (mine.channels, mine.inner_lr, mine.cosine) == (32, 0.05, True)
