"""Grid files: scenarios x learners x seeds x presets x `--set` values, as TOML.

    out = "published"                    # optional: the results root (--out overrides it)

    [[grid]]                             # every list expands to a product
    scenario = "omniglot-stream"
    learner = ["anml", "finetune"]
    seed = "0-4"                         # a range, a list [0, 1] or one number
    preset = "quick"
    set = { n_classes = [10, 50, 100] }  # one value or a list per key

    [[cell]]                             # single cells (lists expand here too)
    scenario = "omniglot-stream"
    learner = "anml"
    preset = "long"
    seed = [0, 1, 2]
    set = { n_classes = 100 }

A `[grid]` table may stand for one `[[grid]]`. Optional keys of a grid or a cell: `device`,
`eval_every`, `tune_lr`, `timeout` (seconds). A `--set` key goes to the scenario when it has
it, else to the learners that have it (a key nobody has is an error), as in `harness compare`.
A scenario with named variants (e.g. the video orderings) runs every variant unless the grid
sets the variant's parameter.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

_KEYS = {"scenario", "learner", "seed", "preset", "set", "device", "eval_every", "tune_lr",
         "timeout"}


@dataclass(frozen=True)
class Cell:
    """One run of a grid: a pure function of these fields (and the code)."""

    scenario: str
    learner: str
    seed: int
    preset: str = "quick"
    overrides: tuple[tuple[str, str], ...] = ()
    """--set pairs, sorted by key."""
    device: str = "cpu"
    eval_every: int = 0
    tune_lr: bool = True
    timeout_s: float = 0.0


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _seeds(value: Any, where: str) -> list[int]:
    from harness.cli_inputs import parse_seeds  # noqa: PLC0415  (one definition of seeds)

    if isinstance(value, str):
        return parse_seeds(value)
    seeds = _list(value)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise HarnessError(f"{where}: seed must be a number, a list of numbers or a range like "
                           f"'0-4', got {value!r}")
    return parse_seeds(",".join(str(s) for s in seeds))


def _text(value: Any) -> str:
    """A --set value as the command line would give it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        raise HarnessError(f"--set value {value!r} is not a finite number")
    return str(value)


def _expand(block: dict[str, Any], where: str) -> list[Cell]:
    unknown = set(block) - _KEYS
    if unknown:
        raise HarnessError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a grid has "
                           f"{', '.join(sorted(_KEYS))}")
    for key in ("scenario", "learner", "seed"):
        if key not in block:
            raise HarnessError(f"{where}: no {key}; every grid and cell names its {key}")
    sets = block.get("set", {})
    if not isinstance(sets, dict):
        raise HarnessError(f"{where}: set must be a table, e.g. set = {{ n_classes = [10, 50] }}")
    keys = sorted(sets)
    combos = list(itertools.product(*[[_text(v) for v in _list(sets[k])] for k in keys]))
    cells = []
    for scenario, learner, seed, preset, combo in itertools.product(
            _list(block["scenario"]), _list(block["learner"]), _seeds(block["seed"], where),
            _list(block.get("preset", "quick")), combos):
        cells.append(Cell(scenario=str(scenario), learner=str(learner), seed=seed,
                          preset=str(preset), overrides=tuple(zip(keys, combo, strict=True)),
                          device=str(block.get("device", "cpu")),
                          eval_every=int(block.get("eval_every", 0)),
                          tune_lr=bool(block.get("tune_lr", True)),
                          timeout_s=float(block.get("timeout", 0.0))))
    return cells


def _variants(cell: Cell) -> list[Cell]:
    """The cell once per named variant of its scenario, unless it fixes a variant parameter."""
    from harness.building import scenario_variants  # noqa: PLC0415

    sets = [dict(cell.overrides)]
    return [replace(cell, overrides=tuple(sorted(v.items())))
            for v in scenario_variants(cell.scenario, sets[0])]


def load_grid(path: Path) -> tuple[list[Cell], dict[str, Any]]:
    """The cells of a grid file, each once, in file order; and its top-level options."""
    try:
        doc = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise HarnessError(f"grid file {path} not found; pass a .toml grid file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise HarnessError(f"grid file {path}: {e}; see `harness sweep --help`") from None
    grids = doc.get("grid", [])
    grids = [grids] if isinstance(grids, dict) else grids
    singles = doc.get("cell", [])
    if not isinstance(grids, list) or not isinstance(singles, list):
        raise HarnessError(f"grid file {path}: write [[grid]] and [[cell]] tables")
    other = set(doc) - {"grid", "cell", "out", "description"}
    if other:
        raise HarnessError(f"grid file {path}: unknown top-level key(s) "
                           f"{', '.join(sorted(other))}; use [[grid]], [[cell]], out, "
                           "description")
    cells: list[Cell] = []
    for k, block in enumerate(grids):
        cells += _expand(block, f"{path} [[grid]] {k + 1}")
    for k, block in enumerate(singles):
        cells += _expand(block, f"{path} [[cell]] {k + 1}")
    if not cells:
        raise HarnessError(f"grid file {path} has no cells; add a [[grid]] or [[cell]] table")
    unique = list(dict.fromkeys(c for cell in cells for c in _variants(cell)))
    return unique, {k: doc[k] for k in ("out", "description") if k in doc}
