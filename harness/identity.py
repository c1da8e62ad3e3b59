"""A run's identity: its config hash and run id, and whether a recorded run still uses the
current recipe (docs/design.md D6).

The run id is `<learner>-<config hash>-<preset>-s<seed>-<stream hash>`: two runs share it only
when they ran the same resolved learner config, scenario parameters and lr search on the same
stream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.building import build_scenario, resolved_config, split_overrides
from harness.config import config_hash, field_names, stable_hash
from harness.errors import HarnessError
from harness.protocol import Scenario
from harness.registry import get_learner, get_scenario, make_config
from harness.results import safe_id


def run_config_hash(resolved: Any, scenario_params: dict[str, Any], tune_lr: bool,
                    lr_grid: tuple[float, ...]) -> str:
    """The configuration part of a run id: the resolved learner config, the scenario parameters
    (not the seed) and the lr search. One definition for `execute` and `recipe_drift`."""
    params = {k: v for k, v in scenario_params.items() if k != "seed"}
    return stable_hash([config_hash(resolved), params, tune_lr, lr_grid], 12)


def run_id(learner: str, chash: str, preset: str, seed: int, stream_hash: str) -> str:
    return safe_id(f"{learner}-{chash[:8]}-{preset}-s{seed}-"
                   f"{stream_hash.rsplit('-', 1)[-1][:8]}")


def meta_seed(cfg: Any, seed: int) -> str:
    """The meta_seed the run's (meta-)training used, where the learner has one."""
    if "meta_seed" not in field_names(type(cfg)):
        return ""
    ms = int(cfg.meta_seed)
    return str(seed if ms < 0 else ms)


_RUN_KEYS = {"scenario", "learner", "preset", "overrides", "tune_lr", "lr_grid"}


def _current_hash(meta: dict[str, Any], built: dict[str, Scenario]) -> str:
    """The config hash the current code gives the run recorded in `meta`."""
    run = meta["run"]
    params = {k: v for k, v in meta["scenario_params"].items() if k != "seed"}
    s_entry, l_entry = get_scenario(run["scenario"]), get_learner(run["learner"])
    _, l_over = split_overrides(run["overrides"], s_entry.config_class(),
                                l_entry.config_class())
    key = stable_hash([run["scenario"], params])
    if key not in built:
        fields_ = field_names(s_entry.config_class())
        built[key] = build_scenario(run["scenario"], int(meta["seed"]), None,
                                    {k: v for k, v in params.items() if k in fields_})
    cfg = make_config(l_entry, run["preset"], l_over)
    resolved = resolved_config(cfg, built[key].spec)
    return run_config_hash(resolved, params, run["tune_lr"], tuple(run["lr_grid"]))


def recipe_drift(json_paths: list[Path]) -> list[tuple[str, str, str]]:
    """Runs made with another recipe than the code's current one for their learner, preset,
    overrides and scenario parameters: (run_id, recorded config_hash, current config_hash).

    The current hash is computed as `execute` computes it (the scenario is built for its spec;
    builds are shared by runs with the same parameters)."""
    built: dict[str, Scenario] = {}
    out = []
    for path in json_paths:
        meta = json.loads(Path(path).read_text())
        run = meta.get("run") if isinstance(meta, dict) else None
        if not isinstance(run, dict) or not _RUN_KEYS <= set(run):
            continue  # not written by `execute` (e.g. a hand-made table): nothing to compare
        name = meta.get("run_id", Path(path).stem)
        try:
            now = _current_hash(meta, built)
        except (HarnessError, ValueError, TypeError, KeyError) as e:  # e.g. a learner this
            # install does not have, or parameters it no longer accepts
            out.append((name, meta["config_hash"], f"unknown ({e})"))
            continue
        if now != meta["config_hash"]:
            out.append((name, meta["config_hash"], now))
    return out
