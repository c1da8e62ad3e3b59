"""What the baselines share: the backbone config, supervised pre-training, and a small base.

Every baseline config inherits `BackboneConfig`, so any of them can run on pre-trained
features (`pretrain=true`): the harness calls `meta_train(pool, ...)` once, which
trains the features with a temporary linear head over all meta-train pool classes and throws
the head away.

Checkpoints: a baseline's `state_dict()` is the state of its feature extractor only (keys
`features.*`, tensors only). The stream head and the online statistics (class means,
covariance, replay buffer) are built by `build()` for the scenario's spec, so a checkpoint
never depends on the stream's number of outputs, and `load_state_dict` loads the features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.networks.modules import eval_mode, make_backbone
from baselines.seeding import seeded, sub_seed
from harness.capabilities import MetaTrainReport, Validate
from harness.config import BuildContext, Progress, check_range
from harness.errors import DivergedError, HarnessError
from harness.protocol import Budget, LabeledPool, ScenarioSpec

UNSEEN_LOGIT = -1e30
"""Logit of a class with no statistics yet (NCM, SLDA): far below any real score, finite."""


@dataclass
class BackboneConfig:
    """Feature extractor and optional supervised pre-training, shared by every baseline."""

    backbone: str = "auto"
    """Name in baselines.networks.BACKBONES; 'auto' = convnet-small for images, mlp for vectors."""
    width: int = 64
    """Channels (conv nets) or hidden units (mlp) of the backbone; >= 1."""
    pretrain: bool = False
    """Pre-train the features on the meta-train pool (supervised, all pool classes) first."""
    pretrain_epochs: int = 5
    """Epochs of pre-training over the whole pool; >= 1."""
    pretrain_lr: float = 1e-3
    """Adam learning rate of pre-training; > 0."""
    pretrain_batch: int = 64
    """Minibatch size of pre-training; >= 1."""
    meta_seed: int = 0
    """Seed of the head init, of pre-trained features and of pre-training (not run seed); >= 0."""

    def __post_init__(self) -> None:
        if not self.backbone:
            raise ValueError("backbone must be 'auto' or a name in baselines.networks.BACKBONES")
        check_range(self, "width", "pretrain_epochs", ge=1)
        check_range(self, "pretrain_lr", gt=0)
        check_range(self, "pretrain_batch", ge=1)
        check_range(self, "meta_seed", ge=0)

    def checkpoint_key(self) -> dict[str, Any]:
        """What a pre-trained checkpoint depends on: the backbone and its pre-training only, not
        the learner on top, so ncm, slda, pretrain, ... share one pre-trained backbone."""
        return {"kind": "pretrained-backbone",
                **{f.name: getattr(self, f.name) for f in fields(BackboneConfig)}}


def resolve_backbone(cfg: BackboneConfig, spec: ScenarioSpec) -> str:
    """The backbone name, with 'auto' made concrete for the scenario's inputs."""
    if cfg.backbone != "auto":
        return cfg.backbone
    return "convnet-small" if len(spec.input_shape) == 3 else "mlp"


def pretrain(
    features: nn.Module,
    pool: LabeledPool,
    cfg: BackboneConfig,
    device: str | torch.device,
    progress: Progress | None = None,
    budget: Budget | None = None,
) -> list[float]:
    """Supervised pre-training of `features` in place on all classes of `pool`.

    A temporary linear head over the pool's classes is trained with the features by Adam
    (`cfg.pretrain_lr`) on shuffled minibatches for `cfg.pretrain_epochs` epochs, all seeded by
    `cfg.meta_seed`; the head is discarded. `budget.steps` / `budget.seconds` (when > 0) stop
    training early. Reports `progress('pretrain', epoch, epochs, {'loss': ...})` per epoch.

    Returns:
        The mean training loss of each epoch run.
    """
    return Pretraining(features, pool, cfg, device, budget or Budget()).run(progress)


class Pretraining:
    """One supervised pre-training (see `pretrain`); `run` returns the epochs' mean losses and
    `steps` counts the optimizer steps taken."""

    def __init__(self, features: nn.Module, pool: LabeledPool, cfg: BackboneConfig,
                 device: str | torch.device, budget: Budget) -> None:
        self.features, self.pool, self.cfg, self.budget = features, pool, cfg, budget
        self.device = torch.device(device)
        with seeded(cfg.meta_seed):
            self.head = nn.Linear(features.out_dim, pool.n_classes).to(self.device)
        self.gen = torch.Generator().manual_seed(sub_seed(cfg.meta_seed, "pretrain"))
        self.opt = torch.optim.Adam([*features.parameters(), *self.head.parameters()],
                                    lr=cfg.pretrain_lr)
        self.steps, self.t0 = 0, time.perf_counter()
        self.total_steps = cfg.pretrain_epochs * -(-len(pool.y) // cfg.pretrain_batch)

    def spent(self) -> bool:
        """The budget is spent (steps or seconds)."""
        budget = self.budget
        return bool((budget.steps and self.steps >= budget.steps)
                    or (budget.seconds and time.perf_counter() - self.t0 >= budget.seconds))

    @property
    def complete(self) -> bool:
        """Every configured step was taken, or the budget's steps (not its seconds) were."""
        return self.steps >= self.total_steps or bool(
            self.budget.steps and self.steps >= self.budget.steps)

    def run(self, progress: Progress | None) -> list[float]:
        losses: list[float] = []
        was = self.features.training
        self.features.train(True)
        try:
            if progress is not None:  # the phase starts now, not after its first epoch
                progress("pretrain", 0, self.cfg.pretrain_epochs, {})
            with torch.enable_grad():
                for epoch in range(self.cfg.pretrain_epochs):
                    losses.append(self._epoch(epoch))
                    if progress is not None:
                        progress("pretrain", epoch + 1, self.cfg.pretrain_epochs,
                                 {"loss": losses[-1]})
                    if self.spent():
                        break
        finally:
            self.features.train(was)
        return losses

    def _epoch(self, epoch: int) -> float:
        """One shuffled pass over the pool (cut short when the budget is spent): its mean
        training loss."""
        pool, cfg, device = self.pool, self.cfg, self.device
        order = torch.randperm(len(pool.y), generator=self.gen)
        total, count = 0.0, 0
        for i in range(0, len(order), cfg.pretrain_batch):
            idx = order[i : i + cfg.pretrain_batch]
            x, y = pool.x[idx].to(device), pool.y[idx].to(device)
            loss = F.cross_entropy(self.head(self.features(x)), y)
            if not torch.isfinite(loss):
                raise DivergedError(
                    f"pre-training loss is {loss.item()} at epoch {epoch + 1}; "
                    f"lower pretrain_lr (now {cfg.pretrain_lr})"
                )
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.item() * len(idx)
            count, self.steps = count + len(idx), self.steps + 1
            if self.spent():
                break
        return total / max(count, 1)


class FeatureLearner(nn.Module):
    """Base of the baselines: `features` (checkpointed) and an optional linear `head`.

    The features are initialized from `cfg.meta_seed` when they are to be pre-trained (one
    checkpoint serves every run seed) and from the run seed otherwise. The head is PyTorch's
    default init drawn from `cfg.meta_seed`, not the run seed: then `state_dict()` (the
    features) plus the spec and config determine the whole learner, and loading a checkpoint
    into a learner built with any run seed gives the same predictions. (A zero head was
    rejected: with it, tiny learning rates turn online SGD into a forgetting-free
    class-sum classifier, and lr selection picks that degenerate regime.) Subclasses set up
    their online state in `_reset_stream()`, which `__init__` calls last, before it saves the
    reset point. A subclass without the linear head sets `_linear_head` False; one that
    classifies only names itself in `_classification_only`.
    """

    _linear_head: ClassVar[bool] = True
    _classification_only: ClassVar[str] = ""

    def __init__(self, cfg: BackboneConfig, ctx: BuildContext) -> None:
        if self._classification_only and ctx.spec.task != "classification":
            raise HarnessError(f"{self._classification_only} is for classification scenarios; "
                               "use finetune or replay")
        super().__init__()
        self.cfg, self.spec, self.seed = cfg, ctx.spec, ctx.seed
        self.device = torch.device(ctx.device)
        self.needs_meta_train = cfg.pretrain
        self._progress = ctx.progress
        name = resolve_backbone(cfg, ctx.spec)
        with seeded(cfg.meta_seed if cfg.pretrain else ctx.seed):
            self.features = make_backbone(name, ctx.spec, cfg.width)
        with seeded(sub_seed(cfg.meta_seed, "head")):
            self.head = (nn.Linear(self.features.out_dim, ctx.spec.n_outputs)
                         if self._linear_head else None)
        self.to(self.device)
        self._reset_point: dict[str, Tensor] = {}
        self._reset_stream()
        self._save_reset_point()

    def _features(self, x: Tensor) -> Tensor:
        """Features in eval mode: predicting never updates BatchNorm statistics."""
        with eval_mode(self.features):
            return self.features(x)

    def _reset_stream(self) -> None:
        """(Re)create the online state: optimizer, buffer, statistics."""

    def _save_reset_point(self) -> None:
        self._reset_point = {k: v.detach().clone() for k, v in nn.Module.state_dict(self).items()}

    def reset(self) -> None:
        """Back to the state after build / meta-training / load_state_dict (episodic runs)."""
        nn.Module.load_state_dict(self, self._reset_point)
        self._reset_stream()

    def set_task(self, task_id: int) -> None:
        """Task ids are ignored: the baselines are single-head."""

    def meta_train(self, data: Any, budget: Budget, progress: Progress | None,
                   validate: Validate | None) -> MetaTrainReport:
        """Pre-train the features on `data` (see `pretrain`); the stream head is untouched.
        Steps are not counted in the report; `validate` is not used."""
        if not isinstance(data, LabeledPool):
            raise HarnessError(
                f"pretrain=true needs a scenario with a labelled meta-train pool, got "
                f"{type(data).__name__}; set pretrain=false"
            )
        run = Pretraining(self.features, data, self.cfg, self.device, budget)
        run.run(progress or self._progress)
        self._save_reset_point()
        return MetaTrainReport(steps_done=None, complete=run.complete)

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "",
                   keep_vars: bool = False) -> dict[str, Any]:
        """The checkpoint: the features' state only (keys 'features.*'), see module docstring."""
        return self.features.state_dict(destination=destination, prefix=prefix + "features.",
                                        keep_vars=keep_vars)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load features saved by `state_dict()`; the head and online state stay as built."""
        other = [k for k in state_dict if not k.startswith("features.")]
        if strict and other:
            raise HarnessError(f"checkpoint has keys outside 'features.': {other[:5]}; "
                               "it was not written by this baseline's state_dict()")
        feats = {k[len("features."):]: v for k, v in state_dict.items()
                 if k.startswith("features.")}
        result = self.features.load_state_dict(feats, strict=strict, assign=assign)
        self._save_reset_point()
        return result

    def forward(self, x: Tensor) -> Tensor:
        return self.predict(x)

    def predict(self, x: Tensor) -> Tensor:
        raise NotImplementedError
