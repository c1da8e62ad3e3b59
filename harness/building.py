"""From names and `--set` pairs to objects: the scenario, the learner config as it runs, and a
learner built from it (docs/design.md D2)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch

from harness.capabilities import HasVariants, ResolvesForScenario
from harness.config import BuildContext, Progress, apply_overrides, default_cache_dir, field_names
from harness.errors import HarnessError
from harness.protocol import Scenario, ScenarioSpec
from harness.registry import get_scenario
from harness.run_config import RunConfig


def split_overrides(overrides: dict[str, str], scen_cls: type, learn_cls: type,
                    ) -> tuple[dict[str, str], dict[str, str]]:
    """Route --set keys to the scenario or the learner config (prefix to disambiguate)."""
    s_fields, l_fields = field_names(scen_cls), field_names(learn_cls)
    scen: dict[str, str] = {}
    learn: dict[str, str] = {}
    for key, value in overrides.items():
        if key.startswith("scenario."):
            scen[key.removeprefix("scenario.")] = value
        elif key.startswith("learner."):
            learn[key.removeprefix("learner.")] = value
        elif key in s_fields and key in l_fields:
            raise HarnessError(f"--set {key} is ambiguous; write scenario.{key} or learner.{key}")
        elif key in s_fields:
            scen[key] = value
        elif key in l_fields:
            learn[key] = value
        else:
            close = difflib.get_close_matches(key, sorted(s_fields | l_fields), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise HarnessError(
                f"--set {key}: neither the scenario nor the learner has this parameter{hint} "
                f"(scenario: {', '.join(sorted(s_fields))}; learner: {', '.join(sorted(l_fields))})"
            )
    return scen, learn


def build_scenario(scenario_id: str, seed: int, data_dir: Path | None,
                   overrides: dict[str, str], cache_dir: Path | None = None) -> Scenario:
    """The scenario `scenario_id` for `seed`, with `--set` values applied and checked."""
    entry = get_scenario(scenario_id)
    cfg = apply_overrides(entry.config_class(), overrides, what=f"scenario {scenario_id}")
    return cfg.build(seed=seed, data_dir=data_dir, cache_dir=cache_dir)


def scenario_variants(scenario_id: str, overrides: dict[str, str]) -> list[dict[str, str]]:
    """The override sets to run: one per named variant of the scenario (its config's
    `VARIANTS`, e.g. the video orderings) unless the user fixed a variant parameter."""
    cfg = get_scenario(scenario_id).config_class()()
    variants: dict[str, dict] = cfg.VARIANTS if isinstance(cfg, HasVariants) else {}
    keys = {k for v in variants.values() for k in v}
    if not variants or keys & {k.removeprefix("scenario.") for k in overrides}:
        return [overrides]
    return [{**overrides, **{k: str(v) for k, v in var.items()}} for var in variants.values()]


def resolved_config(cfg: Any, spec: ScenarioSpec) -> Any:
    """The config as it runs on a scenario with this spec: a config whose None fields resolve
    from recipe tables per scenario kind (the MAML family, Reptile, ProtoNets) has them filled;
    any other is returned as it is."""
    return cfg.resolved(spec) if isinstance(cfg, ResolvesForScenario) else cfg


def build_learner(cfg: Any, spec: ScenarioSpec, run: RunConfig, progress: Progress | None,
                  state: dict[str, torch.Tensor] | None = None,
                  resume_path: Path | None = None) -> Any:
    """`cfg.build(ctx)` for this run, then the (meta-)trained `state` loaded, if any."""
    ctx = BuildContext(spec=spec, seed=run.seed, device=run.device,
                       cache_dir=run.cache_dir or default_cache_dir(), progress=progress,
                       resume_path=resume_path)
    learner = cfg.build(ctx)
    if state is not None:
        learner.load_state_dict(state)
    return learner
