"""ANML: A Neuromodulated Meta-Learning algorithm (Beaulieu et al., ECAI 2020).

Network (`ANMLNet` in baselines/networks/oml_anml.py; paper size, 3 x 28 x 28 input:
6,048,424 parameters):
  - neuromodulatory net: 3 x [conv 3x3 (112 ch, no padding), per-image normalization with
    affine parameters, ReLU], max-pool 2 after the first two; Linear 1008 -> 2304; sigmoid;
  - prediction net: the same trunk with 256 channels, whose 2304 flattened features are
    multiplied elementwise by the gate; Linear 2304 -> 1000.

Meta-training (paper): per step one meta-train class; that class's output row is reset
(Kaiming normal, as in the original code); 20 sequential single-image SGD steps at lr 0.1 on
the prediction net (trunk + output layer); outer loss: cross-entropy at the adapted weights on
those 20 images plus 64 random meta-train images; Adam 1e-3 on both nets; 20,000 steps.
`order` selects the exact second-order meta-gradient or the first-order approximation.
The inner loop does not change the neuromodulatory net, so the gates of the 20 trajectory
images are computed in one batched pass before it (the same values as 20 single-image passes,
up to rounding), and each inner SGD step updates all fast weights in one fused operation
(docs/profile-meta-step.md).

Meta-test (`omniglot-stream`): the gated features are frozen; a zero-initialized linear layer
for the stream's classes learns by SGD, one image at a time (see baselines/headonly.py).

Fixed with respect to the original code (and recorded here): the original normalized with
`F.batch_norm(training=True)` at test time too, so a test image's features depended on the
other images in its evaluation batch; here normalization is per image (instance norm with
affine parameters, computed by `PerImageNorm`), identical for batch 1 at meta-training and
independent of batching at test. The original also chose the meta-test learning rate on the
reported classes; the harness chooses it on disjoint validation classes (harness/experiment.py).

Presets: `quick` (CPU, about 5 minutes of meta-training on 2 free cores: 32/64-channel nets,
3,000 first-order steps), `long` (CPU, about 1.5 h: 64/128 channels, 20,000 first-order steps),
`paper` (the published recipe: 112/256 channels, second order, 20,000 steps; a GPU in
practice; add `--set channels=3` for the paper's 3 x 28 x 28 input of replicated grey).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.headonly import HeadOnlyConfig, HeadOnlyLearner, reset_rows
from baselines.networks.oml_anml import ANMLNet, image_input
from harness.config import BuildContext, check_range
from harness.meta import functional, inner_loop


@dataclass
class ANMLConfig(HeadOnlyConfig):
    """ANML meta-training recipe and network size (defaults: the paper)."""

    nm_channels: int = 112
    """Channels of the neuromodulatory net's convolutions (paper 112); >= 1."""
    pred_channels: int = 256
    """Channels of the prediction net's convolutions (paper 256); >= 1."""
    n_meta_outputs: int = 1000
    """Output layer size during meta-training (paper 1000; >= meta-train classes)."""
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

    KIND: ClassVar[str] = "anml"
    ARITHMETIC: ClassVar[int] = 2
    """Version of the network's arithmetic, part of the checkpoint key: a cached network made
    with other arithmetic is retrained, not reused. 2: `PerImageNorm`, and each trajectory's
    gates in one batched pass, the inner SGD step as one fused update (harness 0.3)."""
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"nm_channels": 32, "pred_channels": 64, "order": "first",
                  "meta_steps": 3000, "pretrain_steps": 1000},
        "long": {"nm_channels": 64, "pred_channels": 128, "order": "first",
                 "meta_steps": 20000, "pretrain_steps": 10000},
        "paper": {},
    }

    def __post_init__(self) -> None:
        self._check_common()
        check_range(self, "nm_channels", "pred_channels", "n_meta_outputs", "inner_steps", ge=1)
        check_range(self, "remember", ge=0)

    def checkpoint_key(self) -> dict[str, Any]:
        return {**super().checkpoint_key(), "arithmetic": self.ARITHMETIC}

    def build(self, ctx: BuildContext) -> ANMLLearner:
        return ANMLLearner(self.for_seed(ctx.seed), ctx)


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
        first_order = cfg.order == "first"
        # The gates do not change in the inner loop (it adapts the prediction net only): one
        # batched pass gives the whole trajectory's. First order treats them as constants, as
        # it does the slow weights; second order keeps their graph.
        with torch.no_grad() if first_order else contextlib.nullcontext():
            gates = self.net.gates(x_traj)
        fast, slow = self._fm.params()
        adapted = inner_loop(self._fm, fast, slow, (x_traj[:, None], gates[:, None]),
                             y_traj[:, None], loss_fn=F.cross_entropy, lr=cfg.inner_lr,
                             first_order=first_order, fused=True)
        x_out = torch.cat([x_traj, pool.x[rem].to(self.device)])
        y_out = torch.cat([y_traj, pool.y[rem].to(self.device)])
        return F.cross_entropy(self._fm(adapted, slow, x_out), y_out)

    def describe(self) -> dict[str, str | float]:
        return {**super().describe(), "nm_channels": float(self.cfg.nm_channels),
                "pred_channels": float(self.cfg.pred_channels)}

