"""Feature extractors of the stream baselines: nn.Modules mapping inputs to flat features.

Every backbone has an `out_dim` attribute (the feature size) and is made by a factory
`factory(spec, width) -> nn.Module` registered in the plain dict `BACKBONES`, which also holds
the trunks of the OML and ANML networks (`baselines.networks.oml_anml`); `make_backbone` looks
a name up and names close matches when it is unknown. (The functional nets of the MAML family
are in `baselines.networks.functional`.)
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch.nn.functional as F
from torch import Tensor, nn

from baselines.networks.oml_anml import ANMLBackbone, OMLBackbone
from baselines.networks.pool import MaxPool2d
from harness.errors import HarnessError
from harness.protocol import ScenarioSpec

BackboneFactory = Callable[[ScenarioSpec, int], nn.Module]


class StreamBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that keeps running statistics (track_running_stats=True).

    In an online stream the training batches are tiny (often one image), so eval mode must
    not depend on the batch: it normalizes with the running statistics gathered in training.
    Training normalizes with the batch's statistics over (batch, height, width); when that is
    a single value per channel (batch 1 on a 1x1 map) batch statistics are undefined and the
    running statistics are used instead, without updating them.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        return super().forward(x)


def _image_shape(spec: ScenarioSpec, name: str) -> tuple[int, int, int]:
    if len(spec.input_shape) != 3:
        raise HarnessError(
            f"backbone {name!r} needs image inputs (C, H, W); this scenario's inputs have shape "
            f"{tuple(spec.input_shape)}: use backbone=mlp (or auto)"
        )
    c, h, w = spec.input_shape
    return int(c), int(h), int(w)


class Conv4(nn.Module):
    """The standard few-shot backbone: 4 x [conv3x3 (width ch), BatchNorm2d, ReLU, maxpool 2].

    BatchNorm is `StreamBatchNorm2d` (running statistics, so eval mode works after a batch-1
    stream). A max-pool is skipped once the map is 1 pixel wide, so tiny inputs work too.
    """

    def __init__(self, spec: ScenarioSpec, width: int) -> None:
        super().__init__()
        c, h, w = _image_shape(spec, "conv4")
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(c if i == 0 else width, width, 3, padding=1),
                       StreamBatchNorm2d(width), nn.ReLU()]
            if min(h, w) >= 2:
                layers.append(MaxPool2d(2))
                h, w = h // 2, w // 2
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_dim = width * h * w

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvNetSmall(nn.Module):
    """A fast net for tiny images: 2 x [conv3x3 (width ch), ReLU, maxpool 2], then an average
    pool to at most 4 x 4. No normalization layers, so batch-1 training needs no care."""

    def __init__(self, spec: ScenarioSpec, width: int) -> None:
        super().__init__()
        c, h, w = _image_shape(spec, "convnet-small")
        layers: list[nn.Module] = []
        for i in range(2):
            layers += [nn.Conv2d(c if i == 0 else width, width, 3, padding=1), nn.ReLU()]
            if min(h, w) >= 2:
                layers.append(MaxPool2d(2))
                h, w = h // 2, w // 2
        h, w = min(h, 4), min(w, 4)
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d((h, w)), nn.Flatten())
        self.out_dim = width * h * w

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLP(nn.Module):
    """Two hidden layers of `width` with ReLU over the flattened input (e.g. the sine input)."""

    def __init__(self, spec: ScenarioSpec, width: int) -> None:
        super().__init__()
        d = math.prod(spec.input_shape)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, width), nn.ReLU(),
                                 nn.Linear(width, width), nn.ReLU())
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Identity(nn.Module):
    """The flattened input itself (for precomputed features and hand-checkable tests)."""

    def __init__(self, spec: ScenarioSpec, width: int) -> None:
        super().__init__()
        self.out_dim = math.prod(spec.input_shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


BACKBONES: dict[str, BackboneFactory] = {
    "conv4": Conv4,
    "convnet-small": ConvNetSmall,
    "mlp": MLP,
    "identity": Identity,
    # The meta-learners' networks (baselines/anml.py, oml.py).
    "anml": ANMLBackbone,
    "oml": OMLBackbone,
}


def make_backbone(name: str, spec: ScenarioSpec, width: int) -> nn.Module:
    """The backbone `name` for inputs of `spec`; unknown names raise with close matches."""
    if name not in BACKBONES:
        close = difflib.get_close_matches(name, list(BACKBONES), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise HarnessError(
            f"unknown backbone {name!r}{hint} (backbones: {', '.join(sorted(BACKBONES))})"
        )
    net = BACKBONES[name](spec, width)
    if not isinstance(getattr(net, "out_dim", None), int):
        raise HarnessError(f"backbone {name!r} has no integer `out_dim`; set it in __init__")
    return net


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run the block with `module` in eval mode (no BatchNorm statistics updated)."""
    was = module.training
    module.train(False)
    try:
        yield
    finally:
        module.train(was)
