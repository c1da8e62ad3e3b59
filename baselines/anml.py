"""ANML: A Neuromodulated Meta-Learning algorithm (Beaulieu et al., ECAI 2020).

Network (paper size, 3 x 28 x 28 input: 6,048,424 parameters):
  - neuromodulatory net: 3 x [conv 3x3 (112 ch, no padding), per-image normalization with
    affine parameters, ReLU], max-pool 2 after the first two; Linear 1008 -> 2304; sigmoid;
  - prediction net: the same trunk with 256 channels, whose 2304 flattened features are
    multiplied elementwise by the gate; Linear 2304 -> 1000.

Meta-training (paper): per step one meta-train class; that class's output row is reset
(Kaiming normal, as in the original code); 20 sequential single-image SGD steps at lr 0.1 on
the prediction net (trunk + output layer); outer loss: cross-entropy at the adapted weights on
those 20 images plus 64 random meta-train images; Adam 1e-3 on both nets; 20,000 steps.
`order` selects the exact second-order meta-gradient or the first-order approximation.

Meta-test (`omniglot-stream`): the gated features are frozen; a zero-initialized linear layer
for the stream's classes learns by SGD, one image at a time (see baselines/headonly.py).

Fixed with respect to the original code (and recorded here): the original normalized with
`F.batch_norm(training=True)` at test time too, so a test image's features depended on the
other images in its evaluation batch; here normalization is per image (instance norm with
affine parameters), identical for batch 1 at meta-training and independent of batching at
test. The original also chose the meta-test learning rate on the reported classes; the
harness chooses it on disjoint validation classes (harness/experiment.py).

Presets: `quick` (CPU, about 8-9 minutes on 2 free cores: 32/64-channel nets, 3,000
first-order steps), `long` (CPU, about 1.5 h: 64/128 channels, 20,000 first-order steps),
`paper` (the published recipe: 112/256 channels, second order, 20,000 steps; a GPU in
practice; add `--set channels=3` for the paper's 3 x 28 x 28 input of replicated grey).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.headonly import HeadOnlyConfig, HeadOnlyLearner, reset_rows
from harness.config import BuildContext, check_choice, check_range
from harness.errors import HarnessError
from harness.meta import functional, inner_loop
from harness.protocol import ScenarioSpec

MIN_UNPADDED = 22
"""Smallest image side the paper's unpadded trunk accepts; smaller images (synthetic test
streams) get padded convolutions instead, and no pooling once the map is 1 pixel wide."""


def conv_trunk(in_channels: int, channels: int, image_size: int = 28) -> nn.Sequential:
    """3 x [conv 3x3 no padding, instance norm (affine), ReLU], max-pool after the first two."""
    pad = 0 if image_size >= MIN_UNPADDED else 1
    layers: list[nn.Module] = []
    side = image_size
    for i in range(3):
        layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=pad),
                   nn.InstanceNorm2d(channels, affine=True), nn.ReLU()]
        side = side - 2 + 2 * pad
        if i < 2 and side >= 2:
            layers.append(nn.MaxPool2d(2))
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
    """The ANML network; `features(x)` are the gated prediction features."""

    def __init__(self, in_channels: int = 3, nm_channels: int = 112, pred_channels: int = 256,
                 n_outputs: int = 1000, image_size: int = 28) -> None:
        super().__init__()
        if image_size < 8:
            raise HarnessError(f"ANML needs images of at least 8 x 8, got {image_size}")
        side = trunk_side(image_size)
        self.feature_dim = pred_channels * side * side
        self.nm = conv_trunk(in_channels, nm_channels, image_size)
        self.gate = nn.Linear(nm_channels * side * side, self.feature_dim)
        self.pred = conv_trunk(in_channels, pred_channels, image_size)
        self.head = nn.Linear(self.feature_dim, n_outputs)

    def features(self, x: Tensor) -> Tensor:
        return self.pred(x) * torch.sigmoid(self.gate(self.nm(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@dataclass
class ANMLConfig(HeadOnlyConfig):
    """ANML meta-training recipe and network size (defaults: the paper)."""

    KIND: ClassVar[str] = "anml"

    nm_channels: int = 112
    """Channels of the neuromodulatory net's convolutions (paper 112); >= 1."""
    pred_channels: int = 256
    """Channels of the prediction net's convolutions (paper 256); >= 1."""
    n_meta_outputs: int = 1000
    """Output layer size during meta-training (paper 1000; >= meta-train classes)."""
    order: Literal["first", "second"] = "second"
    """Meta-gradient: 'second' (exact, through the inner loop) or 'first' (approximation)."""
    meta_steps: int = 20000
    """Outer (Adam) steps of meta-training; >= 1."""
    meta_lr: float = 1e-3
    """Adam learning rate of the outer loop; > 0."""
    inner_lr: float = 0.1
    """SGD learning rate of the inner loop; > 0."""
    inner_steps: int = 20
    """Single-image inner steps per trajectory, all of one class (1..20); >= 1."""
    remember: int = 64
    """Random meta-train images added to the outer loss; >= 0."""
    reset_row: bool = True
    """Reset the trajectory class's output row before the inner loop (paper: yes)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"nm_channels": 32, "pred_channels": 64, "order": "first",
                  "meta_steps": 3000, "pretrain_steps": 1000},
        "long": {"nm_channels": 64, "pred_channels": 128, "order": "first",
                 "meta_steps": 20000, "pretrain_steps": 10000},
        "paper": {},
    }

    def __post_init__(self) -> None:
        self._check_common()
        check_range(self, "nm_channels", "pred_channels", "n_meta_outputs", "meta_steps",
                    "inner_steps", ge=1)
        check_choice(self, "order", ("first", "second"))
        check_range(self, "meta_lr", "inner_lr", gt=0)
        check_range(self, "remember", ge=0)

    def build(self, ctx: BuildContext) -> ANMLLearner:
        return ANMLLearner(self.for_seed(ctx.seed), ctx)


def image_input(spec: ScenarioSpec, name: str) -> tuple[int, int]:
    """(channels, side) of a square image spec, or a HarnessError saying what fits."""
    shape = tuple(spec.input_shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise HarnessError(f"{name} needs square images (C, S, S); this scenario gives {shape}")
    return int(shape[0]), int(shape[1])


class ANMLLearner(HeadOnlyLearner):
    """ANML: meta-train (or pre-train) the network, then head-only SGD on the stream."""

    cfg: ANMLConfig
    variant = "anml"

    def __init__(self, cfg: ANMLConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        channels, side = image_input(ctx.spec, "anml")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.meta_seed)
            self.net = ANMLNet(channels, cfg.nm_channels, cfg.pred_channels,
                               cfg.n_meta_outputs, side)
        self.feature_dim = self.net.feature_dim
        self.gradient_order = cfg.order
        self._fm = functional(self.net, lambda n: n.startswith(("pred.", "head.")))
        self._finish_init()

    def _meta_step(self, pool: Any, gen: torch.Generator) -> Tensor:
        """One outer step's loss: a one-class trajectory, then trajectory + remember images."""
        cfg = self.cfg
        self._check_meta_pool(pool)
        c = int(pool.sample_classes(1, gen)[0])
        traj = pool.sample_from_class(c, cfg.inner_steps, gen)
        rem = pool.sample_random(cfg.remember, gen)
        x_traj, y_traj = pool.x[traj].to(self.device), pool.y[traj].to(self.device)
        if cfg.reset_row:
            reset_rows(self.net.head.weight, [c], gen)
        fast, slow = self._fm.params()
        adapted = inner_loop(self._fm, fast, slow, x_traj[:, None], y_traj[:, None],
                             loss_fn=F.cross_entropy, lr=cfg.inner_lr,
                             first_order=cfg.order == "first")
        x_out = torch.cat([x_traj, pool.x[rem].to(self.device)])
        y_out = torch.cat([y_traj, pool.y[rem].to(self.device)])
        return F.cross_entropy(self._fm(adapted, slow, x_out), y_out)

    def describe(self) -> dict[str, str | float]:
        return {**super().describe(), "nm_channels": float(self.cfg.nm_channels),
                "pred_channels": float(self.cfg.pred_channels)}


class ANMLBackbone(nn.Module):
    """The ANML network without its output layer, for the baselines (`backbone=anml`):
    gated prediction features, `out_dim` of them. `width` is the prediction net's channels;
    the neuromodulatory net has 112 at the paper's 256 and half the width otherwise."""

    def __init__(self, spec: ScenarioSpec, width: int) -> None:
        super().__init__()
        channels, side = image_input(spec, "backbone anml")
        net = ANMLNet(channels, 112 if width == 256 else max(1, width // 2), width, 1, side)
        self.nm, self.gate, self.pred = net.nm, net.gate, net.pred
        self.out_dim = net.feature_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.pred(x) * torch.sigmoid(self.gate(self.nm(x)))
