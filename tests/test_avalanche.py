"""Avalanche interoperability: the `avalanche:<Strategy>` adapter and the exporter.

The cross-check runs one strategy both ways on the same small stream: through the harness
runner (adapter, predict-then-observe) and natively in Avalanche on the exported benchmark
(online mini-experiences, `strategy.eval(test_stream)` after each experience). The harness's
accuracy matrix must equal Avalanche's own accuracy numbers.
"""

from __future__ import annotations

import copy
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import need

from harness.config import BuildContext
from harness.errors import HarnessError
from harness.registry import get_learner, make_config
from harness.runner import run_stream
from scenarios.synthetic import SyntheticStreamConfig

need("avalanche")
pytestmark = [pytest.mark.filterwarnings("ignore:No loggers specified:UserWarning"),
              pytest.mark.usefixtures("one_thread")]

from baselines.avalanche_adapter import STRATEGIES, AvalancheConfig, make_strategy  # noqa: E402
from harness.avalanche_export import accuracy_matrix, online_stream, to_avalanche  # noqa: E402


@pytest.fixture(scope="module")
def scenario():
    return SyntheticStreamConfig(n_classes=6, classes_per_exp=2, train_per_class=8,
                                 test_per_class=5, batch_size=2, size=8).build(0, None)


def _native_avalanche(cfg, scenario, model):
    """The same strategy run by Avalanche itself on the exported benchmark; its R0 and R."""
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    batch = scenario.experiences[0].batch_size
    strategy = make_strategy(cfg, model, torch.device("cpu"), evaluator=evaluator,
                             train_mb_size=batch)
    bm = to_avalanche(scenario)
    T = len(scenario.experiences)

    def evaluate():
        # Avalanche's eval draws from the global RNG (DataLoader seeds); the harness's does
        # not. Isolate it so both ways train with the same random numbers (Replay's sampling).
        state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            out = strategy.eval(bm.test_stream)
        random.setstate(state)
        np.random.set_state(np_state)
        return out

    with warnings.catch_warnings(record=True):  # Avalanche's own deprecation noise
        r0 = accuracy_matrix([evaluate()], T)[0]
        results = []
        for exp in bm.train_stream:
            for mini in online_stream(exp, batch):
                strategy.train(mini, shuffle=False)
            results.append(evaluate())
    return np.array(r0), np.array(accuracy_matrix(results, T))


@pytest.mark.parametrize("strategy", ["Naive", "Replay", "EWC", "LwF", "AGEM", "GDumb"])
def test_harness_matrix_matches_avalanche(scenario, strategy):
    cfg = AvalancheConfig(strategy=strategy, lr=0.1, mem_size=10)
    ctx = BuildContext(spec=scenario.spec, seed=0)
    learner = cfg.build(ctx)
    # the identical initial network for the native run
    model = copy.deepcopy(torch.nn.Sequential(learner.features, learner.head))
    torch.manual_seed(123)
    random.seed(123)  # AGEM picks its memory with Python's random
    rec = run_stream(learner, scenario.experiences, scenario.spec)
    torch.manual_seed(123)
    random.seed(123)
    r0, R = _native_avalanche(cfg, scenario, model)
    np.testing.assert_allclose(rec.R0, r0, atol=1e-6)
    np.testing.assert_allclose(rec.R, R, atol=1e-6)
    assert np.diag(rec.R).mean() > rec.R0.mean() + 0.2  # it learned each experience


def test_exporter_maps_experiences(scenario):
    bm = to_avalanche(scenario)
    assert len(bm.train_stream) == len(scenario.experiences)
    for exp, h in zip(bm.train_stream, scenario.experiences, strict=True):
        x, y, t = exp.dataset[0]
        assert torch.equal(x, h.x[0]) and int(y) == int(h.y[0]) and int(t) == 0
        assert len(exp.dataset) == h.n_train
    for exp, h in zip(bm.test_stream, scenario.experiences, strict=True):
        assert len(exp.dataset) == h.n_test
    assert len(bm.meta_train_stream) == 1 and len(bm.valid_stream) == len(
        scenario.val_experiences)
    assert bm.harness_stream_hash == scenario.stream_hash
    minis = list(online_stream(bm.train_stream[0], 2))
    assert [len(m.dataset) for m in minis] == [2] * (scenario.experiences[0].n_train // 2)
    # batches in the stored order, as the runner feeds them
    first = torch.stack([minis[0].dataset[i][0] for i in range(2)])
    assert torch.equal(first, scenario.experiences[0].x[:2])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_runs_in_the_loop(scenario, strategy):
    cfg = AvalancheConfig(strategy=strategy, lr=0.05, mem_size=8, agem_sample_size=4)
    learner = cfg.build(BuildContext(spec=scenario.spec, seed=0))
    rec = run_stream(learner, scenario.experiences, scenario.spec)
    assert rec.R.shape == (3, 3) and np.isfinite(rec.R).all()
    assert learner.describe()["avalanche_strategy"] == strategy
    if strategy == "AGEM":  # more batches than sample_size: the memories were folded
        plugin = learner.strategy.plugins[0]
        assert len(plugin.buffers) <= 4


def test_registry_routes_avalanche_names():
    entry = get_learner("avalanche:EWC")
    cfg = make_config(entry, "quick", {})
    assert isinstance(cfg, AvalancheConfig) and cfg.strategy == "EWC"
    with pytest.raises(HarnessError, match="supports Naive"):
        make_config(get_learner("avalanche:Foo"), "quick", {})


def test_state_dict_roundtrip_and_reset(scenario):
    cfg = AvalancheConfig(strategy="Naive", lr=0.1)
    a = cfg.build(BuildContext(spec=scenario.spec, seed=0))
    x = scenario.experiences[0].x[:4]
    before = a.predict(x)
    for xb, yb in scenario.experiences[0]:
        a.observe(xb, yb)
    assert not torch.allclose(a.predict(x), before)
    a.reset()
    torch.testing.assert_close(a.predict(x), before)
    b = cfg.build(BuildContext(spec=scenario.spec, seed=1))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.predict(x), before)


def test_import_harness_does_not_import_avalanche():
    code = ("import sys, harness, harness.registry, harness.avalanche_export, "
            "baselines.avalanche_adapter; print('avalanche' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


@pytest.mark.parametrize("strategy", ["EWC"])
def test_conformance_checker_passes(strategy):
    """The registry-wide conformance checks, for the adapter (not in LEARNERS: any name
    `avalanche:<Strategy>` resolves to it)."""
    from harness.check import check_learner

    with warnings.catch_warnings(record=True):
        results = check_learner(f"avalanche:{strategy}", "synthetic-stream")
    failed = [f"{r.name}: {r.detail}" for r in results if not r.ok]
    assert not failed, failed


def test_arena_hands_out_exact_batches_across_growth():
    from baselines.avalanche_adapter import _Arena

    arena, kept = _Arena(), []
    g = torch.Generator().manual_seed(0)
    for k in range(140):  # 140 batches of 1..3 samples: the capacity grows past 256
        b = 1 + k % 3
        x, y = torch.randn(b, 2, 3, generator=g), torch.randint(0, 5, (b,), generator=g)
        kept.append((x, y, arena.add(x, y)))
    for x, y, ds in kept:
        assert len(ds) == len(x) and list(ds.targets) == y.tolist()
        for i in range(len(x)):
            xi, yi, ti = ds[i]
            assert torch.equal(xi, x[i]) and int(yi) == int(y[i]) and int(ti) == 0
