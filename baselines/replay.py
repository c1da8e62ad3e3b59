"""Experience replay with a reservoir buffer (ER; Chaudhry et al. 2019, as in Mammoth).

Each incoming batch is trained on together with `replay_batch` samples drawn from the buffer,
then added to it. The buffer keeps a uniform sample of the stream seen so far (Vitter's
algorithm R). OML (Javed & White 2019, Table 2) uses a buffer of 200.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from baselines.finetune import FinetuneConfig, FinetuneLearner
from baselines.seeding import sub_seed
from harness.config import BuildContext, check_range, eval_field


class ReservoirBuffer:
    """At most `size` samples, each of the `n_seen` samples added kept with prob. size/n_seen.

    Storage is allocated on the first `add`, on the device and with the dtype of the inputs.
    The keep/replace decisions come from a CPU generator seeded with `seed`.
    """

    def __init__(self, size: int, seed: int) -> None:
        if size < 1:
            raise ValueError(f"buffer size must be >= 1, got {size}")
        self.size = size
        self.n_seen = 0
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self._gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return min(self.n_seen, self.size)

    def add(self, x: Tensor, y: Tensor) -> None:
        """Offer every sample of the batch to the reservoir (algorithm R)."""
        if self.x is None or self.y is None:
            self.x = torch.empty((self.size, *x.shape[1:]), dtype=x.dtype, device=x.device)
            self.y = torch.empty((self.size, *y.shape[1:]), dtype=y.dtype, device=y.device)
        for i in range(len(x)):
            if self.n_seen < self.size:
                j = self.n_seen
            else:  # uniform in [0, n_seen]: the new sample replaces slot j if j < size
                j = int(torch.randint(self.n_seen + 1, (1,), generator=self._gen))
            if j < self.size:
                self.x[j] = x[i].detach()
                self.y[j] = y[i].detach()
            self.n_seen += 1

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """`min(n, len(self))` distinct stored samples, uniformly (`generator` on the CPU)."""
        if self.x is None or self.y is None:
            raise ValueError("sample() from an empty buffer; add() first")
        idx = torch.randperm(len(self), generator=generator)[:n].to(self.x.device)
        return self.x[idx], self.y[idx]


@dataclass
class ReplayConfig(FinetuneConfig):
    """Fine-tuning on each batch plus `replay_batch` samples from a reservoir buffer."""

    buffer_size: int = eval_field(200, "samples the reservoir buffer holds")
    """Samples the reservoir buffer holds (200 as in OML Table 2); >= 1."""
    replay_batch: int = eval_field(10, "buffer samples replayed with each incoming batch")
    """Buffer samples trained on together with each incoming batch; >= 0."""

    PRESETS: ClassVar[dict[str, dict]] = {"quick": {}, "conv4": {"backbone": "conv4"}}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "buffer_size", ge=1)
        check_range(self, "replay_batch", ge=0)

    def build(self, ctx: BuildContext) -> ReplayLearner:
        return ReplayLearner(self, ctx)


class ReplayLearner(FinetuneLearner):
    """FinetuneLearner whose every step also trains on a fresh sample of the buffer."""

    cfg: ReplayConfig

    def _reset_stream(self) -> None:
        super()._reset_stream()
        self.buffer = ReservoirBuffer(self.cfg.buffer_size, sub_seed(self.seed, "reservoir"))
        self._sample_gen = torch.Generator().manual_seed(sub_seed(self.seed, "replay"))

    def observe(self, x: Tensor, y: Tensor) -> None:
        for _ in range(self.cfg.steps_per_batch):
            if len(self.buffer) and self.cfg.replay_batch:
                bx, by = self.buffer.sample(self.cfg.replay_batch, self._sample_gen)
                self._step(torch.cat([x, bx]), torch.cat([y, by]))
            else:
                self._step(x, y)
        self.buffer.add(x, y)
