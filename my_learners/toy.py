"""Small learners for the core tests (also a worked example of `harness check module:Class`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from harness.protocol import ScenarioSpec


class Linear(nn.Module):
    """A linear model on flattened inputs, trained by online SGD: the smallest real learner."""

    def __init__(self, spec: ScenarioSpec, lr: float = 0.05) -> None:
        super().__init__()
        d = 1
        for s in spec.input_shape:
            d *= s
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, spec.n_outputs))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr)
        self.task = spec.task

    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)

    def observe(self, x: Tensor, y: Tensor) -> None:
        out = self.net(x)
        loss = (nn.functional.cross_entropy(out, y) if self.task == "classification"
                else nn.functional.mse_loss(out, y))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()


class Spy(Linear):
    """Records every call, to test what the runner lets a learner see and in which order."""

    def __init__(self, spec: ScenarioSpec) -> None:
        super().__init__(spec)
        self.calls: list[tuple[str, int, bool]] = []

    def predict(self, x: Tensor) -> Tensor:
        self.calls.append(("predict", len(x), self.training))
        return super().predict(x)

    def observe(self, x: Tensor, y: Tensor) -> None:
        self.calls.append(("observe", len(x), self.training))
        super().observe(x, y)


class WrongShape(Linear):
    """Returns one logit too many: the runner must refuse it with a clear message."""

    def predict(self, x: Tensor) -> Tensor:
        out = super().predict(x)
        return torch.cat([out, out[:, :1]], dim=1)


class Diverging(Linear):
    """Blows up after a few observations (an lr far too large)."""

    def __init__(self, spec: ScenarioSpec) -> None:
        super().__init__(spec, lr=1e6)
        self.seen = 0

    def observe(self, x: Tensor, y: Tensor) -> None:
        self.seen += len(x)
        if self.seen > 5:
            with torch.no_grad():
                for p in self.parameters():
                    p.fill_(float("nan"))
            return
        super().observe(x, y)


class Crashing(Linear):
    """Raises inside observe, like a bug in a user's learner."""

    def observe(self, x: Tensor, y: Tensor) -> None:
        raise RuntimeError("boom")


@dataclass
class LinearConfig:
    """The hyper-parameters of `Configured`: `--set` reaches them, the lr search tunes `lr`."""

    lr: float = 0.05
    """SGD learning rate (chosen on the validation streams unless set)."""
    momentum: float = 0.0
    """SGD momentum, in [0, 1)."""

    def __post_init__(self) -> None:
        if not (self.lr > 0 and 0 <= self.momentum < 1):
            raise ValueError(f"lr must be > 0 and momentum in [0, 1), got {self.lr}, "
                             f"{self.momentum}")


class Configured(Linear):
    """`Linear` with a config dataclass: built as `Configured(spec, config)`."""

    Config = LinearConfig

    def __init__(self, spec: ScenarioSpec, config: LinearConfig) -> None:
        super().__init__(spec, lr=config.lr)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=config.lr,
                                   momentum=config.momentum)


class Misspelled(Linear):
    """Declares `describ` where the capability is `describe`: `harness check` names it."""

    def describ(self) -> dict[str, str]:
        return {"note": "never read"}
