"""ANML, OML and OML-sine: exact sizes, meta-training steps, resumable checkpoints, and the fast
head-only evaluation against the runner's per-sample loop."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from baselines.anml import ANMLConfig
from baselines.networks.oml_anml import ANMLNet, OMLNet, PerImageNorm, SineNet
from baselines.oml import OMLConfig
from baselines.oml_sine import OMLSineConfig
from harness import prepare as prepare_mod
from harness.capabilities import HeadSweepable, MetaTrainReport
from harness.config import BuildContext
from harness.experiment import RunConfig, build_scenario, execute
from harness.fast_eval import head_sgd_sweep
from harness.meta import functional, inner_loop
from harness.protocol import Budget
from harness.runner import run_stream

ROOT = Path(__file__).resolve().parent.parent
TINY_ANML = dict(nm_channels=4, pred_channels=6, inner_steps=5, remember=8,
                 checkpoint_every_s=0.0)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_papers() -> None:
    assert n_params(ANMLNet(3, 112, 256, 1000, 28)) == 6_048_424
    assert n_params(OMLNet(1, 256, 1024, 1000, 84)) == 6_338_280
    assert n_params(OMLNet(1, 256, 0, 1000, 84)) == 5_257_960
    net = SineNet(11, 300, 900)
    assert n_params(net) == 996_601
    assert len([m for m in net.modules() if isinstance(m, torch.nn.Linear)]) == 9
    assert len(net.rln) == 12 and net.pln[0].in_features == 900  # split after layer 6


def test_anml_shapes_and_gate() -> None:
    net = ANMLNet(3, 112, 256, 1000, 28)
    x = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    assert net.nm(x).shape == (2, 1008) and net.pred(x).shape == (2, 2304)
    assert net.features(x).shape == (2, 2304) and net(x).shape == (2, 1000)
    # per-image normalization: an image's features do not depend on its batch. Convolutions of
    # a batch of 1 and of 2 round differently (up to 1.7e-5 on features of size ~1.4 over 100
    # random inputs), hence 1e-4; a batch statistic would change them by orders more.
    torch.testing.assert_close(net.features(x[:1]), net.features(x)[:1], atol=1e-4, rtol=1e-4)


def test_per_image_norm_is_instance_norm_with_affine_parameters() -> None:
    norm = PerImageNorm(5).double()
    ref = torch.nn.InstanceNorm2d(5, affine=True).double()
    assert norm.state_dict().keys() == ref.state_dict().keys()
    assert torch.equal(norm.weight, ref.weight) and torch.equal(norm.bias, ref.bias)
    with torch.no_grad():
        for m in (norm, ref):
            m.weight.copy_(torch.linspace(0.5, 2.0, 5))
            m.bias.copy_(torch.linspace(-1.0, 1.0, 5))
    x = (torch.randn(3, 5, 7, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
         * 3 + 1).requires_grad_()
    out, want = norm(x), ref(x)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    # each image and channel: mean bias, standard deviation |weight| (biased variance, eps)
    z = (x[1, 2] - x[1, 2].mean()) / torch.sqrt(x[1, 2].var(unbiased=False) + 1e-5)
    torch.testing.assert_close(out[1, 2], 1.25 * z + 0.0, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(out)
    g = torch.autograd.grad((out * w).sum(), (x, norm.weight, norm.bias))
    h = torch.autograd.grad((want * w).sum(), (x, ref.weight, ref.bias))
    for a, b in zip(g, h, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order", ["first", "second"])
def test_batched_gates_give_the_per_image_meta_gradient(order: str) -> None:
    """The inner loop with the trajectory's gates computed once equals the one that runs the
    neuromodulatory net at every step (float64: only rounding could differ)."""
    torch.manual_seed(0)
    net = ANMLNet(1, 3, 4, 7, 10).double()
    fm = functional(net, lambda n: n.startswith(("pred.", "head.")))
    gen = torch.Generator().manual_seed(1)
    xs = torch.rand(5, 1, 10, 10, generator=gen, dtype=torch.float64)
    ys = torch.full((5,), 2)
    xq, yq = torch.rand(9, 1, 10, 10, generator=gen, dtype=torch.float64), torch.arange(9) % 7
    first = order == "first"

    def meta_grads(batched: bool) -> dict[str, torch.Tensor]:
        net.zero_grad(set_to_none=True)
        fast, slow = fm.params()
        inputs: Any = xs[:, None]
        if batched:
            with torch.no_grad() if first else contextlib.nullcontext():
                inputs = (xs[:, None], net.gates(xs)[:, None])
        adapted = inner_loop(fm, fast, slow, inputs, ys[:, None], loss_fn=F.cross_entropy,
                             lr=0.1, first_order=first, fused=True)
        F.cross_entropy(fm(adapted, slow, xq), yq).backward()
        return {n: p.grad.clone() for n, p in net.named_parameters()}

    batched, per_image = meta_grads(True), meta_grads(False)
    for name, g in per_image.items():
        torch.testing.assert_close(batched[name], g, rtol=1e-9, atol=1e-12)
    assert torch.equal(net(xq, net.gates(xq)), net(xq))


@pytest.fixture(scope="module")
def synth():
    return build_scenario("synthetic-stream", 0, None, {"size": "8", "n_classes": "6"})


def learner(cfg, scenario, resume: Path | None = None):
    return cfg.build(BuildContext(spec=scenario.spec, resume_path=resume))


@pytest.mark.parametrize("order", ["first", "second"])
def test_anml_meta_step_trains_both_nets_and_resets_the_row(synth, order: str) -> None:
    cfg = ANMLConfig(**TINY_ANML, order=order, meta_steps=1, n_meta_outputs=30)
    lrn = learner(cfg, synth)
    before = {k: v.clone() for k, v in lrn.net.state_dict().items()}
    lrn.meta_train(synth.meta_train, Budget(), None, None)
    after = lrn.net.state_dict()
    for prefix in ("nm.", "gate.", "pred.", "head."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix))
    assert lrn.steps_done == 1 and lrn.describe()["gradient_order"] == order


def test_oml_variants_and_sine_meta_steps(synth) -> None:
    for variant in ("2019", "2020"):
        cfg = OMLConfig(variant=variant, channels=4, hidden=8, meta_steps=2, n_meta_outputs=30,
                        checkpoint_every_s=0.0)
        lrn = learner(cfg, synth)
        rln0 = lrn.net.rln[0].weight.clone()
        lrn.meta_train(synth.meta_train, Budget(), None, None)
        assert not torch.equal(rln0, lrn.net.rln[0].weight), variant
        assert lrn.describe()["gradient_order"] == ("first" if variant == "2019" else "second")
    sine = build_scenario("sine-incremental", 0, None, {})
    cfg = OMLSineConfig(width=8, rep=12, meta_steps=2, steps_per_function=3, order="second")
    lrn = learner(cfg, sine)
    lrn.meta_train(sine.meta_train, Budget(), None, None)
    rec = run_stream(lrn, sine.experiences[:2], sine.spec)
    assert np.isfinite(rec.R).all() and lrn.steps_done == 2


def test_interrupted_meta_training_resumes_to_the_same_state(synth, tmp_path: Path) -> None:
    cfg = ANMLConfig(**TINY_ANML, order="first", meta_steps=6, n_meta_outputs=30)
    straight = learner(cfg, synth)
    straight.meta_train(synth.meta_train, Budget(), None, None)

    path = tmp_path / "anml.partial.safetensors"
    first = learner(cfg, synth, path)

    def stop_at_4(phase: str, done: int, total: int, info: dict) -> None:
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        first.meta_train(synth.meta_train, Budget(), stop_at_4, None)
    assert path.exists() and path.with_suffix(".json").exists()
    seen: list[int] = []
    resumed = learner(cfg, synth, path)
    resumed.meta_train(synth.meta_train, Budget(), lambda p, d, t, i: seen.append(d),
                       None)
    assert seen[0] == 5, "resumed from the checkpoint after step 4"
    for k, v in straight.state_dict().items():
        if k != "train.seconds":  # wall time differs, everything else must not
            torch.testing.assert_close(resumed.state_dict()[k], v, msg=k)
    assert not path.exists(), "the partial checkpoint is removed once training finishes"


def test_a_time_limited_meta_training_is_incomplete_and_keeps_its_checkpoint(
        synth, tmp_path: Path) -> None:
    """max_meta_seconds counts every segment of a training: a run resumed from a checkpoint
    that has spent them takes no step, reports itself incomplete and keeps the checkpoint (it
    used to delete it, and the truncated network was cached as final); with time left the next
    run finishes where an uninterrupted one ends. A spent budget.seconds stops before a step."""
    cfg = ANMLConfig(**TINY_ANML, order="first", meta_steps=6, n_meta_outputs=30,
                     max_meta_seconds=500.0)
    straight = learner(cfg, synth)
    assert straight.meta_train(synth.meta_train, Budget(), None, None) == MetaTrainReport(
        steps_done=6, complete=True, seconds_before=0.0)
    path = tmp_path / "anml.partial.safetensors"
    cut = learner(cfg, synth, path).meta_train(synth.meta_train, Budget(seconds=1e-9), None,
                                               None)
    assert cut == MetaTrainReport(steps_done=0, complete=False) and path.exists()

    def stop_at_3(phase: str, done: int, total: int, info: dict) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        learner(cfg, synth, path).meta_train(synth.meta_train, Budget(), stop_at_3, None)

    def set_seconds(seconds: float) -> None:
        meta = json.loads(path.with_suffix(".json").read_text())
        path.with_suffix(".json").write_text(json.dumps({**meta, "elapsed_s": seconds}))

    set_seconds(600.0)
    spent = learner(cfg, synth, path)
    report = spent.meta_train(synth.meta_train, Budget(), None, None)
    assert report == MetaTrainReport(steps_done=3, complete=False, seconds_before=600.0)
    assert path.exists() and spent.steps_done == 3
    set_seconds(1.0)
    resumed = learner(cfg, synth, path)
    report = resumed.meta_train(synth.meta_train, Budget(), None, None)
    assert (report.steps_done, report.complete, report.seconds_before) == (6, True, 1.0)
    assert not path.exists(), "complete: the partial checkpoint is removed"
    for k, v in straight.state_dict().items():
        if k != "train.seconds":
            torch.testing.assert_close(resumed.state_dict()[k], v, msg=k)


def test_the_iid_oracle_offers_no_sweep(synth) -> None:
    """The vectorized lr sweep reproduces the stream protocol; the i.i.d. oracle has none."""
    assert learner(ANMLConfig(**TINY_ANML, init="random", iid=True), synth).sweep_features() \
        is None


@pytest.mark.slow
def test_killed_meta_training_process_resumes(tmp_path: Path) -> None:
    """A real SIGKILL of a meta-training process; the restart continues at the saved step."""
    script = tmp_path / "train.py"
    script.write_text(f"""
import os, sys, time, pathlib, torch
torch.set_num_threads(1)
from baselines.anml import ANMLConfig
from harness.config import BuildContext
from harness.experiment import build_scenario
from harness.protocol import Budget
sc = build_scenario("synthetic-stream", 0, None, {{"size": "8"}})
cfg = ANMLConfig(**{TINY_ANML!r}, order="first", meta_steps=30, n_meta_outputs=30)
lrn = cfg.build(BuildContext(spec=sc.spec, resume_path=pathlib.Path(sys.argv[1])))
hang = int(os.environ.get("HANG_AT", "0"))
def show(phase, done, total, info):
    print(done, flush=True)
    if done == hang:
        time.sleep(600)  # the test kills the process here, after the step-`hang` checkpoint
lrn.meta_train(sc.meta_train, Budget(), show, None)
""")
    path = tmp_path / "ckpt.partial.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE,
                            text=True, env={**env, "HANG_AT": "7"})
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "7":
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert json.loads(path.with_suffix(".json").read_text())["step"] == 7
    out = subprocess.run([sys.executable, str(script), str(path)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    steps = [int(s) for s in out.stdout.split()]
    assert steps[0] == 8 and steps[-1] == 30


def test_fast_sweep_equals_the_runners_per_sample_loop(synth) -> None:
    cfg = ANMLConfig(**TINY_ANML, init="random")
    lrs = [1e-3, 3e-2, 0.3]
    lrn = learner(cfg, synth)
    assert isinstance(lrn, HeadSweepable)
    fast = head_sgd_sweep(lrn.sweep_features(), synth.experiences, synth.spec, lrs)
    for lr, rec in zip(lrs, fast, strict=True):
        cfg_lr = ANMLConfig(**TINY_ANML, init="random", lr=lr)
        ref = run_stream(learner(cfg_lr, synth), synth.experiences, synth.spec)
        np.testing.assert_array_equal(rec.R, ref.R)
        np.testing.assert_array_equal(rec.R0, ref.R0)
        np.testing.assert_array_equal(rec.R_train, ref.R_train)
        np.testing.assert_array_equal(rec.prequential, ref.prequential)
        np.testing.assert_array_equal(rec.per_class_test, ref.per_class_test)


def test_run_records_provenance_and_reuses_the_checkpoint(tmp_path: Path) -> None:
    run = RunConfig(scenario="synthetic-stream", learner="anml", out_dir=tmp_path / "out",
                    cache_dir=tmp_path / "cache", lr_grid=(1e-3, 1e-1),
                    overrides={"nm_channels": "4", "pred_channels": "6", "meta_steps": "3",
                               "n_meta_outputs": "30", "inner_steps": "4", "remember": "4"})
    first = execute(run)
    assert first.status == "ok", first.error
    rows = list(csv.DictReader(first.csv_path.open()))
    for col in ("gradient_order", "variant", "meta_train_steps", "eval_optimizer", "lr",
                "lr_selected_on"):
        assert rows[0][col] != "", col
    assert rows[0]["meta_train_steps"] == "3.0" and rows[0]["lr_selected_on"].startswith("val")
    ckpts = list((tmp_path / "cache" / "checkpoints").glob("anml-*.safetensors"))
    assert len(ckpts) == 1 and ".partial" not in ckpts[0].name

    second = execute(run)
    assert second.metrics["meta_test_test_acc"] == first.metrics["meta_test_test_acc"]


def test_iid_oracle_refits_on_all_seen_samples(synth) -> None:
    lrn = learner(ANMLConfig(**TINY_ANML, init="random", iid=True, lr=0.1), synth)
    rec = run_stream(lrn, synth.experiences, synth.spec)
    assert lrn._n_fitted == sum(e.n_train for e in synth.experiences)
    assert rec.R[-1].mean() > 1.5 / synth.spec.n_outputs  # learns: well above chance
    assert lrn.describe()["eval_order"].startswith("iid")


def test_baselines_can_use_the_meta_learners_networks(synth) -> None:
    from baselines.finetune import FinetuneConfig

    for name, width in (("anml", 6), ("oml", 4)):
        cfg = FinetuneConfig(backbone=name, width=width)
        lrn = cfg.build(BuildContext(spec=synth.spec))
        x, y = next(iter(synth.experiences[0]))
        lrn.observe(x, y)
        assert lrn.predict(x).shape == (1, synth.spec.n_outputs)


def test_eval_only_variants_share_the_meta_trained_checkpoint() -> None:
    from harness.registry import get_learner, make_config

    def key(entry: str) -> dict:
        return make_config(get_learner(entry), "quick", {}).checkpoint_key()

    assert key("anml") == key("anml-iid")
    assert key("anml") != key("anml-pretrain") != key("anml-untrained")
    assert key("oml-2019")["kind"] == "oml-2019-meta" and key("oml")["kind"] == "oml-2020-meta"
    assert key("oml") == key("oml-iid") == key("oml-2020") == key("oml-2020-iid")
    assert key("oml-2019") == key("oml-2019-iid") != key("oml")


@pytest.mark.parametrize("name", ["anml", "oml", "oml-2019", "oml-2020"])
def test_meta_learners_run_their_iid_oracle(name: str) -> None:
    """`harness run` runs `<name>-iid` beside `<name>`: the same config (every preset) with only
    the i.i.d. switch on, so it reuses the meta-trained checkpoint."""
    import dataclasses

    from harness.registry import get_learner, make_config

    oracle = f"{name}-iid"
    assert oracle in get_learner(name).compare_with
    for preset in ("quick", "paper"):
        cfg = make_config(get_learner(name), preset, {})
        assert not cfg.iid
        assert make_config(get_learner(oracle), preset, {}) == dataclasses.replace(cfg, iid=True)


def test_checkpoint_key_ignores_how_often_progress_is_saved() -> None:
    a = ANMLConfig(checkpoint_every_s=10.0).checkpoint_key()
    assert a == ANMLConfig(checkpoint_every_s=600.0).checkpoint_key()
    assert a != ANMLConfig(meta_steps=10).checkpoint_key()


def test_lr_selection_uses_the_sweep_and_scores_like_the_loop(tmp_path: Path, monkeypatch) -> None:
    from baselines.headonly import HeadOnlyLearner

    grid = (1e-3, 3e-2, 1e38)  # 1e38 blows the head up: non-finite, like DivergedError in the loop
    overrides = {"nm_channels": "4", "pred_channels": "6", "init": "random"}

    def scores() -> dict:
        run = RunConfig(scenario="synthetic-stream", learner="anml", out_dir=tmp_path / "o",
                        cache_dir=tmp_path / "c", lr_grid=grid, overrides=overrides)
        return json.loads(execute(run).csv_path.with_suffix(".json").read_text())[
            "lr_selection"]["lr_scores"]

    calls: list[int] = []
    real = HeadOnlyLearner.sweep_features
    monkeypatch.setattr(HeadOnlyLearner, "sweep_features",
                        lambda self: calls.append(1) or real(self))
    fast = scores()
    assert calls == [1]  # one vectorized pass for the whole grid
    monkeypatch.setattr(HeadOnlyLearner, "sweep_features", lambda self: None)  # the loop
    slow = scores()
    assert fast == slow
    assert fast[str(1e38)] == float("-inf") and fast[str(1e-3)] > float("-inf")


def test_reported_meta_train_s_includes_the_interrupted_run(tmp_path: Path, monkeypatch) -> None:
    from harness.registry import get_learner, make_config

    class Stop(Exception):
        pass

    entry = get_learner("anml")
    cfg = make_config(entry, "quick", {**{k: str(v) for k, v in TINY_ANML.items()},
                                       "meta_steps": "6", "n_meta_outputs": "30"})
    scenario = build_scenario("synthetic-stream", 0, None, {"size": "8", "n_classes": "6"})
    run = RunConfig(scenario="synthetic-stream", learner="anml", out_dir=tmp_path / "res",
                    cache_dir=tmp_path / "cache")

    def stop_at_3(phase: str, done: int, total: int, info: dict) -> None:
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        prepare_mod.prepare(entry, cfg, scenario, run, stop_at_3)
    (partial,) = (tmp_path / "cache" / "checkpoints").glob("*.partial.safetensors")
    meta = json.loads(partial.with_suffix(".json").read_text())
    partial.with_suffix(".json").write_text(json.dumps({**meta, "elapsed_s": 1000.0}))
    info = prepare_mod.prepare(entry, cfg, scenario, run, None).info
    assert 1000.0 < info["meta_train_s"] < 1100.0, info


@pytest.mark.slow
def test_run_anml_runs_its_oracle_and_reports_the_relative_drop(tmp_path: Path) -> None:
    """`harness run --learner anml` runs `anml-iid` on the identical stream, from the same
    meta-trained checkpoint (no second meta-training), and the leaderboard gets the drop."""
    import pandas as pd
    from typer.testing import CliRunner

    from harness import experiment
    from harness.cli import app
    from harness.leaderboard import load_runs
    from harness.metrics import relative_drop
    from harness.registry import get_learner

    out, cache = tmp_path / "out", tmp_path / "cache"
    res = CliRunner().invoke(app, [
        "run", "--scenario", "synthetic-stream", "--learner", "anml", "--out", str(out),
        "--cache-dir", str(cache), "--quiet", "--set",
        "nm_channels=4,pred_channels=6,meta_steps=3,n_meta_outputs=30,inner_steps=4,remember=4,"
        "pretrain_steps=2"])
    assert res.exit_code == 0, res.output
    assert "drop below the i.i.d. oracle" in res.output
    assert "(stopped)" not in res.output  # pre-training asked 2 steps, not meta_steps
    folder = out / "synthetic-stream"
    runs = load_runs(folder)
    assert set(runs["learner"]) == {"anml", *get_learner("anml").compare_with}
    per_run = runs.drop_duplicates("learner").set_index("learner")
    assert per_run.loc["anml", "stream_hash"] == per_run.loc["anml-iid", "stream_hash"]
    steps = runs[runs["metric"].isin(["meta_steps_asked", "meta_steps_done"])].pivot_table(
        index="learner", columns="metric", values="value")
    assert steps.loc["anml"].tolist() == [3.0, 3.0]  # asked, done
    assert steps.loc["anml-pretrain"].tolist() == [2.0, 2.0]

    # One meta-trained ANML checkpoint (and the pre-trained one), shared by anml and anml-iid.
    ckpts = sorted(p.name for p in (cache / "checkpoints").glob("*.safetensors"))
    assert [c.split("-")[1] for c in ckpts] == ["meta", "pretrain"], ckpts
    infos = {name: json.loads((folder / f"{per_run.loc[name, 'run_id']}.json").read_text())
             ["meta_train"] for name in ("anml", "anml-iid")}
    assert infos["anml"]["checkpoint"] == infos["anml-iid"]["checkpoint"] != ""
    assert infos["anml"]["meta_train_s"] == infos["anml-iid"]["meta_train_s"] > 0
    # A later process (memo cleared) loads the same checkpoint for the oracle alone.
    alone = experiment.execute(RunConfig(
        scenario="synthetic-stream", learner="anml-iid", out_dir=tmp_path / "alone",
        cache_dir=cache, lr_grid=(1e-1,), overrides={
            "nm_channels": "4", "pred_channels": "6", "meta_steps": "3", "n_meta_outputs": "30",
            "inner_steps": "4", "remember": "4", "pretrain_steps": "2"}))
    info = json.loads(alone.csv_path.with_suffix(".json").read_text())["meta_train"]
    assert info["checkpoint_cached"] and info["checkpoint"] == infos["anml"]["checkpoint"]

    acc = runs[runs["metric"].isin(["meta_test_test_acc", "meta_test_train_acc"])].pivot_table(
        index="learner", columns="metric", values="value")
    drops = pd.read_csv(folder / "oracle_drop.csv").set_index("metric")
    assert set(drops["learner"]) == {"anml"} and set(drops["oracle"]) == {"anml-iid"}
    for metric in ("meta_test_test_acc", "meta_test_train_acc"):
        assert drops.loc[metric, "n_pairs"] == 1
        assert drops.loc[metric, "mean_drop"] == pytest.approx(
            relative_drop(acc.loc["anml", metric], acc.loc["anml-iid", metric]))
    assert "## Relative drop below the i.i.d. oracle" in (folder / "leaderboard.md").read_text()


@pytest.mark.slow
def test_oml_init_keeps_features_apart_on_real_omniglot() -> None:
    """OML's 6-conv RLN has no normalisation: with the authors' He init its features differ
    between images; with PyTorch's default init they collapse to near-constant (chance-level
    accuracy at every lr, seen in a real run)."""
    sc = build_scenario("omniglot-stream", 0, None, {"image_size": "84", "n_classes": "5"})
    x = sc.experiences[0].x[:20]

    def spread(init: str) -> float:
        cfg = OMLConfig(channels=32, init="random", weight_init=init)
        with torch.no_grad():
            f = learner(cfg, sc).frozen_features(x)
        return float(f.std(0).mean() / f.abs().mean())

    assert spread("kaiming") > 0.5
    assert spread("torch") < 0.05


def test_meta_seed_minus_one_meta_trains_one_network_per_run_seed(tmp_path: Path) -> None:
    """meta_seed=-1: each run seed meta-trains its own network (its own checkpoint, different
    weights), so a CI over seeds includes meta-training variance; the rows record the
    meta-seed used. The default (0) shares one checkpoint across seeds."""

    def run(seed: int, meta_seed: str, cache: str) -> dict[str, str]:
        res = execute(RunConfig(
            scenario="synthetic-stream", learner="anml", seed=seed, out_dir=tmp_path / cache,
            cache_dir=tmp_path / cache, lr_grid=(1e-2,),
            overrides={"nm_channels": "4", "pred_channels": "6", "meta_steps": "3",
                       "n_meta_outputs": "30", "inner_steps": "4", "remember": "4",
                       "meta_seed": meta_seed}))
        assert res.status == "ok", res.error
        return next(csv.DictReader(res.csv_path.open()))

    def checkpoints(cache: str) -> list[Path]:
        return sorted((tmp_path / cache / "checkpoints").glob("anml-*.safetensors"))

    rows = [run(seed, "-1", "own") for seed in (0, 1)]
    assert [r["meta_seed"] for r in rows] == ["0", "1"]
    own = checkpoints("own")
    assert len(own) == 2
    a, b = (load_file(str(p)) for p in own)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("net."))
    assert all(r["meta_seed"] == "0" for r in (run(0, "0", "shared"), run(1, "0", "shared")))
    assert len(checkpoints("shared")) == 1
    # meta_seed=-1 with run seed 0 trains the same network as meta_seed=0
    shared = load_file(str(checkpoints("shared")[0]))
    seed0 = next(p for p in own if load_file(str(p))["net.head.weight"].equal(
        shared["net.head.weight"]))
    assert all(torch.equal(load_file(str(seed0))[k], v) for k, v in shared.items()
               if k.startswith("net."))
    with pytest.raises(ValueError, match="meta_seed"):
        ANMLConfig(meta_seed=-2)
