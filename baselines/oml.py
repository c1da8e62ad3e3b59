"""OML: Online-aware Meta-Learning (Javed & White, NeurIPS 2019), in its two published variants.

Network (`OMLNet` in baselines/networks/oml_anml.py; 1 x 84 x 84 input): the representation
learning network (RLN) is 6 x [conv 3x3, 256 channels, no padding, ReLU] with strides 2, 1, 2,
1, 2, 2 (2304 features); the prediction learning network (PLN) is
  - `oml-2019`: Linear 2304 -> 1024, ReLU, Linear 1024 -> 1000 (6,338,280 parameters);
  - `oml-2020` (the authors' later code release): Linear 2304 -> 1000 (5,257,960 parameters).

Meta-training (the PLN is fast, the RLN slow; the trajectory classes' output rows are reset):
  - 2019: one class, a trajectory of 10-20 single-image SGD steps at lr 0.03; outer loss on the
    trajectory + 64 random meta-train images; first order; Adam 1e-4.
  - 2020: 3 classes x 5 single-image steps at lr 0.03; outer loss on 5 other images of each
    of those classes + 15 images from other classes (the remember set); second order;
    Adam 1e-4.

Meta-test (`omniglot-stream`, use `--set image_size=84`): like ANML, only the output layer
learns (zero init, SGD); for `oml-2019` the frozen features include the PLN's hidden layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.headonly import HeadOnlyConfig, HeadOnlyLearner, reset_rows
from baselines.networks.oml_anml import OMLNet, image_input, kaiming_init
from harness.config import BuildContext, check_choice, check_range
from harness.meta import functional, inner_loop


@dataclass
class OMLConfig(HeadOnlyConfig):
    """OML meta-training recipe and network size (defaults: OML-2020 as published)."""

    variant: Literal["2019", "2020"] = "2020"
    """'2019' (two-layer PLN, 1 class per trajectory, first order) or '2020' (linear PLN,
    3 classes x 5 steps, second order)."""
    channels: int = 256
    """RLN convolution channels (paper 256); >= 1."""
    hidden: int = 1024
    """2019 variant: PLN hidden units (paper 1024); >= 1. Unused by 2020."""
    n_meta_outputs: int = 1000
    """Output layer size during meta-training (paper 1000)."""
    order: Literal["first", "second", "auto"] = "auto"
    """Meta-gradient order; 'auto' = the variant's published choice (2019 first, 2020 second)."""
    classes_per_task: int = 0
    """Classes per trajectory (0 = variant default: 2019 one, 2020 three)."""
    steps_per_class: int = 0
    """Single-image steps per class (0 = variant default: 2019 10-20 at random, 2020 5)."""
    remember: int = 0
    """Other meta-train images in the outer loss (0 = variant default: 2019 64, 2020 15)."""
    reset_row: bool = True
    """Reset the trajectory classes' output rows before the inner loop."""
    weight_init: Literal["kaiming", "torch"] = "kaiming"
    """'kaiming': He-normal weights, zero biases, as the authors' code; 'torch': PyTorch's
    default, under which the unnormalised 6-conv RLN's features hardly differ between images
    (measured: std across images 0.1% of the features' scale) and every lr stays at chance."""

    _ORDERS: ClassVar[tuple[str, ...]] = ("first", "second", "auto")
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"channels": 64, "hidden": 256, "meta_steps": 2000,
                  "pretrain_steps": 1000},
        "long": {"channels": 128, "hidden": 512, "order": "first", "meta_steps": 20000,
                 "pretrain_steps": 10000},
        "paper": {},
    }

    @property
    def KIND(self) -> str:  # noqa: N802 (the class attribute of the other configs)
        return f"oml-{self.variant}"

    def __post_init__(self) -> None:
        self._check_common()
        check_choice(self, "variant", ("2019", "2020"))
        check_choice(self, "weight_init", ("kaiming", "torch"))
        check_range(self, "channels", "hidden", "n_meta_outputs", ge=1)
        check_range(self, "classes_per_task", "steps_per_class", "remember", ge=0)

    def build(self, ctx: BuildContext) -> OMLLearner:
        return OMLLearner(self.for_seed(ctx.seed), ctx)


class OMLLearner(HeadOnlyLearner):
    """OML: meta-train (or pre-train) RLN + PLN, then output-layer-only SGD on the stream."""

    cfg: OMLConfig

    def __init__(self, cfg: OMLConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        channels, side = image_input(ctx.spec, "oml")
        v2019 = cfg.variant == "2019"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.meta_seed)
            self.net = OMLNet(channels, cfg.channels, cfg.hidden if v2019 else 0,
                              cfg.n_meta_outputs, side)
            if cfg.weight_init == "kaiming":
                kaiming_init(self.net)
        self.variant = f"oml-{cfg.variant}"
        self.feature_dim = self.net.feature_dim
        self.gradient_order = cfg.order if cfg.order != "auto" else (
            "first" if v2019 else "second")
        self._classes = cfg.classes_per_task or (1 if v2019 else 3)
        self._steps = cfg.steps_per_class or (0 if v2019 else 5)  # 0: 10-20 at random
        self._remember = cfg.remember or (64 if v2019 else 15)
        # The RLN is slow: its features are computed once per trajectory and the inner loop
        # runs on the PLN alone (all of it fast).
        self._fm = functional(self.net.pln, "")
        self._finish_init()

    def _meta_step(self, pool: Any, gen: torch.Generator) -> Tensor:
        cfg = self.cfg
        self._check_meta_pool(pool)
        classes = pool.sample_classes(self._classes, gen).tolist()
        steps = self._steps or int(torch.randint(10, 21, (1,), generator=gen))
        traj, query = [], []
        for c in classes:
            idx = pool.sample_from_class(c, 2 * steps, gen)
            traj.append(idx[:steps])
            query.append(idx[steps : 2 * steps])
        traj_idx = torch.cat(traj)
        if cfg.variant == "2019":  # outer loss on the trajectory itself + remember images
            query_idx = traj_idx
            others = pool.sample_random(self._remember, gen)
        else:  # held-out images of the trajectory classes + images of other classes
            query_idx = torch.cat(query)
            mask = ~torch.isin(pool.y, torch.tensor(classes))
            candidates = torch.nonzero(mask).squeeze(1)
            others = candidates[torch.randperm(len(candidates), generator=gen)[:self._remember]]
        if cfg.reset_row:
            reset_rows(self.net.pln[-1].weight, classes, gen)
        first = self.gradient_order == "first"
        rep = self.net.rln(pool.x[traj_idx].to(self.device))
        y_t = pool.y[traj_idx].to(self.device)
        fast, slow = self._fm.params()
        adapted = inner_loop(self._fm, fast, slow, (rep.detach() if first else rep)[:, None],
                             y_t[:, None], loss_fn=F.cross_entropy, lr=cfg.inner_lr,
                             first_order=first)
        q = torch.cat([query_idx, others])
        rep_q = self.net.rln(pool.x[q].to(self.device))
        return F.cross_entropy(self._fm(adapted, slow, rep_q), pool.y[q].to(self.device))

