"""Typed dataclass configs: applying overrides, validating, hashing, and the learner build
context."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.protocol import ScenarioSpec

Progress = Callable[[str, int, int, dict[str, float]], None]
"""progress(phase, done, total, info): called by long phases; the CLI renders it."""


def eval_field(default: Any, doc: str = "") -> Any:
    """A config field used only at evaluation time (excluded from checkpoint keys)."""
    return dataclasses.field(default=default, metadata={"eval": True, "doc": doc})


def eval_params(cfg: Any) -> tuple[str, ...]:
    """Names of the fields of `cfg` declared with `eval_field`."""
    return tuple(f.name for f in dataclasses.fields(cfg) if f.metadata.get("eval"))


INT_MIN, INT_MAX = -(2**31), 2**31 - 1
"""The range of an integer parameter given with --set (a C int: torch, numpy and CUDA take it)."""
SEED_MAX = 2**31 - 1
"""The largest seed (seeds go to numpy, torch and CUDA generators alike)."""
MAX_SEEDS = 10_000
"""The most seeds one command runs (a typo like 0-100000000000 must not start a year of runs)."""


def _to_int(value: Any) -> int:
    """An int from '12', '1e3', '2.0' or a whole float; ValueError for anything else (1.5,
    1e-5, inf, nan) instead of a silent truncation."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(value)
    if isinstance(value, int):
        n = value
    else:
        try:
            n = int(value)
        except ValueError:
            f = float(value)
            if not (math.isfinite(f) and f.is_integer()):
                raise
            n = int(f)
    if not INT_MIN <= n <= INT_MAX:
        raise ValueError(value)
    return n


def _coerce(value: Any, tp: Any, name: str, what: str) -> Any:
    """Convert a --set string (or a TOML value) to the field's declared type; the message of a
    bad value says what to write instead."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            if type(None) in args:
                return None
        options = [a for a in args if a is not type(None)]
        for a in options:
            try:
                return _coerce(value, a, name, what)
            except HarnessError:
                if len(options) == 1:
                    raise  # `float | None`: the float's message says what to write
        raise HarnessError(f"{what}: bad value {value!r} for {name} (expected {tp})")
    if origin in (tuple, list):
        items = value.split(",") if isinstance(value, str) else list(value)
        inner = args[0] if args else str
        out = [_coerce(v.strip() if isinstance(v, str) else v, inner, name, what) for v in items]
        return tuple(out) if origin is tuple else out
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise HarnessError(
                f"{what}: bad value {value!r} for {name}; choose one of {', '.join(map(str, args))}"
            )
        return value
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            return _to_int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            f = float(value)
            if not math.isfinite(f):
                raise ValueError(value)
            return f
        if tp is str:
            return str(value)
        if tp is Path:
            return Path(value)
    except (TypeError, ValueError, OverflowError):
        write = {bool: "true or false", int: f"a whole number from {INT_MIN} to {INT_MAX}, e.g. "
                 f"{name}=10", float: f"a finite number, e.g. {name}=0.01 or {name}=1e-3"}
        expected = write.get(tp, getattr(tp, "__name__", str(tp)))
        raise HarnessError(f"{what}: bad value {value!r} for {name}; write {expected}") from None
    return value


def check_seed(seed: int) -> int:
    """`seed`, unless it lies outside [0, SEED_MAX] (HarnessError)."""
    if not 0 <= seed <= SEED_MAX:
        raise HarnessError(f"--seed must be an integer from 0 to {SEED_MAX}, got {seed}")
    return seed


def apply_overrides(cls: type, values: dict[str, Any], what: str) -> Any:
    """Build `cls(**values)`, converting types and naming unknown keys with close matches."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise HarnessError(
                f"{what} has no parameter {key!r}{hint} (parameters: {', '.join(sorted(fields))})"
            )
        kwargs[key] = _coerce(value, hints[key], key, what)
    try:
        cfg = cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise HarnessError(f"{what}: {e}") from None
    return cfg


def _value(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


def check_range(obj: Any, *names: str, ge: float | None = None, gt: float | None = None,
                le: float | None = None, lt: float | None = None) -> None:
    """Raise ValueError unless every named value of `obj` lies within the bounds.

    `obj` is a config (values by attribute) or a mapping (values by key). Bounds: `ge` (>=)
    or `gt` (>) below, `le` (<=) or `lt` (<) above. A value of None (an optional field left
    unset) is not checked; NaN never passes. The message names the field, the allowed range
    and the value given: "width must be >= 1, got 0", "ewc_decay must be in (0, 1], got 2.0".
    """
    lo = ge if ge is not None else gt
    hi = le if le is not None else lt
    if lo is not None and hi is not None:
        allowed = f"in {'[' if ge is not None else '('}{lo}, {hi}{']' if le is not None else ')'}"
    elif lo is not None:
        allowed = f"{'>=' if ge is not None else '>'} {lo}"
    elif hi is not None:
        allowed = f"{'<=' if le is not None else '<'} {hi}"
    else:
        raise TypeError("check_range needs a bound (ge, gt, le or lt)")
    for name in names:
        v = _value(obj, name)
        if v is None:
            continue
        if not ((ge is None or v >= ge) and (gt is None or v > gt)
                and (le is None or v <= le) and (lt is None or v < lt)):
            raise ValueError(f"{name} must be {allowed}, got {v!r}")


def check_choice(obj: Any, name: str, choices: Iterable[Any]) -> None:
    """Raise ValueError unless the value `name` of `obj` (a config or a mapping) is one of
    `choices`, listing them: "order must be 'first' or 'second', got 'third'"."""
    options = list(choices)
    v = _value(obj, name)
    if v not in options:
        listed = [repr(c) for c in options]
        allowed = listed[-1] if len(listed) == 1 else f"{', '.join(listed[:-1])} or {listed[-1]}"
        raise ValueError(f"{name} must be {allowed}, got {v!r}")


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a config (Paths and tuples made plain)."""
    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.init}


def stable_hash(obj: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def config_hash(cfg: Any) -> str:
    """Hash of every field of a config."""
    return stable_hash({"cls": type(cfg).__name__, **to_dict(cfg)})


NOT_TRAINING = ("checkpoint_every_s", "time_limit_s")
"""Bookkeeping fields that do not change the trained weights (kept out of checkpoint keys): how
often progress is saved, and where a run stops (a time-limited run leaves a partial checkpoint
that the next run of the config resumes; its weights at step n are those of an uninterrupted
run at step n). The head-only learners' `max_meta_seconds` is still part of their key: a
run stopped by it resumes with the same limit only."""


def train_config_hash(cfg: Any) -> str:
    """Hash of the fields that shape (meta-/pre-)training: eval-only fields and bookkeeping
    (`NOT_TRAINING`: how often progress is checkpointed) left out."""
    skip = {*eval_params(cfg), *NOT_TRAINING}
    d = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
         if f.init and f.name not in skip}
    return stable_hash({"cls": type(cfg).__name__, **{k: str(v) for k, v in d.items()}})


def default_cache_dir() -> Path:
    """$HARNESS_CACHE_DIR, else $XDG_CACHE_HOME/harness, else ~/.cache/harness."""
    if os.environ.get("HARNESS_CACHE_DIR"):
        return Path(os.environ["HARNESS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "harness"


@dataclass
class BuildContext:
    """What a learner's build() gets: the scenario's spec and the run's resources."""

    spec: ScenarioSpec
    seed: int = 0
    device: str = "cpu"
    cache_dir: Path = dataclasses.field(default_factory=default_cache_dir)
    progress: Progress | None = None
    resume_path: Path | None = None
    """Where a resumable meta-training may keep its partial checkpoint (set by the runner)."""
