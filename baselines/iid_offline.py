"""The i.i.d. offline oracle: the same data, shuffled, several epochs (an upper bound).

`observe` only stores the samples. When `predict` is called in eval mode (the runner's
evaluation points) and samples arrived since the last fit, the model is re-trained from its
initial state (the built or pre-trained one) for `epochs` epochs of shuffled minibatches over
ALL stored samples. In train mode `predict` uses the last fitted model, so the oracle's
prequential (online) accuracy is not meaningful: report it only at the evaluation points.
Each evaluation point costs a full re-fit, i.e. O(points x samples x epochs) in all.

A fit must neither collapse (an oracle that can end at chance is no upper bound) nor wreck the
pre-trained features, so each fit is:
  - linear probe, then fine-tuning (LP-FT, Kumar et al. 2022): with `probe_first` the head is
    first trained alone on the frozen features (computed once: cheap), then everything is
    (train='all'). A fitted head keeps the first large steps from distorting the features.
  - scheduled: in each phase the learning rate rises linearly from ~0 to `lr` over the first
    `WARMUP` of the phase's steps, then decays to 0 along a cosine by its last step; each
    step's gradient norm is clipped to `clip_norm`.
  - checked, with fallbacks: after a fit, its error on the stored samples is compared with
    that of the best constant predictor (always the most frequent stored class; the mean
    target). A fit that removes less than `FIT_FLOOR` of it, or (classification) leaves a
    stored class recognised on none of its samples, has failed, as has one whose loss turns
    non-finite: the oracle fits again from the initial state at lr/10, lr/100, ... (at most
    `fallbacks` times). It keeps the first fit that passes, else the one with the least
    training error; the rate used is `fitted_lr`. A fit that passes costs one forward pass
    more; a rate too small to learn anything pays all the fallbacks (in the runner's lr search).
Only the stored training samples are ever looked at: the inputs passed to `predict` are
predicted, never learned from. Everything is seeded by the run seed, so a run is repeatable.

Measured on omniglot-stream (quick preset, 100 classes, 1500 samples, Adam, final fit): a
constant rate of 3e-2 without a probe ends at chance (test accuracy 0.01) on seeds 0 and 1;
with this recipe a peak of 3e-2 or 1e-1 learns (seed 0: 0.77, 0.71), and a peak of 3e-1,
which collapses without fallbacks, falls back to 3e-2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from baselines.backbone import BackboneConfig
from baselines.finetune import FinetuneLearner, check_optimizer_fields
from baselines.seeding import sub_seed
from harness.config import BuildContext, check_range, eval_field
from harness.errors import DivergedError

WARMUP = 0.1
"""Fraction of a fit phase's steps over which the learning rate rises linearly to `lr`."""
FIT_FLOOR = 0.5
"""Least fraction of the constant predictor's training error a fit must remove to be kept."""
_CHUNK = 256
"""Samples per forward pass outside training steps (bounds the activations' memory)."""


@dataclass
class IIDOfflineConfig(BackboneConfig):
    """Multi-epoch i.i.d. training on all samples seen so far, re-fitted at evaluation."""

    lr: float = eval_field(1e-3, "peak learning rate of the offline fit")
    """Peak learning rate of the offline fit (warm-up, then cosine decay; tuned by the runner)."""
    optimizer: Literal["sgd", "adam"] = eval_field("adam", "optimizer of the offline fit")
    """Optimizer of the offline fit: 'adam' or 'sgd' (plain, no momentum)."""
    train: Literal["all", "head"] = eval_field("all", "parameters trained")
    """Parameters trained: 'all' or 'head' (features frozen, in eval mode)."""
    pretrain: bool = True
    """Start from the pre-trained backbone shared with ncm/slda/pretrain (an upper bound for
    them: the same features, the same data, i.i.d. and several epochs)."""
    epochs: int = eval_field(10, "epochs of each fit")
    """Epochs over all stored samples at each fit; >= 1."""
    batch_size: int = eval_field(16, "minibatch size of the fit")
    """Minibatch size of the fit; >= 1."""
    probe_first: bool = eval_field(True, "fit the head alone before everything (LP-FT)")
    """Fit the head alone on the frozen features first, then everything (train='all' only)."""
    clip_norm: float = eval_field(1.0, "gradient-norm clip of each step (0 = none)")
    """Largest gradient norm of a step, larger ones are scaled down to it (0 = no clip); >= 0."""
    fallbacks: int = eval_field(2, "refits at lr/10, lr/100, ... after a fit that failed")
    """Refits from the start at lr/10, lr/100, ... after a failed fit (module docstring); >= 0."""

    PRESETS: ClassVar[dict[str, dict]] = {"quick": {}, "conv4": {"backbone": "conv4"}}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_optimizer_fields(self)
        check_range(self, "epochs", "batch_size", ge=1)
        check_range(self, "clip_norm", "fallbacks", ge=0)

    def build(self, ctx: BuildContext) -> IIDOfflineLearner:
        return IIDOfflineLearner(self, ctx)  # type: ignore[arg-type]


def lr_factor(step: int, total: int) -> float:
    """Multiplier of `lr` at `step` (0-based) of `total`: linear warm-up, then cosine decay."""
    warm = max(1, math.ceil(WARMUP * total))
    return min(1.0, (step + 1) / warm) * 0.5 * (1.0 + math.cos(math.pi * step / total))


class IIDOfflineLearner(FinetuneLearner):
    """Stores the stream; (re)fits lazily from the reset point when evaluated."""

    cfg: IIDOfflineConfig  # type: ignore[assignment]

    def _reset_stream(self) -> None:
        super()._reset_stream()
        self._xs: list[Tensor] = []
        self._ys: list[Tensor] = []
        self._n_stored = 0
        self._n_fitted = 0
        self.fitted_lr = 0.0

    def observe(self, x: Tensor, y: Tensor) -> None:
        self._xs.append(x.detach())
        self._ys.append(y.detach())
        self._n_stored += len(x)

    def fit(self) -> None:
        """Re-train from the reset point on all stored samples, i.i.d. shuffled, falling back
        to smaller rates while a fit fails (see the module docstring)."""
        x, y = torch.cat(self._xs), torch.cat(self._ys)
        best: tuple[float, float, dict[str, Tensor]] | None = None
        error: DivergedError | None = None
        for attempt in range(self.cfg.fallbacks + 1):
            lr = self.cfg.lr / 10**attempt
            try:
                self._fit_at(x, y, lr)
            except DivergedError as e:
                error = e
                continue
            skill, passed = self._training_skill(x, y)
            if best is None or skill > best[0]:
                best = (skill, lr, {k: v.clone() for k, v in nn.Module.state_dict(self).items()})
            if passed:
                break
        if best is None:
            assert error is not None
            raise error
        nn.Module.load_state_dict(self, best[2])
        self._n_fitted, self.fitted_lr = len(y), best[1]

    def _fit_at(self, x: Tensor, y: Tensor, lr: float) -> None:
        """One fit at peak rate `lr` from the reset point; the shuffles depend on the seed only."""
        self.reset()  # initial weights and a fresh optimizer; it empties the store: restore it
        self._xs, self._ys, self._n_stored = [x], [y], len(y)
        gen = torch.Generator().manual_seed(sub_seed(self.seed, "iid-offline"))
        was = self.training
        self.train(True)
        try:
            if self.cfg.probe_first or self.cfg.train == "head":
                with torch.no_grad():
                    f = torch.cat([self._features(x[i : i + _CHUNK])
                                   for i in range(0, len(x), _CHUNK)])
                probe = type(self.opt)(self.head.parameters(), lr=lr)
                self._epochs(lambda idx: self.head(f[idx]), y, probe, lr, gen)
            if self.cfg.train == "all":
                self._epochs(lambda idx: self.head(self.features(x[idx])), y, self.opt, lr, gen)
        finally:
            self.train(was)

    def _epochs(self, forward: Callable[[Tensor], Tensor], y: Tensor,
                opt: torch.optim.Optimizer, lr: float, gen: torch.Generator) -> None:
        """`epochs` of shuffled minibatches: the scheduled rate, clipped gradient norms."""
        params = [p for g in opt.param_groups for p in g["params"]]
        n, bs = len(y), self.cfg.batch_size
        total, step = self.cfg.epochs * math.ceil(n / bs), 0
        for _ in range(self.cfg.epochs):
            order = torch.randperm(n, generator=gen).to(y.device)
            for i in range(0, n, bs):
                for g in opt.param_groups:
                    g["lr"] = lr * lr_factor(step, total)
                idx = order[i : i + bs]
                with torch.enable_grad():
                    loss = self._loss(forward(idx), y[idx])
                    if not torch.isfinite(loss):
                        raise DivergedError(
                            f"training loss is {loss.item()} at peak lr {lr:g}; lower lr "
                            f"(now {self.cfg.lr}) or raise fallbacks")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                if self.cfg.clip_norm > 0:
                    nn.utils.clip_grad_norm_(params, self.cfg.clip_norm)
                opt.step()
                step += 1

    @torch.no_grad()
    def _training_skill(self, x: Tensor, y: Tensor) -> tuple[float, bool]:
        """(skill, passed) of the fitted model on the stored samples. skill = 1 - error / the
        best constant predictor's error (misclassification rate or MSE): 1 = no error, <= 0 =
        no better than a constant. passed: skill >= FIT_FLOOR and, for classification, every
        stored class is recognised on at least one of its samples (no dead class)."""
        was = self.training
        self.train(False)
        try:
            out = torch.cat([FinetuneLearner.predict(self, x[i : i + _CHUNK])
                             for i in range(0, len(x), _CHUNK)])
        finally:
            self.train(was)
        dead = False
        if self.spec.task == "classification":
            hit = out.argmax(1) == y
            err = 1.0 - float(hit.float().mean())
            base = 1.0 - float(torch.bincount(y).max()) / len(y)
            dead = not bool(torch.isin(y.unique(), y[hit]).all())
        else:
            t = y.reshape(out.shape).to(out.dtype)
            err = float(((out - t) ** 2).mean())
            base = float(((t - t.mean(0)) ** 2).mean())
        if not math.isfinite(err):
            return -math.inf, False
        # One class or one target value: nothing to learn beyond a constant.
        skill = (1.0 if err == 0.0 else 0.0) if base == 0.0 else 1.0 - err / base
        return skill, skill >= FIT_FLOOR and not dead

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        if not self.training and self._n_stored > self._n_fitted:
            self.fit()
        return super().predict(x)
