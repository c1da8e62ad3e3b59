"""`RecipeConfig`: what the configs of the MAML family, Reptile and ProtoNets share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from baselines.metakit.recipes import Recipes, fill_from_recipe, scenario_kind
from harness.config import check_choice, check_range, train_config_hash
from harness.protocol import ScenarioSpec


@dataclass
class RecipeConfig:
    """A meta-learner config whose None fields resolve from a recipe table per scenario kind
    (`RECIPES`, see baselines.metakit.recipes), meta-trained from the run's seed, resumably.
    Subclasses set `NAME` (the learner, first in the checkpoint key) and `RECIPES`."""

    SEEDED_TRAINING: ClassVar[bool] = True
    """Meta-training draws init and tasks from the run's seed: one checkpoint per seed."""
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"recipe": "quick"}, "paper": {"recipe": "paper"}}
    NAME: ClassVar[str] = ""
    RECIPES: ClassVar[Recipes] = {}

    recipe: str = "quick"
    """'quick' (CPU, minutes) or 'paper' (the published recipe); set by --preset."""
    backbone: str | None = None
    """conv4 | conv4-stride (MAML's Omniglot net) | resnet12 | mlp | mlp-maml (the sinusoid
    net with MAML's init: truncated normal std 0.01, zero biases); baselines.networks.
    functional."""
    channels: int = 0
    """Conv channels (0 = paper default: 64 Omniglot, 32 MiniImageNet)."""
    time_limit_s: float = 0.0
    """Stop meta-training after this many seconds of this run (0 = no limit). The stopped run
    keeps a partial checkpoint, and the next run of the same config resumes from it; the rows
    record meta_steps_done."""
    checkpoint_every_s: float = 120.0
    """Save a resumable partial checkpoint this often during meta-training."""

    def __post_init__(self) -> None:
        check_choice(self, "recipe", self.RECIPES)
        check_range(self, "time_limit_s", "checkpoint_every_s", ge=0)

    def checkpoint_key(self) -> list[str]:
        """What a meta-trained checkpoint depends on: the learner and its training fields. The
        harness keys the config `resolved` for the scenario, so editing the recipe of one
        scenario kind retrains that kind only."""
        return [self.NAME, train_config_hash(self)]

    def resolved(self, spec: ScenarioSpec) -> Any:
        """A copy with every None filled from the recipe for this scenario kind."""
        return fill_from_recipe(self, self.RECIPES, scenario_kind(spec))
