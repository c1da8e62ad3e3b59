"""`multistage`: each stage's update rule against a step computed by hand, the stages S builds,
the meta-gradients, and that meta-training makes it learn."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from baselines.multistage import MultistageConfig
from harness import api
from harness.config import BuildContext
from harness.errors import HarnessError
from harness.protocol import Budget, Experience, LabeledPool, ScenarioSpec
from harness.registry import get_learner, make_config

VEC = ScenarioSpec(input_shape=(2,), n_outputs=1, task="regression")
IMG = ScenarioSpec(input_shape=(1, 28, 28), n_outputs=5)


def _learner(spec=VEC, **cfg):
    return MultistageConfig(init="random", hidden=2, **cfg).build(BuildContext(spec=spec))


def test_stage_updates_by_hand() -> None:
    learner = _learner(stages=3, lr=0.5)
    net = learner.net
    with torch.no_grad():  # slow MLP = identity on positive inputs, then known plastic weights
        net.slow[1].weight.copy_(torch.eye(2))
        net.slow[1].bias.zero_()
        net.slow[3].weight.copy_(torch.eye(2))
        net.slow[3].bias.zero_()
        net.medium.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        net.medium.bias.zero_()
        net.fast.weight.copy_(torch.tensor([[1.0, 1.0]]))
        net.fast.bias.copy_(torch.tensor([0.5]))
        net.log_eta_f.fill_(0.0)  # eta_f* = 1, eta_m* = 0.1: stream eta_m = 0.5 * 0.1
        net.log_eta_m.fill_(torch.log(torch.tensor(0.1)))
    learner.reset()
    bf, bm = learner.betas[-1], learner.betas[0]
    assert bf == pytest.approx(1e-3) and bm == pytest.approx(1e-4)
    slow_before = [p.clone() for p in net.slow.parameters()]
    # x = (1, 2): a = slow(x) = (1, 2); h = relu(Wm a) = (1, 4); out = 1 + 4 + 0.5 = 5.5
    learner.observe(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.5]]))
    # MSE loss (out - y)^2 = 4; d/dout = 2 (5.5 - 3.5) = 4
    # fast: grad W = 4 h = (4, 16), grad b = 4; scale 1 + |h|^2 = 18; the weights start at
    # their start, so the decay term is 0: W' = W - 0.5 * grad / 18
    wf, bfast = learner.weights[2], learner.weights[3]
    assert wf.tolist()[0] == pytest.approx([1 - 0.5 * 4 / 18, 1 - 0.5 * 16 / 18])
    assert bfast.item() == pytest.approx(0.5 - 0.5 * 4 / 18)
    # medium: d/dh = 4 * Wf = (4, 4) (both units active); grad Wm = outer((4, 4), a) =
    # [[4, 8], [4, 8]], grad bm = (4, 4); scale 1 + |a|^2 = 6; eta_m = 0.05
    wm, bmed = learner.weights[0], learner.weights[1]
    assert wm.tolist() == [pytest.approx([1 - 0.05 * 4 / 6, -0.05 * 8 / 6]),
                           pytest.approx([-0.05 * 4 / 6, 2 - 0.05 * 8 / 6])]
    assert bmed.tolist() == pytest.approx([-0.05 * 4 / 6, -0.05 * 4 / 6])
    # the slow stage is frozen online
    assert all(torch.equal(a, b) for a, b in zip(slow_before, net.slow.parameters(),
                                                 strict=True))
    # the decay: with a zero gradient (y = out), W'' = W' - beta (W' - W0)
    out = learner.predict(torch.tensor([[1.0, 2.0]]))
    wf1, wm1 = wf.clone(), wm.clone()
    learner.observe(torch.tensor([[1.0, 2.0]]), out)
    w0f = torch.tensor([[1.0, 1.0]])
    assert torch.allclose(learner.weights[2], wf1 - bf * (wf1 - w0f), atol=1e-7)
    w0m = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(learner.weights[0], wm1 - bm * (wm1 - w0m), atol=1e-7)
    learner.reset()  # back to the start
    assert torch.equal(learner.weights[2], w0f)


@pytest.mark.parametrize("stages, spec, plastic", [
    (1, VEC, [(1, 2), (1,)]),
    (2, VEC, [(1, 2), (1,)]),
    (3, VEC, [(2, 2), (2,), (1, 2), (1,)]),
    (2, IMG, [(5, 32 * 9), (5,)]),
    (3, IMG, [(2, 32 * 9), (2,), (5, 2), (5,)]),
])
def test_stages_built(stages, spec, plastic) -> None:
    learner = _learner(spec, stages=stages)
    assert [tuple(w.shape) for w in learner.weights] == plastic
    slow = sum(p.numel() for p in learner.net.slow.parameters())
    assert (slow == 0) == (stages == 1)
    if spec is IMG:  # classification: the fast stage starts at zero
        assert not learner.weights[-2].any() and not learner.weights[-1].any()


class _Drift:
    """Tasks: y_t = a * x_t + c with a, c drawn per task, x_t ~ N(0, 1) in 2 dims (one used)."""

    def sample(self, g: torch.Generator) -> list[Experience]:
        a = 1.0 + 0.5 * torch.randn(1, generator=g)
        c = 2.0 + 0.1 * torch.randn(1, generator=g)
        x = torch.randn(24, 2, generator=g)
        y = (a * x[:, :1] + c)
        return [Experience(x=x[:16], y=y[:16], x_test=x[16:], y_test=y[16:])]


def test_meta_gradients_reach_rates_and_decays() -> None:
    torch.manual_seed(0)
    learner = MultistageConfig(stages=3, hidden=4).build(BuildContext(spec=VEC))
    g = torch.Generator().manual_seed(1)
    loss = learner._meta_step(_Drift(), g)
    loss.backward()
    net = learner.net
    for p in (net.log_eta_f, net.logit_beta_f, net.log_eta_m, net.logit_beta_m):
        assert p.grad is not None and p.grad.abs().item() > 0
    first = [p.grad.clone() for p in (net.log_eta_f, net.medium.weight)]
    second = MultistageConfig(stages=3, hidden=4, order="second").build(BuildContext(spec=VEC))
    second.net.load_state_dict(net.state_dict())
    second._meta_step(_Drift(), torch.Generator().manual_seed(1)).backward()
    assert not torch.allclose(second.net.log_eta_f.grad, first[0])


def _prequential(learner, tasks: list[Experience]) -> float:
    total, n = 0.0, 0
    for task in tasks:
        learner.reset()
        for i in range(len(task.x)):
            x, y = task.x[i : i + 1], task.y[i : i + 1]
            total += float(((learner.predict(x) - y) ** 2).sum())
            learner.observe(x, y)
            n += 1
    return total / n


def test_meta_training_makes_it_learn() -> None:
    torch.manual_seed(0)
    held_out = [_Drift().sample(torch.Generator().manual_seed(100 + k))[0] for k in range(20)]
    scores = {}
    for init in ("random", "meta"):
        cfg = MultistageConfig(stages=2, hidden=8, init=init, meta_steps=150, meta_lr=1e-2,
                               lr=0.3, checkpoint_every_s=1e9)
        learner = cfg.build(BuildContext(spec=VEC))
        learner.meta_train(_Drift(), type("B", (), {"steps": 0, "seconds": 0.0})(), None, None)
        scores[init] = _prequential(learner, held_out)
    # the meta-learned start (W_f0 ~ the tasks' mean line) and stages cut the online error
    assert scores["meta"] < 0.5 * scores["random"], scores


def test_runs_through_the_harness(tmp_path: Path) -> None:
    res = api.run("sine-incremental", "multistage", out_dir=tmp_path, tune_lr=False,
                  progress=False, cache_dir=tmp_path / "cache", n_functions=2,
                  samples_per_function=16, test_points=8, meta_steps=3, hidden=8)
    assert res.status == "ok", res.error
    res = api.run("synthetic-stream", "multistage-s2", out_dir=tmp_path, tune_lr=False,
                  progress=False, cache_dir=tmp_path / "cache", meta_steps=3, width=4)
    assert res.status == "ok", res.error


@pytest.mark.parametrize("bad", [{"stages": 4}, {"stages": 0}, {"beta_f0": 1.5},
                                 {"inner_lr": -0.1}])
def test_bad_config(bad) -> None:
    with pytest.raises(ValueError):
        MultistageConfig(**bad)


def test_residual_starts_at_persistence() -> None:
    spec = ScenarioSpec(input_shape=(3,), n_outputs=1, task="regression", persistence=(2,))
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    learner = MultistageConfig(init="random", stages=1).build(BuildContext(spec=spec))
    assert learner.predict(x).flatten().tolist() == [3.0, 6.0]  # zero fast stage + x[:, 2]
    off = MultistageConfig(init="random", stages=1, residual=False).build(BuildContext(spec=spec))
    assert off.predict(x).flatten().tolist() == [0.0, 0.0]


def test_a_checkpoint_serves_streams_of_any_class_count() -> None:
    # the validation stream of a class-incremental scenario has other classes than the scored
    cfg = MultistageConfig(stages=3, hidden=4, width=4, init="random")
    scored = cfg.build(BuildContext(spec=IMG))
    val = cfg.build(BuildContext(spec=ScenarioSpec(input_shape=(1, 28, 28), n_outputs=3)))
    val.load_state_dict(scored.state_dict())
    assert val.predict(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    assert scored.predict(torch.zeros(2, 1, 28, 28)).shape == (2, 5)


class _Long:
    """10 experiences of 30 samples: x_t = t, so the trajectory shows which samples it took."""

    def sample(self, g):
        t = torch.arange(300.0).reshape(10, 30, 1).expand(10, 30, 2)
        return [Experience(x=t[k], y=t[k, :, :1], x_test=t[k, :2], y_test=t[k, :2, :1])
                for k in range(10)]


def test_trajectory_takes_the_first_traj_len_over_n_of_each_experience() -> None:
    learner = MultistageConfig(init="random", hidden=2, traj_len=25).build(BuildContext(spec=VEC))
    x, _, xq, _ = learner._trajectory(_Long(), torch.Generator())
    # 25 // 10 = 2 per experience: samples 0, 1, 30, 31, ..., 270, 271; every test set whole
    assert x[:, 0].tolist() == [float(30 * k + i) for k in range(10) for i in range(2)]
    assert len(xq) == 20


@pytest.mark.parametrize("bad", [{"stages": "4"}, {"lr": "-0.1"}, {"inner_lr": "0"},
                                 {"beta_m0": "1"}, {"traj_len": "0"}])
def test_bad_values_are_harness_errors(bad) -> None:
    with pytest.raises(HarnessError, match=next(iter(bad))):
        make_config(get_learner("multistage"), None, bad)


def test_classification_pretraining_uses_the_pools_classes() -> None:
    g = torch.Generator().manual_seed(0)
    protos = 3 * torch.randn(6, 4, generator=g)
    y = torch.arange(6).repeat_interleave(20)
    pool = LabeledPool(x=protos[y] + 0.1 * torch.randn(120, 4, generator=g), y=y, n_classes=6)
    spec = ScenarioSpec(input_shape=(4,), n_outputs=3)
    cfg = MultistageConfig(init="pretrain", stages=2, hidden=8, pretrain_steps=60,
                           pretrain_batch=32, pretrain_lr=1e-2, checkpoint_every_s=1e9,
                           n_meta_outputs=6)
    learner = cfg.build(BuildContext(spec=spec))
    learner.meta_train(pool, Budget(), None, None)
    with torch.no_grad():
        acc = (learner.net.pre(learner.net.slow(pool.x)).argmax(1) == y).float().mean()
    assert acc > 0.95  # six separable classes, learned by the pre-training layer
    assert not learner.weights[-2].any()  # the stream's fast stage still starts at zero
    small = MultistageConfig(init="pretrain", n_meta_outputs=5).build(BuildContext(spec=spec))
    with pytest.raises(HarnessError, match="n_meta_outputs"):
        small._pretrain_step(pool, torch.Generator())
