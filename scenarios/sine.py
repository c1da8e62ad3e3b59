"""`sine-incremental`: OML's incremental sine regression (Javed & White 2019, NeurIPS).

A stream of `n_functions` sine functions `y = A sin(z + phase)` with A ~ U[0.1, 5],
phase ~ U[0, pi] and inputs z ~ U[-5, 5]. Function k (its slot) is experience k; the input
vector is `[z, one_hot(k, n_functions)]` (11 dims for 10 functions) and the target has shape
[B, 1]. Each experience is `samples_per_function` points in batches of `batch_size` (40 batches
of 8 by default) plus `test_points` fresh test points. Scores are MSE per function.

The scored functions are drawn from the run seed, the validation functions from a seed derived
from it; `meta_train` is a `SineTaskSampler` that draws fresh functions for every task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from harness.protocol import Experience, ScenarioSpec
from scenarios.base import BuiltScenario, ScenarioConfig, bounded, derive_seed, generator

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
Z_RANGE = (-5.0, 5.0)
MAX_POINTS = 100_000
"""The most training points, batch size or test points per function a config accepts."""


def _uniform(shape: tuple[int, ...], lo: float, hi: float, g: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=g) * (hi - lo) + lo


def draw_functions(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """(amplitude, phase), each float32 [n], drawn from the OML ranges."""
    amplitude = _uniform((n,), *AMPLITUDE_RANGE, g)
    phase = _uniform((n,), *PHASE_RANGE, g)
    return amplitude, phase


def sine_inputs(z: Tensor, slot: int, n_functions: int) -> Tensor:
    """[len(z), 1 + n_functions]: z followed by the one-hot code of the function's slot."""
    x = torch.zeros(len(z), 1 + n_functions)
    x[:, 0] = z
    x[:, 1 + slot] = 1.0
    return x


def sine_experiences(
    amplitude: Tensor,
    phase: Tensor,
    samples_per_function: int,
    batch_size: int,
    test_points: int,
    g: torch.Generator,
    prefix: str = "",
) -> list[Experience]:
    """One experience per function, in slot order, with inputs drawn from `g`."""
    n = len(amplitude)
    z = _uniform((n, samples_per_function), *Z_RANGE, g)
    z_test = _uniform((n, test_points), *Z_RANGE, g)
    y = amplitude[:, None] * torch.sin(z + phase[:, None])
    y_test = amplitude[:, None] * torch.sin(z_test + phase[:, None])
    return [
        Experience(
            x=sine_inputs(z[k], k, n),
            y=y[k].unsqueeze(1),
            x_test=sine_inputs(z_test[k], k, n),
            y_test=y_test[k].unsqueeze(1),
            batch_size=batch_size,
            task_id=k,
            name=f"{prefix}function {k}",
        )
        for k in range(n)
    ]


@dataclass(frozen=True)
class SineTaskSampler:
    """Meta-training tasks: each `sample(g)` is a fresh sequence of new random functions."""

    n_functions: int = 10
    samples_per_function: int = 320
    batch_size: int = 8
    test_points: int = 100

    def sample(self, generator: torch.Generator) -> list[Experience]:
        """`n_functions` experiences built like the scored stream, from new functions."""
        amplitude, phase = draw_functions(self.n_functions, generator)
        return sine_experiences(amplitude, phase, self.samples_per_function, self.batch_size,
                                self.test_points, generator)


@dataclass(frozen=True, eq=False)
class SineIncremental(BuiltScenario):
    """A built `sine-incremental`: also publishes the functions (slot k = experience k)."""

    amplitude: tuple[float, ...] = ()
    """Amplitude of each scored function, in slot order."""
    phase: tuple[float, ...] = ()
    """Phase of each scored function, in slot order."""
    val_amplitude: tuple[float, ...] = ()
    """Amplitude of each validation function."""
    val_phase: tuple[float, ...] = ()
    """Phase of each validation function."""


@dataclass(frozen=True)
class SineIncrementalConfig(ScenarioConfig):
    """OML incremental sine regression: functions in sequence, MSE per function."""

    n_functions: int = bounded(10, ge=1, le=100)
    """Number of functions in the stream, one experience each (1..100)."""
    samples_per_function: int = bounded(320, ge=1, le=MAX_POINTS)
    """Training points per function (1..100000); 320 = 40 batches of 8 as in OML."""
    batch_size: int = bounded(8, ge=1, le=MAX_POINTS)
    """Batch size of the training stream (1..100000)."""
    test_points: int = bounded(100, ge=1, le=MAX_POINTS)
    """Fresh test points per function (1..100000)."""

    ID = "sine-incremental"
    VERSION = 1

    def build(self, seed: int, data_dir: Path | None = None,
              cache_dir: Path | None = None) -> SineIncremental:
        """The stream for `seed` (`data_dir` is unused: the data is generated)."""
        sizes = (self.samples_per_function, self.batch_size, self.test_points)
        g = generator(seed)
        amplitude, phase = draw_functions(self.n_functions, g)
        experiences = sine_experiences(amplitude, phase, *sizes, g)
        g_val = generator(derive_seed(seed, "val"))
        val_amplitude, val_phase = draw_functions(self.n_functions, g_val)
        val_experiences = sine_experiences(val_amplitude, val_phase, *sizes, g_val, "val ")
        return self.built(
            SineIncremental, seed,
            spec=ScenarioSpec(input_shape=(1 + self.n_functions,), n_outputs=1,
                              task="regression"),
            experiences=experiences,
            val_experiences=val_experiences,
            meta_train=SineTaskSampler(self.n_functions, *sizes),
            amplitude=tuple(amplitude.tolist()),
            phase=tuple(phase.tolist()),
            val_amplitude=tuple(val_amplitude.tolist()),
            val_phase=tuple(val_phase.tolist()),
        )
