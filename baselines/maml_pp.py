"""MAML++ (Antoniou, Edwards & Storkey 2019): `maml++`, MAML with all five fixes on, and its
test protocol, the checkpoint ensemble.

The five fixes are switches of every MAML config (baselines/maml.py): multi-step loss,
derivative-order annealing, per-step batch-norm weights, learned per-layer per-step inner
learning rates, cosine annealing of the meta learning rate. `MAMLPlusPlusConfig` turns them on
and takes MAML++'s own recipe (`MAML_PP_RECIPES`, baselines/metakit/recipes.py) before MAML's.

Checkpoint ensembling (`ensemble_top` > 0): meta-training scores the meta-weights on the
scenario's validation episodes every `val_every` meta-steps (the harness's `validate`, which
runs them as the scored episodes are run) and keeps copies of the `ensemble_top` best; at test
every member adapts on the support set and `predict` returns the mean of their outputs
(logits). See docs/maml.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from baselines.maml import MAMLConfig, MAMLLearner
from baselines.metakit.learner import param_key
from baselines.metakit.recipes import MAML_PP_RECIPES, fill_from_recipe, scenario_kind
from baselines.networks.functional import Params
from harness.capabilities import Validate
from harness.config import BuildContext, Progress, check_range, eval_field
from harness.errors import HarnessError
from harness.protocol import ScenarioSpec


@dataclass
class MAMLPlusPlusConfig(MAMLConfig):
    """MAML++ (Antoniou et al. 2019) with all five fixes on (each one a switch).

    Paper recipe: 5 inner steps at train and test, inner lr 0.1, MSL annealed over the first
    10 epochs (5,000 steps), cosine annealing, and at test the ensemble of the 5 checkpoints
    with the best validation accuracy (one checkpoint per epoch of 500 steps). The authors'
    configs (MAML_PP_RECIPES) train 50,000 steps, second order throughout, with a max-pooling
    conv4: on Omniglot 8 tasks per meta-batch; on MiniImageNet 2 tasks, 48 channels, inner lr
    0.01, MSL over 7,500 steps and a constant meta lr. Other scenarios: first order for the
    first 50 epochs (25,000 steps), as the paper describes derivative-order annealing, and
    75,000 steps. BNRS (per-step running statistics) is replaced by per-step batch
    statistics: the nets here keep no running statistics.
    """

    inner_steps: int | None = 5
    test_steps: int | None = eval_field(5, "Inner SGD steps at meta-test.")
    inner_lr: float | None = None
    """Initial inner lr, learned per layer and step (None = the recipe's: 0.1, 0.01 on
    MiniImageNet)."""
    msl_steps: int | None = None
    """Multi-step loss annealed over this many meta-steps (None = the recipe's: 5,000 paper,
    500 quick)."""
    da_steps: int | None = None
    """First order for this many meta-steps (None = the recipe's: 0 on Omniglot, 25,000 on
    other scenarios, 500 quick)."""
    per_step_bn: bool = True
    learn_lrs: bool = True
    cosine: bool | None = None
    """Cosine annealing of the meta lr (None = the recipe's: on, off on MiniImageNet, where
    the authors' minimum lr equals the meta lr)."""
    ensemble_top: int | None = None
    """Test with the ensemble of this many meta-weights, the best on the scenario's validation
    episodes (0 = the last meta-weights). None = the recipe's: 5 paper, 0 quick."""
    val_every: int = 500
    """Meta-steps between validations when ensembling (the authors' epoch: 500 iterations);
    the last meta-step is always validated too."""
    NAME: ClassVar[str] = "maml++"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "msl_steps", "da_steps", "ensemble_top", ge=0)
        check_range(self, "val_every", ge=1)

    def resolved(self, spec: ScenarioSpec) -> MAMLPlusPlusConfig:
        """MAML_PP_RECIPES for this recipe and scenario kind, then MAML's recipes."""
        table = MAML_PP_RECIPES[self.recipe]
        kind = scenario_kind(spec)
        values = {**table["*"], **table.get(kind, {})}
        own = dataclasses.replace(self, **{k: v for k, v in values.items()
                                           if getattr(self, k) is None
                                           or (k == "channels" and not self.channels)})
        return fill_from_recipe(own, self.RECIPES, kind)

    def build(self, ctx: BuildContext) -> MAMLPlusPlusLearner:
        return MAMLPlusPlusLearner(self.resolved(ctx.spec), ctx)


def _member_key(slot: int, name: str) -> str:
    """Buffer (and state-dict) name of ensemble slot `slot`'s copy of meta-parameter `name`."""
    return f"ens{slot}/{param_key(name)}"


class MAMLPlusPlusLearner(MAMLLearner):
    """MAMLLearner with the checkpoint ensemble: `ensemble_top` slots of meta-weights, beside
    the weights on the learner's device (an episode adapts every member without a copy). They
    are buffers, so the state dict (and with it the harness checkpoint and the partial one)
    carries them, and a resumed meta-training keeps the same ensemble as an uninterrupted one;
    an empty slot has score NaN. With `ensemble_top` = 0 it is MAML with MAML++'s switches
    (no ensemble entries in the state dict)."""

    cfg: MAMLPlusPlusConfig

    def __init__(self, cfg: MAMLPlusPlusConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        self.ensemble_top = int(cfg.ensemble_top or 0)
        if self.ensemble_top:
            k = self.ensemble_top
            self.register_buffer("ens_score", torch.full((k,), math.nan, dtype=torch.float64))
            self.register_buffer("ens_step", torch.zeros(k, dtype=torch.int64))
            self.register_buffer("ens_n_val", torch.zeros((), dtype=torch.int64))
            for i in range(k):
                for name, v in self.meta_params().items():
                    self.register_buffer(_member_key(i, name), torch.zeros_like(v))
        self._validating = False

    def members(self) -> list[Params]:
        """The ensemble's meta-weights, in slot order; [] when not ensembling or before the
        first validation."""
        if not self.ensemble_top:
            return []
        names = list(self.meta_params())
        return [{n: getattr(self, _member_key(i, n)) for n in names}
                for i in range(self.ensemble_top) if not math.isnan(self.ens_score[i])]

    def _bases(self) -> list[Params]:
        """The weights an episode adapts from: the ensemble's members once it holds any
        (except while meta-training validates the current weights), else the meta-weights."""
        held = [] if self._validating else self.members()
        return held or super()._bases()

    # -- validation during meta-training ----------------------------------------------------

    def _check_validate(self, validate: Validate | None) -> None:
        if self.ensemble_top and validate is None:
            raise HarnessError(f"{self.cfg.NAME}: ensemble_top={self.ensemble_top} picks "
                               "checkpoints on validation episodes, but none were given; set "
                               "the scenario's val_episodes > 0 or learner.ensemble_top=0")

    def _after_step(self, total: int, validate: Validate | None, progress: Progress | None
                    ) -> Callable[[int], None] | None:
        """After every `val_every` meta-steps, and after the last one, the current meta-weights
        are scored by `validate` and offered to the ensemble (`keep_if_best`)."""
        if not self.ensemble_top or validate is None:
            return None
        every = self.cfg.val_every

        def after(done: int) -> None:
            if done % every == 0 or done == total:
                # The number of validation episodes, for the result rows.
                self.ens_n_val.fill_(validate.n_episodes)  # type: ignore[attr-defined]
                val = self.validation_score(validate)
                self.keep_if_best(val, done)
                if progress is not None:
                    progress("validation", done, total,
                             {"val_mse": -val} if self.regression else {"val_acc": val})

        return after

    def validation_score(self, validate: Validate) -> float:
        """`validate()` on the current meta-weights (not the ensemble's members), then back
        to them: the mean accuracy, or minus the mean MSE (higher is better; -inf when an
        episode diverged)."""
        self._validating = True
        try:
            return validate()
        finally:
            self._validating = False
            self.reset()

    def keep_if_best(self, score: float, step: int) -> bool:
        """Offer the current meta-weights, with validation `score` after `step` meta-steps, to
        the ensemble: they fill an empty slot, or replace the worst member if they score at
        least as well (a tie goes to the later checkpoint, as a reversed stable sort of the
        scores, the authors' pick of the top-n, would have it). Non-finite scores are never
        kept. Returns whether they were."""
        if not math.isfinite(score):
            return False
        scores = self.ens_score
        empty = torch.isnan(scores)
        if empty.any():
            slot = int(empty.nonzero()[0])
        else:
            worst = scores.min()
            if score < worst:
                return False
            tied = (scores == worst).nonzero().flatten()
            slot = int(tied[self.ens_step[tied].argmin()])  # the earliest of the worst
        with torch.no_grad():
            for name, v in self.meta_params().items():
                getattr(self, _member_key(slot, name)).copy_(v.detach())
        scores[slot] = score
        self.ens_step[slot] = step
        return True

    def checkpoint_selection(self) -> str:
        """Which meta-weights answer at test, for the result rows."""
        k = self.ensemble_top
        if not k:
            return "last"
        steps = sorted(int(s) for s, v in zip(self.ens_step, self.ens_score, strict=True)
                       if not math.isnan(v))
        if not steps:
            return f"last (ensemble of top-{k} asked, but no validation was reached)"
        what = "MSE" if self.regression else "accuracy"
        return (f"ensemble of top-{k} by val {what} (every {self.cfg.val_every} steps, "
                f"{int(self.ens_n_val)} val episodes; members from step"
                f"{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))})")
