"""What one run is: its configuration (`RunConfig`) and its outcome (`RunResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.errors import HarnessError

LR_GRID: tuple[float, ...] = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
"""One wide log grid for every learner alike (pre-trained features want ~1e-5, meta-learned
ones ~3e-4)."""


@dataclass
class RunConfig:
    """One run: which scenario and learner, and how."""

    scenario: str
    """Scenario id (see `harness list scenarios`)."""
    learner: str
    """Learner id, `module:Class` for your own, or `avalanche:<Strategy>`."""
    seed: int = 0
    """Seed of the stream (class choice and order) and of the learner's initialization."""
    preset: str = "quick"
    """Learner preset: quick (CPU, minutes), paper (published recipe), or one the learner adds."""
    device: str = "cpu"
    """torch device for the learner and evaluation."""
    out_dir: Path = Path("results")
    """Results root: runs go to out_dir/<scenario>/<run_id>.{csv,json,npz}."""
    cache_dir: Path | None = None
    """Checkpoint cache (default: $HARNESS_CACHE_DIR or ~/.cache/harness)."""
    data_dir: Path | None = None
    """User-supplied data for scenarios that need it."""
    eval_every: int = 0
    """Also evaluate every N samples (0 = only at experience ends)."""
    overrides: dict[str, str] = field(default_factory=dict)
    """--set KEY=VALUE pairs; 'scenario.KEY' / 'learner.KEY' to disambiguate."""
    tune_lr: bool = True
    """Choose `lr` on the validation streams (unless set explicitly)."""
    lr_grid: tuple[float, ...] = LR_GRID
    """Candidate learning rates, shared by every learner."""
    timeout_s: float = 0.0
    """Wall-clock limit of the run in seconds (0 = none); a run past it is a `timed_out` row."""

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise HarnessError(f"--seed must be >= 0, got {self.seed}")
        if self.eval_every < 0:
            raise HarnessError(f"eval_every must be >= 0, got {self.eval_every}")
        if not (self.device == "cpu" or self.device.startswith("cuda") or self.device == "mps"):
            raise HarnessError(f"--device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise HarnessError("--device cuda asked for, but torch sees no GPU; use --device cpu")
        if any(not (lr > 0 and math.isfinite(lr)) for lr in self.lr_grid) or not self.lr_grid:
            raise HarnessError("lr grid must be non-empty positive finite numbers")
        if not (math.isfinite(self.timeout_s) and self.timeout_s >= 0):
            raise HarnessError(f"--timeout must be a finite number of seconds >= 0, got "
                               f"{self.timeout_s}")


@dataclass
class RunResult:
    run_id: str
    learner: str
    scenario: str
    seed: int
    status: str
    """'ok', 'partial', 'failed', 'diverged' or 'timed_out' (`harness.results.STATUSES`)."""
    metrics: dict[str, float]
    extra: dict[str, Any]
    csv_path: Path | None = None
    error: str = ""
    note: str = ""
    """Set when this run replaced one of the same id made with other provenance."""
