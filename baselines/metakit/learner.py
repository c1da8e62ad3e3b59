"""`FunctionalMetaLearner`: the base of the torch.func meta-learners (MAML family, Reptile,
ProtoNets): a functional net, its weights as parameters, and their resumable meta-training
on batches of episodes (`EpisodeSource`)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from baselines.metakit.resumable import NamedState, ResumableRun
from baselines.networks.functional import Params, make_functional_backbone
from harness.config import BuildContext
from harness.errors import HarnessError

TASK_SEED_OFFSET = 7919
"""The meta-training sampler's generator is seeded with the run seed plus this."""


@runtime_checkable
class EpisodeSource(Protocol):
    """Meta-training tasks in batches (a few-shot scenario's `meta_train`)."""

    shots: int
    """Support samples per class of its episodes."""

    def sample_batch(self, n_tasks: int, g: torch.Generator, ways: int | None = None,
                     shots: int | None = None, queries: int | None = None,
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """xs, ys, xq, yq, each with a leading task dimension."""
        ...


@runtime_checkable
class ClassEpisodeSource(EpisodeSource, Protocol):
    """Classification episodes drawn from `n_classes` classes."""

    n_classes: int


def param_key(name: str) -> str:
    """The nn.ParameterDict key of weight `name` (keys may not contain '.')."""
    return name.replace(".", "/")


class FunctionalMetaLearner(nn.Module):
    """A functional net (`net`, baselines.networks.functional) whose weights are the parameters
    `params` ('.' in names made '/'), built from the run's seed. Subclasses call
    `_register(init)` with the (possibly extended) weights of `net.init`, in __init__."""

    needs_meta_train = True

    def __init__(self, cfg: Any, ctx: BuildContext, n_out: int) -> None:
        super().__init__()
        self.cfg, self.spec, self.device, self.seed = cfg, ctx.spec, ctx.device, ctx.seed
        self.resume_path, self.progress = ctx.resume_path, ctx.progress
        self.regression = ctx.spec.task == "regression"
        self.net = make_functional_backbone(cfg.backbone, ctx.spec.input_shape, n_out,
                                            cfg.channels)
        self._support: list[tuple[Tensor, Tensor]] = []

    def _initial_weights(self) -> Params:
        return self.net.init(torch.Generator().manual_seed(int(self.seed)))

    def _register(self, init: Params) -> None:
        self.names = list(init)
        self.params = nn.ParameterDict({param_key(k): nn.Parameter(v) for k, v in init.items()})

    def meta_params(self) -> Params:
        """The meta-learned weights of the net, by name."""
        return {k: self.params[param_key(k)] for k in self.names}

    def _episodes(self, data: Any, needs: type = EpisodeSource) -> Any:
        if not isinstance(data, needs):
            raise HarnessError(f"{self.cfg.NAME} needs an episodic scenario (its meta_train "
                               f"must provide sample_batch); this one gives "
                               f"{type(data).__name__}")
        return data

    def _resumable(self, opt: torch.optim.Optimizer, sched: Any, g: torch.Generator
                   ) -> ResumableRun:
        """The partial-checkpoint bookkeeping of a meta_train call: this module, `opt`, `sched`
        and the sampler's generator `g`."""
        return ResumableRun(NamedState(self, opt, sched), g, self.resume_path,
                            self.cfg.checkpoint_every_s)

    def _task_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.seed) + TASK_SEED_OFFSET)
