"""sparse-MAML (von Oswald et al. 2021, "Learning where to learn"): MAML whose inner-loop
learning rate is gated per weight by a learned mask.

Every adaptable weight w has a mask logit m (initialised to 1, i.e. every weight adapts). The
inner update is w' = w - alpha * mask(m) * dL/dw with
  - `sparse-maml`: mask = 1[m > 0], trained with the straight-through estimator (the backward
    pass treats the step function as the identity), so weights can switch adaptation off;
  - `sparse-relu-maml`: mask = max(m, 0), a continuous, still sparse, learned step size.
The masks are meta-learned by the outer loop with the weights (same Adam, same meta_lr).
Everything else is `maml` (baselines/maml.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from baselines.maml import MAMLConfig


@dataclass
class SparseMAMLConfig(MAMLConfig):
    """sparse-MAML: binary inner-lr masks 1[m > 0], trained with the straight-through
    estimator (its backward pass treats the step function as the identity)."""

    mask: Literal["none", "binary", "relu"] = "binary"
    NAME: ClassVar[str] = "sparse-maml"


@dataclass
class SparseReLUMAMLConfig(MAMLConfig):
    """sparse-ReLU-MAML: inner-lr masks max(m, 0), a continuous, still sparse, learned step
    size."""

    mask: Literal["none", "binary", "relu"] = "relu"
    NAME: ClassVar[str] = "sparse-relu-maml"
