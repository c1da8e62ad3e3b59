"""Conformance checks for any learner or scenario, registered or a user's own (Gymnasium's
env_checker, for continual learners). The test suite runs them over the whole registry.

A user's learner is named `module:Class`; the class is called as `Class(spec)` (or
`Class(spec, config)` when it declares `Config`, see harness.user_learners) with the scenario's
ScenarioSpec and must implement `predict(x)` and `observe(x, y)`. Its optional capabilities
are those of harness.capabilities; a public name that looks like one but is misspelled fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from harness.capabilities import MetaTrainable, Stateful, misspelled
from harness.config import BuildContext
from harness.errors import DivergedError, HarnessError, LearnerError
from harness.protocol import Experience, LabeledPool, Scenario, ScenarioSpec, experiences_hash
from harness.runner import evaluate, run_stream
from harness.user_learners import UserLearnerConfig

__all__ = ["CheckResult", "UserLearnerConfig", "check_learner", "learner_checks",
           "scenario_checks"]


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


def _failure(e: BaseException) -> str:
    """One line saying why a check failed."""
    if isinstance(e, SystemExit):  # sys.exit() in a learner must not end `harness check` with 0
        return f"the learner called sys.exit({e.code!r})"
    if isinstance(e, LearnerError | DivergedError | HarnessError | AssertionError):
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    # a user's learner may raise anything; report it as a failed check
    return f"{type(e).__name__}: {e}".splitlines()[0]


def _run_check(name: str, fn: Callable[[], str | None]) -> CheckResult:
    try:
        return CheckResult(name, True, fn() or "")
    except (Exception, SystemExit) as e:
        return CheckResult(name, False, _failure(e))


class _LearnerChecks:
    """The checks of one learner factory `make(spec, seed)` on a scenario's first two
    experiences; each method is one check (an AssertionError message says what to fix)."""

    def __init__(self, make: Callable[[ScenarioSpec, int], Any], scenario: Scenario,
                 pool_state: Callable[[Any], None] | None) -> None:
        self.make, self.spec, self.pool_state = make, scenario.spec, pool_state
        self.exps = list(scenario.experiences)[:2]
        self.x, _ = next(iter(self.exps[0]))
        self.x4, self.y4 = self.exps[0].x[:4], self.exps[0].y[:4]

    def capabilities(self) -> str:
        wrong = misspelled(self.make(self.spec, 0), "learner")
        assert not wrong, "; ".join(wrong)
        return ""

    def shapes(self) -> str:
        spec, learner = self.spec, self.make(self.spec, 0)
        for batch in (self.x, self.x4):
            evaluate(learner, batch, torch.zeros(len(batch), dtype=torch.long)
                     if spec.task == "classification" else torch.zeros(len(batch), spec.n_outputs),
                     spec, "cpu")
        return f"predict -> [B, {spec.n_outputs}] for B=1 and B={len(self.x4)}"

    def predict_is_pure(self) -> str:
        learner, x4 = self.make(self.spec, 0), self.x4
        if isinstance(learner, torch.nn.Module):
            learner.train(False)
        xa = x4.clone()
        with torch.no_grad():
            a = learner.predict(xa)
            b = learner.predict(x4.clone())
        assert torch.equal(xa, x4), \
            "predict modified its input in place; compute on a copy (x = x.clone())"
        assert torch.equal(a, b), "predict(x) twice gave different outputs: predict must not learn"
        return ""

    def observe_works(self) -> str:
        learner = self.make(self.spec, 0)
        xc, yc = self.x4.clone(), self.y4.clone()
        ret = learner.observe(xc, yc)
        assert ret is None, f"observe returned {type(ret).__name__}; it must return None"
        assert torch.equal(xc, self.x4) and torch.equal(yc, self.y4), "observe modified its inputs"
        return ""

    def deterministic(self) -> str:
        outs = []
        for _ in range(2):
            learner = self.make(self.spec, 7)
            for xb, yb in self.exps[0]:
                learner.observe(xb.clone(), yb.clone())
            if isinstance(learner, torch.nn.Module):
                learner.train(False)
            with torch.no_grad():
                outs.append(learner.predict(self.exps[0].x_test.clone()))
        assert torch.allclose(outs[0], outs[1], atol=1e-5), \
            "same seed, same stream, different predictions: seed every random source"
        return ""

    def state_roundtrip(self) -> str:
        learner = self.make(self.spec, 0)
        if not isinstance(learner, Stateful):
            return "no state_dict (optional)"
        sd = learner.state_dict()
        bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
        assert not bad, f"state_dict values must be tensors (safetensors), not: {bad[:3]}"
        other = self.make(self.spec, 1)
        other.load_state_dict(sd)
        if self.pool_state is None:
            for m in (learner, other):
                if isinstance(m, torch.nn.Module):
                    m.train(False)
            with torch.no_grad():  # copies: x4 is a view of the scenario's stream
                assert torch.allclose(learner.predict(self.x4.clone()),
                                      other.predict(self.x4.clone()), atol=1e-6), \
                    "load_state_dict(state_dict()) does not restore predictions"
        return f"{len(sd)} tensors"

    def short_stream(self) -> str:
        rec = run_stream(self.make(self.spec, 0), self.exps, self.spec)
        return f"R shape {rec.R.shape}, online score {rec.prequential.mean():.3f}"


def learner_checks(make: Callable[[ScenarioSpec, int], Any], scenario: Scenario,
                   pool_state: Callable[[Any], None] | None = None) -> list[CheckResult]:
    """Checks one learner factory `make(spec, seed)` against `scenario`."""
    c = _LearnerChecks(make, scenario, pool_state)
    return [_run_check(name, fn) for name, fn in [
        ("capabilities", c.capabilities), ("predict shape", c.shapes),
        ("predict does not learn", c.predict_is_pure), ("observe", c.observe_works),
        ("deterministic", c.deterministic), ("state_dict", c.state_roundtrip),
        ("short stream", c.short_stream)]]


def check_learner(target: str, scenario_id: str = "synthetic-stream") -> list[CheckResult]:
    """Conformance checks for a registered learner id or a user's `module:Class`."""
    from harness.building import build_scenario
    from harness.registry import get_learner, make_config

    entry = get_learner(target)
    scenario = build_scenario(scenario_id, 0, None, {})
    if scenario.spec.task not in entry.tasks:
        raise HarnessError(f"{target} does not support {scenario.spec.task} scenarios; "
                           f"pass --scenario with a {' or '.join(entry.tasks)} scenario")
    cfg = make_config(entry, "quick", {})
    wrong = misspelled(cfg, "learner config")
    if wrong:
        return [CheckResult("config capabilities", False, wrong[0])]
    try:
        cfg.build(BuildContext(spec=scenario.spec, seed=0))
    except HarnessError:
        raise  # import errors are bad input (exit 2)
    except (Exception, SystemExit) as e:  # the learner's own constructor failed: a failed check
        return [CheckResult("build", False, _failure(e))]
    state: dict[str, Any] = {}

    def make(spec: ScenarioSpec, seed: int) -> Any:
        learner = cfg.build(BuildContext(spec=spec, seed=seed))
        if isinstance(learner, MetaTrainable) and learner.needs_meta_train:
            # Meta-training is checked elsewhere; here it is skipped with a shared init.
            if "sd" not in state:
                state["sd"] = learner.state_dict()
            learner.load_state_dict(state["sd"])
        return learner

    return learner_checks(make, scenario)


def scenario_checks(scenario: Scenario, rebuild: Callable[[], Scenario]) -> list[CheckResult]:
    """Checks a scenario object: shapes, labels, re-iterability, stable hashes, disjointness."""
    spec = scenario.spec

    def structure() -> str:
        assert scenario.experiences, "no experiences"
        for e in [*scenario.experiences, *scenario.val_experiences]:
            assert isinstance(e, Experience), f"experience of type {type(e).__name__}"
        for e in scenario.experiences:
            assert tuple(e.x.shape[1:]) == spec.input_shape, \
                f"input shape {tuple(e.x.shape[1:])} != spec {spec.input_shape}"
            assert e.n_test > 0 and e.n_train > 0, f"experience {e.name!r} is empty"
            if spec.task == "classification":
                assert e.y.dtype == torch.long and int(e.y.max()) < spec.n_outputs
                assert int(e.y.min()) >= 0
            else:
                assert e.y.shape[1:] == (spec.n_outputs,), f"targets {tuple(e.y.shape)}"
        return f"{len(scenario.experiences)} experiences"

    def reiterable() -> str:
        e = scenario.experiences[0]
        a, b = list(e), list(e)
        assert len(a) == len(b) and all(torch.equal(p[0], q[0]) for p, q in zip(a, b, strict=True))
        return ""

    def stable_hash() -> str:
        assert rebuild().stream_hash == scenario.stream_hash, "same seed, different stream_hash"
        return scenario.stream_hash[:12]

    def val_disjoint() -> str:
        if not scenario.val_experiences:
            return "no validation experiences"
        scored = {bytes(t.numpy().tobytes()) for e in scenario.experiences for t in e.x[:50]}
        clash = sum(bytes(t.numpy().tobytes()) in scored
                    for e in scenario.val_experiences for t in e.x[:50])
        assert clash == 0, f"{clash} validation inputs also appear in the scored stream"
        assert experiences_hash(scenario.val_experiences) != experiences_hash(scenario.experiences)
        return ""

    def capabilities() -> str:
        wrong = misspelled(scenario, "scenario")
        assert not wrong, "; ".join(wrong)
        return ""

    def meta_train() -> str:
        pool = scenario.meta_train
        if isinstance(pool, LabeledPool):
            assert tuple(pool.x.shape[1:]) == spec.input_shape
            return f"pool of {pool.n_classes} classes, {len(pool.y)} samples"
        return type(pool).__name__

    return [_run_check(n, f) for n, f in [("structure", structure), ("re-iterable", reiterable),
                                          ("stable hash", stable_hash),
                                          ("validation disjoint", val_disjoint),
                                          ("meta-train", meta_train),
                                          ("capabilities", capabilities)]]

