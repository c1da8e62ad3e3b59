"""The networks of OML and ANML (nn.Modules), and their feature trunks as baselines' backbones.

  - `ANMLNet` (Beaulieu et al. 2020): a neuromodulatory conv net gating a prediction conv net.
  - `OMLNet` (Javed & White 2019): a 6-conv representation network (RLN) and a prediction
    network (PLN); `SineNet`: OML's MLP for incremental sine regression.
  - `ANMLBackbone`, `OMLBackbone`: the same trunks for the stream baselines (`backbone=anml`,
    `backbone=oml` in `baselines.networks.modules.BACKBONES`).
The learners that meta-train them are in baselines/anml.py, oml.py and oml_sine.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.networks.pool import MaxPool2d
from harness.errors import HarnessError
from harness.protocol import ScenarioSpec

MIN_UNPADDED = 22
"""Smallest image side the paper's unpadded ANML trunk accepts; smaller images (synthetic test
streams) get padded convolutions instead, and no pooling once the map is 1 pixel wide."""
STRIDES = (2, 1, 2, 1, 2, 2)
"""Strides of OML's six RLN convolutions."""


def kaiming_init(module: nn.Module) -> nn.Module:
    """He-normal weights (fan-in, ReLU gain sqrt 2) and zero biases for every Conv2d and Linear
    in `module`, as the OML/ANML authors' code (mrcl `Learner`) initialises its networks. On an
    unnormalised deep ReLU net this keeps the signal's scale; PyTorch's default (uniform,
    variance 1/(3 fan-in)) shrinks it ~2.4x per layer."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def image_input(spec: ScenarioSpec, name: str) -> tuple[int, int]:
    """(channels, side) of a square image spec, or a HarnessError saying what fits."""
    shape = tuple(spec.input_shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise HarnessError(f"{name} needs square images (C, S, S); this scenario gives {shape}")
    return int(shape[0]), int(shape[1])


# -- ANML ----------------------------------------------------------------------------------------


class PerImageNorm(nn.Module):
    """Instance normalization with a per-channel scale and shift: what
    `nn.InstanceNorm2d(channels, affine=True)` computes, through `F.group_norm` with one group
    per channel. That is one fused kernel forward and one backward, where instance norm runs
    batch norm on a reshaped copy with repeated parameters: 2-3x faster forward and backward on
    the CPU (docs/profile-meta-step.md). It rounds differently (up to about 2e-6 on unit-scale
    maps). The parameters are named and initialized as InstanceNorm2d's (weight 1, bias 0)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def instance_norm(channels: int) -> nn.Module:
    """`nn.InstanceNorm2d` with affine parameters: the stream baselines' trunks (their published
    rows were made with its rounding)."""
    return nn.InstanceNorm2d(channels, affine=True)


def conv_trunk(in_channels: int, channels: int, image_size: int = 28,
               norm: Callable[[int], nn.Module] = instance_norm) -> nn.Sequential:
    """3 x [conv 3x3 no padding, per-image norm (affine), ReLU], max-pool after the first two."""
    pad = 0 if image_size >= MIN_UNPADDED else 1
    layers: list[nn.Module] = []
    side = image_size
    for i in range(3):
        layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=pad),
                   norm(channels), nn.ReLU()]
        side = side - 2 + 2 * pad
        if i < 2 and side >= 2:
            layers.append(MaxPool2d(2))
            side //= 2
    return nn.Sequential(*layers, nn.Flatten())


def trunk_side(image_size: int) -> int:
    """Spatial side after the trunk: (((s - 2) // 2 - 2) // 2) - 2 (3 for 28)."""
    if image_size >= MIN_UNPADDED:
        return ((image_size - 2) // 2 - 2) // 2 - 2
    side = image_size
    for i in range(3):
        if i < 2 and side >= 2:
            side //= 2
    return side


class ANMLNet(nn.Module):
    """The ANML network; `features(x)` are the gated prediction features.

    `gates(x)` is the neuromodulatory net's output alone. It does not depend on the prediction
    net, so an inner loop that adapts only the prediction net may compute the gates of a whole
    trajectory at once and pass them in (`forward(x, gate)`).
    `norm` makes each trunk's per-image normalization: `PerImageNorm` for the ANML learner,
    `instance_norm` for the baselines' `ANMLBackbone`."""

    def __init__(self, in_channels: int = 3, nm_channels: int = 112, pred_channels: int = 256,
                 n_outputs: int = 1000, image_size: int = 28,
                 norm: Callable[[int], nn.Module] = PerImageNorm) -> None:
        super().__init__()
        if image_size < 8:
            raise HarnessError(f"ANML needs images of at least 8 x 8, got {image_size}")
        side = trunk_side(image_size)
        self.feature_dim = pred_channels * side * side
        self.nm = conv_trunk(in_channels, nm_channels, image_size, norm)
        self.gate = nn.Linear(nm_channels * side * side, self.feature_dim)
        self.pred = conv_trunk(in_channels, pred_channels, image_size, norm)
        self.head = nn.Linear(self.feature_dim, n_outputs)

    def gates(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.gate(self.nm(x)))

    def features(self, x: Tensor, gate: Tensor | None = None) -> Tensor:
        return self.pred(x) * (self.gates(x) if gate is None else gate)

    def forward(self, x: Tensor, gate: Tensor | None = None) -> Tensor:
        return self.head(self.features(x, gate))


class ANMLBackbone(nn.Module):
    """The ANML network without its output layer, for the baselines (`backbone=anml`):
    gated prediction features, `out_dim` of them. `width` is the prediction net's channels;
    the neuromodulatory net has 112 at the paper's 256 and half the width otherwise."""

    def __init__(self, spec: ScenarioSpec, width: int) -> None:
        super().__init__()
        channels, side = image_input(spec, "backbone anml")
        net = ANMLNet(channels, 112 if width == 256 else max(1, width // 2), width, 1, side,
                      norm=instance_norm)
        self.nm, self.gate, self.pred = net.nm, net.gate, net.pred
        self.out_dim = net.feature_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.pred(x) * torch.sigmoid(self.gate(self.nm(x)))


# -- OML -----------------------------------------------------------------------------------------


def rln_side(image_size: int, padding: int = 0) -> int:
    side = image_size
    for s in STRIDES:
        side = (side + 2 * padding - 3) // s + 1
    return side


class OMLNet(nn.Module):
    """RLN (6 convs) + PLN (`hidden` > 0: two layers, else linear). `rln` / `pln.*` names."""

    def __init__(self, in_channels: int = 1, channels: int = 256, hidden: int = 1024,
                 n_outputs: int = 1000, image_size: int = 84) -> None:
        super().__init__()
        # The paper's unpadded RLN needs 84 x 84 images (>= 61); smaller ones (synthetic test
        # streams, 28 x 28) use padded convolutions.
        pad = 0 if rln_side(image_size) >= 1 else 1
        side = rln_side(image_size, pad)
        if side < 1:
            raise HarnessError(f"OML needs larger images than {image_size} x {image_size}")
        layers: list[nn.Module] = []
        for i, s in enumerate(STRIDES):
            layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, stride=s,
                                 padding=pad), nn.ReLU()]
        self.rln = nn.Sequential(*layers, nn.Flatten())
        self.rep_dim = channels * side * side
        if hidden > 0:
            self.pln = nn.Sequential(nn.Linear(self.rep_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, n_outputs))
        else:
            self.pln = nn.Sequential(nn.Linear(self.rep_dim, n_outputs))
        self.feature_dim = hidden if hidden > 0 else self.rep_dim

    def features(self, x: Tensor) -> Tensor:
        """Input of the output layer (frozen at meta-test)."""
        return self.pln[:-1](self.rln(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.pln(self.rln(x))


class OMLBackbone(nn.Module):
    """OML's RLN for the baselines (`backbone=oml`): 6 convs of `width` channels, `out_dim`
    features (2304 at width 256 on 84 x 84 images)."""

    def __init__(self, spec: ScenarioSpec, width: int) -> None:
        super().__init__()
        channels, side = image_input(spec, "backbone oml")
        net = kaiming_init(OMLNet(channels, width, 0, 1, side))
        self.rln = net.rln
        self.out_dim = net.rep_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.rln(x)


class SineNet(nn.Module):
    """OML's incremental-sine net: RLN (6 Linear + ReLU) and PLN (3 Linear); the paper's sizes
    by default."""

    def __init__(self, in_dim: int = 11, width: int = 300, rep: int = 900) -> None:
        super().__init__()
        dims = [in_dim, width, width, width, width, width, rep]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.rln = nn.Sequential(*layers)
        self.pln = nn.Sequential(nn.Linear(rep, width), nn.ReLU(), nn.Linear(width, width),
                                 nn.ReLU(), nn.Linear(width, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.pln(self.rln(x))
