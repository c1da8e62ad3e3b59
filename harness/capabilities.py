"""The optional capabilities of learners, scenarios and their configs (docs/design.md D2).

`harness.protocol` states what every learner and scenario must have; this module states, as
typed protocols, everything they MAY have. The harness tests for a capability with
`isinstance(obj, Capability)` and nothing else: it never probes attribute names. A public
attribute whose name is close to a capability's but not equal (`lr_swep`, `Presets`) is a
mistake the harness would otherwise ignore, so `misspelled()` names it, and `harness check`
and the conformance tests fail on it.

Learner capabilities (on the object `config.build(ctx)` returns):
  - `MetaTrainable`: meta-training before the stream, one signature, returning a report.
  - `HeadSweepable`: frozen features plus a linear softmax head trained by SGD from zero; the
    harness then runs the whole learning-rate grid in one vectorised pass.
  - `Describable`: extra columns for the result row.
  - `Resettable` (episodic scenarios), `TaskAware` (only when `spec.task_ids`), `Stateful`
    (checkpointing).
Learner config capabilities (on the config dataclass):
  - `HasPresets`, `SeededTraining`, `ResolvesForScenario`, `KeyedCheckpoint`,
    `CountsTrainingSteps`, `UsesLR`.
A user's learner class may declare `Config` (`ConfigurableLearner`): a dataclass of its
hyper-parameters, which `--set` reaches and the learning-rate search tunes when it has `lr`.
Scenario capabilities: `ScoredEpisodeSets`, `EvalOnlyParams`, `HasValidationSpec`,
`GroupedTestSets`, `RegimeChanges`; scenario config: `HasVariants`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from torch import Tensor, nn

from harness.config import Progress
from harness.protocol import Budget, Experience, LabeledPool, ScenarioSpec, TaskSampler

Validate = Callable[[], float]
"""Scores the learner as it is now on the scenario's validation episodes, run by the harness
exactly as the scored episodes are: mean accuracy, or minus the mean MSE (higher is better);
-inf when an episode diverges. It leaves the learner adapted to the last episode: the learner
calls its own reset() afterwards. `validate.n_episodes` is the number of episodes."""


@dataclass(frozen=True)
class MetaTrainReport:
    """What one `meta_train` call did."""

    steps_done: int | None = None
    """Meta-steps (or pre-training steps) taken in total, across resumes; None: not counted."""
    complete: bool = True
    """False when a time limit stopped it before its configured number of steps: the run is
    then `partial` and its checkpoint is kept as a partial one that the next run resumes."""
    seconds_before: float = 0.0
    """Seconds spent by earlier, interrupted segments that this call resumed from."""


# -- learner ---------------------------------------------------------------------------------


@runtime_checkable
class MetaTrainable(Protocol):
    """A learner trained before the stream on the scenario's meta-train split (cached)."""

    @property
    def needs_meta_train(self) -> bool:
        """False when this configuration trains nothing (e.g. an untrained control)."""
        ...

    def meta_train(self, data: LabeledPool | TaskSampler, budget: Budget,
                   progress: Progress | None, validate: Validate | None) -> MetaTrainReport:
        """Train on `data` (classes disjoint from evaluation); `validate` is given when the
        scenario has validation episodes, for learners that select checkpoints on them."""
        ...


@runtime_checkable
class HeadSweepable(Protocol):
    """A head-only learner: `features` frozen, a linear softmax head trained from zero by
    plain SGD on each batch (`harness.fast_eval.head_sgd_sweep` reproduces its stream)."""

    def sweep_features(self) -> Callable[[Tensor], Tensor] | None:
        """The frozen feature function, or None when this configuration is not head-only SGD
        (e.g. an i.i.d. oracle): the harness then runs the grid one rate at a time."""
        ...


@runtime_checkable
class Describable(Protocol):
    def describe(self) -> dict[str, Any]:
        """Extra columns for the result row (e.g. which checkpoint selection was used)."""
        ...


@runtime_checkable
class Resettable(Protocol):
    def reset(self) -> None:
        """Forget the current episode (episodic scenarios call it before every episode)."""
        ...


@runtime_checkable
class TaskAware(Protocol):
    def set_task(self, task_id: int) -> None:
        """Called at each experience start, only when the scenario's spec grants task ids."""
        ...


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> Any: ...


@runtime_checkable
class ConfigurableLearner(Protocol):
    """A user's learner class with a config dataclass: built as `Class(spec, config)`."""

    Config: ClassVar[type]


# -- learner config --------------------------------------------------------------------------


@runtime_checkable
class Buildable(Protocol):
    """Every learner config: `build(ctx)` makes the learner (harness.config.BuildContext)."""

    def build(self, ctx: Any) -> Any: ...


@runtime_checkable
class HasPresets(Protocol):
    PRESETS: ClassVar[dict[str, dict[str, Any]]]
    """Named sets of field values (`--preset`); 'quick' is the default."""


@runtime_checkable
class SeededTraining(Protocol):
    SEEDED_TRAINING: ClassVar[bool]
    """True: (meta-)training draws from the run's seed, so each seed has its own checkpoint."""


@runtime_checkable
class CountsTrainingSteps(Protocol):
    def training_steps(self) -> int:
        """The steps this config's (meta-/pre-)training is asked to run (rows record them as
        `meta_steps_asked`); without it the harness reads the config's `meta_steps`."""
        ...


@runtime_checkable
class ResolvesForScenario(Protocol):
    def resolved(self, spec: ScenarioSpec) -> Any:
        """The config with its scenario-dependent fields (None = from the recipe) filled."""
        ...


@runtime_checkable
class KeyedCheckpoint(Protocol):
    def checkpoint_key(self) -> Any:
        """What the meta-trained checkpoint depends on (default: every training field)."""
        ...


@runtime_checkable
class UsesLR(Protocol):
    def uses_lr(self) -> bool:
        """Whether this configuration's `lr` field changes what it learns (a config of several
        models may have one that ignores it); without it, a config with `lr` does. The harness
        searches `lr` only where it does."""
        ...


# -- scenario --------------------------------------------------------------------------------


@runtime_checkable
class ScoredEpisodeSets(Protocol):
    """Further scored episode sets of a few-shot scenario, scored besides the main one."""

    episode_sets: Mapping[str, Sequence[Experience]]
    test_steps_grid: tuple[int, ...]
    """Regression: each set is scored after every inner-step count here (MAML's table)."""


@runtime_checkable
class EvalOnlyParams(Protocol):
    eval_params: tuple[str, ...]
    """Scenario parameters that change only the scored episodes, not the meta-train data."""


@runtime_checkable
class HasValidationSpec(Protocol):
    val_spec: ScenarioSpec | None
    """The spec of the validation experiences when it differs from the scored ones."""


@runtime_checkable
class GroupedTestSets(Protocol):
    test_groups: Tensor
    """The group (e.g. the video) of every test sample, over all experiences in order; the
    harness reports accuracy per group (`harness.metrics.group_metrics`)."""


@runtime_checkable
class RegimeChanges(Protocol):
    change_points: tuple[int, ...]
    """Indices, in the scored stream's sample order, where a new regime starts (the learner is
    never told); the harness reports the error after each change and the recovery time
    (`harness.metrics.recovery`) and the figures mark them."""


@runtime_checkable
class HasVariants(Protocol):
    VARIANTS: ClassVar[dict[str, dict[str, Any]]]
    """Named parameter sets that `harness compare` runs one after another (e.g. orderings)."""


LEARNER_CAPABILITIES = (MetaTrainable, HeadSweepable, Describable, Resettable, TaskAware,
                        Stateful)
CONFIG_CAPABILITIES = (Buildable, HasPresets, SeededTraining, ResolvesForScenario,
                       CountsTrainingSteps, UsesLR,
                       KeyedCheckpoint)
SCENARIO_CAPABILITIES = (ScoredEpisodeSets, EvalOnlyParams, HasValidationSpec, GroupedTestSets,
                         RegimeChanges)


def _members(*protocols: type) -> frozenset[str]:
    names: set[str] = set()
    for p in protocols:
        names |= {n for n in vars(p) if not n.startswith("_")}
        names |= set(vars(p).get("__annotations__", {}))
    return frozenset(names)


NAMES = {
    "learner": _members(*LEARNER_CAPABILITIES, ConfigurableLearner) | {"predict", "observe"},
    "learner config": _members(*CONFIG_CAPABILITIES),
    "scenario": _members(*SCENARIO_CAPABILITIES) | {
        "id", "version", "spec", "experiences", "val_experiences", "meta_train", "params",
        "stream_hash"},
    "scenario config": _members(HasVariants) | {"build"},
}
"""The capability names of each kind of object, the core protocol's included."""


def misspelled(obj: Any, kind: str) -> list[str]:
    """One message per public attribute of `obj` (or its class) that looks like one of the
    capability names of its `kind` (a key of NAMES) without being one, e.g. 'describ' or
    'presets'. Attributes of torch's nn.Module are not the user's and are left out."""
    known = NAMES[kind]
    inherited = set(dir(nn.Module)) if isinstance(obj, nn.Module) or (
        isinstance(obj, type) and issubclass(obj, nn.Module)) else set()
    lowered = {n.lower(): n for n in known}
    owner = obj.__name__ if isinstance(obj, type) else type(obj).__name__
    out = []
    for name in dir(obj):
        if name.startswith("_") or name in known or name in inherited:
            continue
        close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.85)
        if close:
            out.append(f"{owner}.{name} looks like the {kind} capability "
                       f"{lowered[close[0]]!r} (see harness.capabilities); rename it, or the "
                       "harness ignores it")
    return out
