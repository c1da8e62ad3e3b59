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


def class_target(cls: type, kind: str = "learner") -> str:
    """`module:Class` of a class object, refused (one line) where no later import finds it:
    a class defined in __main__ (a notebook, a script) or inside a function or a class."""
    module, name = cls.__module__, cls.__qualname__
    if module == "__main__" or "." in name:  # '<locals>' or nested in a class
        where = "in __main__ (a notebook or script)" if module == "__main__" else \
            f"inside {name.rsplit('.', 1)[0]}"
        raise HarnessError(f"{kind} class {cls.__name__} is defined {where}, which the harness "
                           "cannot import by name; define it at the top level of an importable "
                           "module (a .py file on the path) and pass it, or 'module:Class'")
    return f"{module}:{name}"


def learner_name(learner: Any) -> str:
    """The learner name of an id, a `module:Class` string, or a class object (a learner class
    or a learner config dataclass)."""
    if isinstance(learner, str):
        return learner
    if isinstance(learner, type):
        return class_target(learner)
    raise HarnessError(f"a learner is an id (see `harness list learners`), 'module:Class' or a "
                       f"class, got a {type(learner).__name__}")


def learner_names(learners: Any) -> list[str]:
    """`learner_name` of each."""
    return [learner_name(n) for n in learners]


def _checked(learner: Any, target: str) -> Any:
    if not isinstance(learner, Learner):
        raise HarnessError(f"{target} has no predict() or observe() method; see "
                           "harness.protocol.Learner")
    return learner


def _signature_error(cls: type, target: str, with_config: bool, why: str) -> HarnessError:
    name = cls.__name__
    call = f"{name}(spec, config)" if with_config else f"{name}(spec)"
    form = (" (it declares Config)" if with_config else
            f" (or {name}(spec, config) when it declares a Config dataclass)")
    return HarnessError(f"learner {target!r}: the harness builds it as {call}{form}, with the "
                        f"scenario's harness.protocol.ScenarioSpec, but {why}")


def construct(cls: type, target: str, *args: Any) -> Any:
    """`cls(*args)`; a TypeError of the call itself (the arguments do not fit the
    constructor, e.g. `__init__(self)` without the spec; not an error raised inside it) is bad
    input: one line naming the expected signature, exit code 2, the run not written."""
    try:
        return cls(*args)
    except TypeError as e:
        tb = e.__traceback__
        if tb is not None and tb.tb_next is None:  # raised by the call, not inside __init__
            raise _signature_error(cls, target, len(args) == 2, f"the call failed: {e}"
                                   ) from None
        raise


@dataclasses.dataclass
class UserLearnerConfig:
    """A user's own learner class, named `module:Class`."""

    target: str = ""
    """'module:Class'; the class is called with the scenario's ScenarioSpec."""

    def build(self, ctx: BuildContext) -> Any:
        cls = import_target(self.target)
        torch.manual_seed(ctx.seed)
        return _checked(construct(cls, self.target, ctx.spec), self.target)


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
        return _checked(construct(cls, target, ctx.spec, self), target)

    made = dataclasses.make_dataclass(base.__name__, [], bases=(base,),
                                      namespace={"build": build})
    made.__module__, made.__qualname__ = base.__module__, base.__qualname__
    made.__doc__ = base.__doc__
    return made
