"""A user's own learner, named `module:Class` on the command line (docs/design.md D2).

Two forms:
  - a learner class, built as `Class(spec)`;
  - a learner class that declares `Config`, a dataclass of its hyper-parameters
    (`harness.capabilities.ConfigurableLearner`), built as `Class(spec, config)`. `--set`
    reaches its fields and, when it has `lr`, the learning-rate search tunes it as it tunes
    every built-in learner.
(A learner config dataclass with `build(ctx)` is a third form, used as the built-in ones are.)
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from typing import Any

import torch

from harness.config import BuildContext
from harness.errors import HarnessError
from harness.protocol import Learner


def import_target(target: str) -> Any:
    """The object `module:Name` names; importing the module runs its code, as `python -m`
    would, with the current folder importable."""
    module, _, name = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return getattr(importlib.import_module(module), name)
    except (Exception, SystemExit) as e:  # the module's code may raise anything
        why = (f"{type(e).__name__}: {e}" if not isinstance(e, SystemExit)
               else f"its code called sys.exit({e.code!r})")
        raise HarnessError(f"cannot import {target!r} ({why}); is the module on PYTHONPATH and "
                           "the class name right?") from None


def _checked(learner: Any, target: str) -> Any:
    if not isinstance(learner, Learner):
        raise HarnessError(f"{target} has no predict() or observe() method; see "
                           "harness.protocol.Learner")
    return learner


@dataclasses.dataclass
class UserLearnerConfig:
    """A user's own learner class, named `module:Class`."""

    target: str = ""
    """'module:Class'; the class is called with the scenario's ScenarioSpec."""

    def build(self, ctx: BuildContext) -> Any:
        cls = import_target(self.target)
        torch.manual_seed(ctx.seed)
        return _checked(cls(ctx.spec), self.target)


def config_for(cls: type, target: str) -> type:
    """The learner config class of a user's learner class that declares `Config`: the user's
    dataclass (same name and fields, so run ids hash them) with a `build(ctx)` that seeds torch
    with the run's seed and calls `cls(ctx.spec, config)`."""
    base = cls.Config  # type: ignore[attr-defined]
    if not (isinstance(base, type) and dataclasses.is_dataclass(base)):
        raise HarnessError(f"{target}: Config must be a dataclass of the learner's "
                           f"hyper-parameters, got {base!r}")

    def build(self: Any, ctx: BuildContext) -> Any:
        torch.manual_seed(ctx.seed)
        return _checked(cls(ctx.spec, self), target)

    made = dataclasses.make_dataclass(base.__name__, [], bases=(base,),
                                      namespace={"build": build})
    made.__module__, made.__qualname__ = base.__module__, base.__qualname__
    made.__doc__ = base.__doc__
    return made
