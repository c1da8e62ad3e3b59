"""Registries of scenarios and learners under versioned string ids.

An entry names its config class as "module:Class" and is imported only when used, so
`import harness` stays fast and optional dependencies stay optional. A config class is a
dataclass with:
  - scenarios: `build(self, seed: int, data_dir: Path | None) -> Scenario`
  - learners:  `build(self, ctx: BuildContext) -> Learner`
and a class attribute `PRESETS: dict[str, dict]` (learners) mapping preset names to overrides.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError


@dataclass(frozen=True)
class Entry:
    """One registered scenario or learner."""

    id: str
    config: str
    """'module:ConfigClass' of the dataclass config whose build() makes the object."""
    summary: str
    tasks: tuple[str, ...] = ("classification",)
    """Task types a learner supports (unused for scenarios)."""
    compare_with: tuple[str, ...] = ()
    """Learners that `harness run` also runs on the same streams, as reference points. The
    i.i.d. oracle of a learner `L` is registered as `L-iid` (the same config with `iid` on);
    the leaderboard pairs the two by that name for the relative drop."""
    defaults: tuple[tuple[str, Any], ...] = ()
    """Config values fixed by the id itself (e.g. the class of a user's learner)."""
    cls: type | None = None
    """The config class itself, for one made at run time (a user learner's `Config`)."""

    def presets(self) -> dict[str, dict[str, Any]]:
        """The config's named presets (`HasPresets`), {} when it declares none."""
        from harness.capabilities import HasPresets  # noqa: PLC0415

        cls = self.config_class()
        # A class object satisfies the protocol when it declares the class attribute.
        return cls.PRESETS if isinstance(cls, HasPresets) else {}

    def config_class(self) -> type:
        if self.cls is not None:
            return self.cls
        module, _, name = self.config.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError as e:
            extra = EXTRAS.get((e.name or "").split(".")[0])
            hint = (f"pip install -e '.[{extra}]'" if extra
                    else "install the matching extra, e.g. pip install -e '.[video,avalanche]'")
            raise HarnessError(
                f"'{self.id}' needs a package that is not installed ({e.name}); {hint}"
            ) from e


EXTRAS = {"av": "video", "avalanche": "avalanche", "ray": "ray", "submitit": "slurm",
          "matplotlib": "plots", "river": "river", "statsmodels": "timeseries"}
"""The pyproject extra that installs each optional top-level package."""


SCENARIOS: dict[str, Entry] = {}
LEARNERS: dict[str, Entry] = {}


def register(registry: dict[str, Entry], entry: Entry) -> None:
    """Add an entry; duplicate ids are an error."""
    if entry.id in registry:
        raise ValueError(f"duplicate registry id {entry.id!r}")
    registry[entry.id] = entry


def _lookup(registry: dict[str, Entry], kind: str, name: str) -> Entry:
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(name, list(registry), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise HarnessError(
        f"unknown {kind} {name!r}{hint} (see `harness list {kind}s` for all {kind}s)"
    )


def get_scenario(name: str) -> Entry:
    return _lookup(SCENARIOS, "scenario", name)


USER_LEARNER = ("module:Class must name a learner class (with predict() and observe(), see "
                "harness.protocol) or a learner config dataclass (with build())")


def _is_config(cls: type) -> bool:
    from harness.capabilities import Buildable  # noqa: PLC0415

    return dataclasses.is_dataclass(cls) and isinstance(cls, Buildable)


def user_learner_class(target: str) -> type:
    """The class a `module:Class` learner names, checked before anything calls it: a learner
    class (called as `Class(spec)`, or `Class(spec, config)` when it declares `Config`) or a
    learner config dataclass (`build(ctx)`)."""
    from harness.protocol import Learner  # noqa: PLC0415
    from harness.user_learners import import_target  # noqa: PLC0415

    module, _, name = target.partition(":")
    if not (name.isidentifier() and all(p.isidentifier() for p in module.split("."))):
        raise HarnessError(f"learner {target!r}: write a learner id or module:Class, e.g. "
                           "my_learners.toy:Linear (see `harness list learners`)")
    obj = import_target(target)
    if not inspect.isclass(obj):
        raise HarnessError(f"learner {target!r} is a {type(obj).__name__}, not a class; "
                           f"{USER_LEARNER}")
    # A class object satisfies a protocol of methods when it defines them.
    if not (_is_config(obj) or isinstance(obj, Learner)):
        raise HarnessError(f"learner {target!r} is a class without predict() and observe() or "
                           f"build(); {USER_LEARNER}")
    return obj


BOTH = ("classification", "regression")


def get_learner(name: str) -> Entry:
    """The entry for `name`; `module:Class` names a user's own learner class (see
    harness.user_learners) or learner config, imported and checked here, before any use."""
    if ":" in name and name not in LEARNERS and not name.startswith(("avalanche:", "river:")):
        from harness.capabilities import ConfigurableLearner  # noqa: PLC0415
        from harness.user_learners import config_for  # noqa: PLC0415

        cls = user_learner_class(name)
        if _is_config(cls):  # the tasks of a registered entry of it, else both
            tasks = next((e.tasks for e in LEARNERS.values() if e.config == name), BOTH)
            return Entry(id=name, config=name, summary="user learner config", tasks=tasks)
        if isinstance(cls, ConfigurableLearner):
            return Entry(id=name, config=name, summary="user learner with a config",
                         tasks=BOTH, cls=config_for(cls, name))
        return Entry(id=name, config="harness.user_learners:UserLearnerConfig",
                     summary="user learner", tasks=BOTH, defaults=(("target", name),))
    if name.startswith("river:"):
        return Entry(id=name, config="baselines.river_adapter:RiverConfig",
                     summary="river online regressor through the adapter", tasks=("regression",),
                     defaults=(("model", name.removeprefix("river:")),))
    if name.startswith("avalanche:"):
        return Entry(id=name, config="baselines.avalanche_adapter:AvalancheConfig",
                     summary="Avalanche strategy through the adapter",
                     defaults=(("strategy", name.removeprefix("avalanche:")),))
    return _lookup(LEARNERS, "learner", name)


def list_scenarios() -> list[Entry]:
    return sorted(SCENARIOS.values(), key=lambda e: e.id)


def list_learners() -> list[Entry]:
    return sorted(LEARNERS.values(), key=lambda e: e.id)


def make_config(entry: Entry, preset: str | None, overrides: dict[str, Any]) -> Any:
    """The entry's config with a preset's values, then the overrides, applied and checked."""
    from harness.config import apply_overrides

    cls = entry.config_class()
    presets = entry.presets()
    values: dict[str, Any] = dict(entry.defaults)
    if preset is not None and presets:
        if preset not in presets:
            raise HarnessError(
                f"learner {entry.id!r} has no preset {preset!r}; choose one of "
                f"{', '.join(sorted(presets))}"
            )
        values.update(presets[preset])
    values.update(overrides)
    return apply_overrides(cls, values, what=entry.id)


# -- built-in entries ------------------------------------------------------------------------
# Explicit, in one place: no folder scanning, nothing imported until used.

for _e in [
    Entry("omniglot-stream", "scenarios.omniglot:OmniglotStreamConfig",
          "OML/ANML meta-test: unseen Omniglot classes, 15 images each, batch 1, class by class"),
    Entry("synthetic-stream", "scenarios.synthetic:SyntheticStreamConfig",
          "tiny class-incremental Gaussian stream for tests and smoke runs"),
    Entry("sine-incremental", "scenarios.sine:SineIncrementalConfig",
          "OML incremental sine: 10 functions in sequence, MSE per function"),
    Entry("split-miniimagenet", "scenarios.miniimagenet:SplitMiniImageNetConfig",
          "OML protocol on MiniImageNet: meta-train on 64 classes, stream 20 unseen test "
          "classes, 30 images each, batch 1, one pass (images via --data-dir)"),
    Entry("split-miniimagenet-cil", "scenarios.miniimagenet:SplitMiniImageNetCILConfig",
          "class-incremental MiniImageNet: 100 classes in 20 experiences of 5, seed-given "
          "order (images via --data-dir)"),
    Entry("video-frames", "scenarios.video:VideoFramesConfig",
          "frames of real videos, one label per video; orderings iid/instance/class-instance "
          "(Stream-51); held-out segments with a temporal gap"),
    Entry("video-nextframe", "scenarios.video_regression:VideoNextFrameConfig",
          "online prediction of the frame k steps ahead of real videos (grayscale, downsampled); "
          "prequential MSE and skill against persistence"),
    Entry("video-egomotion", "scenarios.video_regression:VideoEgomotionConfig",
          "camera-motion regression: a virtual camera (crop with translation and zoom) over real "
          "frames, velocity regime changes; per-component MSE and recovery time"),
    Entry("timeseries-stream", "scenarios.timeseries:TimeSeriesStreamConfig",
          "one-step-ahead forecasting of real series (statsmodels, river datasets); prequential "
          "MAE/MSE, MASE against seasonal-naive; meta-training on the other series"),
    Entry("sinusoid-fewshot", "scenarios.fewshot:SinusoidFewShotConfig",
          "MAML sinusoid regression: K-shot (5, 10) episodes, MSE after 1/5/10 inner steps"),
    Entry("omniglot-fewshot", "scenarios.fewshot:OmniglotFewShotConfig",
          "N-way K-shot Omniglot episodes (background meta-train, evaluation test), 95% CI"),
    Entry("miniimagenet-fewshot", "scenarios.fewshot:MiniImageNetFewShotConfig",
          "5-way 1/5-shot MiniImageNet episodes, Ravi & Larochelle split (--data-dir images)"),
]:
    register(SCENARIOS, _e)

for _e in [
    Entry("finetune", "baselines.finetune:FinetuneConfig",
          "plain online SGD of the whole network (lower bound)", ("classification", "regression")),
    Entry("iid-offline", "baselines.iid_offline:IIDOfflineConfig",
          "i.i.d. multi-epoch oracle on the same data (upper bound)",
          ("classification", "regression")),
    Entry("replay", "baselines.replay:ReplayConfig",
          "experience replay with a reservoir buffer", ("classification", "regression")),
    Entry("pretrain", "baselines.finetune:PretrainConfig",
          "Pretrain & Transfer: supervised pre-training on the meta-train split, head-only "
          "online SGD", ("classification", "regression")),
    Entry("ncm", "baselines.ncm:NCMConfig", "nearest class mean on frozen features"),
    Entry("slda", "baselines.slda:SLDAConfig",
          "streaming LDA on frozen features (Hayes & Kanan 2020)"),
    Entry("anml", "baselines.anml:ANMLConfig",
          "ANML (Beaulieu et al. 2020): neuromodulated meta-learning; head-only meta-test",
          compare_with=("anml-untrained", "anml-pretrain", "anml-iid", "finetune")),
    Entry("anml-untrained", "baselines.anml:ANMLConfig",
          "the ANML network without meta-training (its init); head-only meta-test",
          defaults=(("init", "random"),)),
    Entry("anml-pretrain", "baselines.anml:ANMLConfig",
          "the ANML network pre-trained supervised on the meta-train split; head-only",
          defaults=(("init", "pretrain"),)),
    Entry("anml-seeded", "baselines.anml:ANMLConfig",
          "ANML meta-trained once per run seed (meta_seed=-1): its CI over seeds includes "
          "meta-training variance", defaults=(("meta_seed", -1),)),
    Entry("anml-iid", "baselines.anml:ANMLConfig",
          "i.i.d. oracle on ANML's meta-learned features: output layer fit on shuffled data",
          defaults=(("iid", True),)),
    Entry("oml", "baselines.oml:OMLConfig",
          "OML (Javed & White 2019), variant=2019|2020 (default 2020); needs image_size=84",
          compare_with=("oml-untrained", "oml-pretrain", "oml-iid", "finetune")),
    Entry("oml-iid", "baselines.oml:OMLConfig",
          "i.i.d. oracle on OML's meta-learned features: output layer fit on shuffled data",
          defaults=(("iid", True),)),
    Entry("oml-2019", "baselines.oml:OMLConfig",
          "OML as in the 2019 paper: two-layer PLN, one class per trajectory, first order",
          compare_with=("oml-2019-untrained", "oml-2019-iid", "finetune"),
          defaults=(("variant", "2019"),)),
    Entry("oml-2019-untrained", "baselines.oml:OMLConfig",
          "the oml-2019 network without meta-training (its init); head-only meta-test",
          defaults=(("variant", "2019"), ("init", "random"))),
    Entry("oml-2019-iid", "baselines.oml:OMLConfig",
          "i.i.d. oracle on oml-2019's meta-learned features: output layer fit on shuffled data",
          defaults=(("variant", "2019"), ("iid", True))),
    Entry("oml-2020", "baselines.oml:OMLConfig",
          "OML as in the 2020 code: linear PLN, 3 classes x 5 steps, second order",
          compare_with=("oml-untrained", "oml-pretrain", "oml-2020-iid", "finetune"),
          defaults=(("variant", "2020"),)),
    Entry("oml-2020-iid", "baselines.oml:OMLConfig",
          "i.i.d. oracle on oml-2020's meta-learned features: output layer fit on shuffled data",
          defaults=(("variant", "2020"), ("iid", True))),
    Entry("oml-untrained", "baselines.oml:OMLConfig",
          "the OML network without meta-training (its init); head-only meta-test",
          defaults=(("init", "random"),)),
    Entry("oml-pretrain", "baselines.oml:OMLConfig",
          "the OML network pre-trained supervised on the meta-train split; head-only",
          defaults=(("init", "pretrain"),)),
    Entry("oml-sine", "baselines.oml_sine:OMLSineConfig",
          "OML incremental sine: meta-learned RLN frozen, PLN trained online", ("regression",),
          compare_with=("oml-sine-pretrain", "oml-sine-untrained", "finetune")),
    Entry("oml-sine-pretrain", "baselines.oml_sine:OMLSineConfig",
          "the OML sine network pre-trained on random functions; PLN trained online",
          ("regression",), defaults=(("init", "pretrain"),)),
    Entry("oml-sine-untrained", "baselines.oml_sine:OMLSineConfig",
          "the OML sine network at its init; PLN trained online", ("regression",),
          defaults=(("init", "random"),)),
    Entry("maml", "baselines.maml:MAMLConfig",
          "MAML (Finn et al. 2017), second order, vmap over the meta-batch",
          ("classification", "regression")),
    Entry("fomaml", "baselines.maml:FOMAMLConfig", "first-order MAML",
          ("classification", "regression")),
    Entry("maml++", "baselines.maml_pp:MAMLPlusPlusConfig",
          "MAML++ (Antoniou et al. 2019): MSL, DA, per-step BN, LSLR, cosine (each a switch)",
          ("classification", "regression")),
    Entry("anil", "baselines.maml:ANILConfig", "ANIL (Raghu et al. 2020): only the head adapts",
          ("classification", "regression")),
    Entry("boil", "baselines.maml:BOILConfig", "BOIL (Oh et al. 2021): only the body adapts",
          ("classification", "regression")),
    Entry("sparse-maml", "baselines.sparse_maml:SparseMAMLConfig",
          "sparse-MAML (von Oswald et al. 2021): binary inner-lr masks, straight-through",
          ("classification", "regression")),
    Entry("sparse-relu-maml", "baselines.sparse_maml:SparseReLUMAMLConfig",
          "sparse-ReLU-MAML: inner-lr masks max(m, 0)", ("classification", "regression")),
    Entry("reptile", "baselines.reptile:ReptileConfig",
          "Reptile (Nichol et al. 2018): interpolate toward task-adapted weights",
          ("classification", "regression")),
    Entry("persistence", "baselines.naive:PersistenceConfig",
          "no-change forecast: the current frame / last value (or the last observed target)",
          ("regression",)),
    Entry("seasonal-naive", "baselines.naive:SeasonalNaiveConfig",
          "the value one season back (the scenario declares the season)", ("regression",)),
    Entry("multistage", "baselines.multistage:MultistageConfig",
          "meta-learned multistage network (S=3): slow frozen stage, medium stage pulled to its "
          "slow copy, fast stage with decay; per-stage rates meta-learned",
          ("classification", "regression")),
    Entry("multistage-s2", "baselines.multistage:MultistageConfig",
          "multistage with S=2: slow frozen stage + fast stage (OML's two stages)",
          ("classification", "regression"), defaults=(("stages", 2),)),
    Entry("multistage-s1", "baselines.multistage:MultistageConfig",
          "multistage with S=1: the fast stage alone, on the raw input",
          ("classification", "regression"), defaults=(("stages", 1),)),
    Entry("protonet", "baselines.protonet:ProtoNetConfig",
          "Prototypical Networks (Snell et al. 2017): nearest class-mean embedding"),
]:
    register(LEARNERS, _e)
