"""`multistage`: a meta-learned network in S stages, each with its own plasticity and timescale,
for online learning from natural streams (video, time series) and class streams alike.

Stages (S = `stages`):
  - slow (S >= 2): the representation, meta-learned and frozen online (as OML's RLN). Images
    [C, H, W]: ANML's conv trunk of `width` channels (baselines/networks/oml_anml.py
    `conv_trunk`); vectors [d]: an MLP d -> `hidden` -> `hidden` with ReLU.
  - medium (S = 3): Linear (features -> `hidden`) + ReLU, trained online at rate eta_m with a
    pull toward its slow copy W_m0, its meta-learned weights (consolidation):
        W <- W - eta_m * grad / (1 + |a|^2) - beta_m * (W - W_m0)
  - fast (always): Linear (-> outputs), trained online at rate eta_f with decay toward its
    start W_f0:
        W <- W - eta_f * grad / (1 + |a|^2) - beta_f * (W - W_f0)
    a being the layer's input (the batch's mean squared norm): normalised LMS, so that a rate
    below 2 is stable whatever the scale of the input (raw windows of a drifting series, the
    slow stage's features). For classification the steps are plain SGD (no division), as
    OML's and ANML's heads: the cross-entropy gradient is bounded.
    For regression W_f0 is meta-learned; for classification the stream's classes are new, so
    the fast stage starts at zero (as OML's and ANML's meta-test head) and decays toward zero.
  With `residual` (default) and a scenario that declares a persistence forecast (the current
  frame, the last value), the output is that forecast plus the stages' output: they learn the
  change. S = 1 is the fast stage alone on the raw flattened input; S = 2 adds the slow stage (OML's
  two stages); S = 3 adds the medium one. Every update takes one batch of the stream and the
  task's loss (MSE; cross-entropy for classification). Rates are exp(log eta), decays
  sigmoid(logit beta), one pair per plastic stage.

Meta-training (init='meta'; Adam at `meta_lr` on every meta-parameter: the slow stage, W_m0,
W_f0 for regression, and the log-rates and logit-decays): one step draws a trajectory from the
meta-training data (a `TaskSampler` task's experiences in order, its test sets as the query;
for classification `traj_classes` classes of the `LabeledPool`, `traj_per_class` images each,
class after class, relabelled 0..k-1, with `remember` further images per class as the query),
runs the update rules sample by sample from the meta-parameters, and minimises
    mean over the trajectory of the loss of each prediction made before its update
    + the query loss at the final weights.
The first term is the prequential error the stream scores; the second asks what is learned
to be kept. `order='first'` (default) detaches the inner gradients (no second derivatives) but
keeps every update's dependence on eta, beta and the starting weights, so the rates and decays
get meta-gradients; the slow stage's features enter through every prediction. 'second'
differentiates through the inner gradients too.

Meta-test: the slow stage is frozen; medium and fast start from their meta-learned weights
(fast at zero for classification) and follow the rules with the meta-learned decays. The fast
rate on the stream is `lr`, which the harness tunes on the validation stream as every
learner's (docs/design.md D4); the medium rate keeps its meta-learned ratio to the fast one,
eta_m = lr * eta_m* / eta_f*. `describe()` records the meta-learned rates and decays.
init='random' uses the stages at their initialisation and the initial rates and decays;
init='pretrain' trains the whole network supervised on random samples of the meta-training
trajectories instead.

Presets: `quick` (CPU, first order, 400 steps, width 32, hidden 64) and `paper` (this
project's larger setting, not a published recipe: 3,000 steps, width 64, hidden 256).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.headonly import HeadOnlyConfig, TrainedNet
from baselines.networks.oml_anml import conv_trunk, image_input, kaiming_init, trunk_side
from harness.config import BuildContext, check_range, eval_field
from harness.errors import DivergedError, HarnessError
from harness.forecasting import from_input
from harness.protocol import LabeledPool, ScenarioSpec, TaskSampler


@dataclass
class MultistageConfig(HeadOnlyConfig):
    """The multistage network and its meta-training (module docstring)."""

    stages: int = 3
    """Number of stages S: 1 (fast), 2 (slow + fast), 3 (slow + medium + fast)."""
    width: int = 32
    """Channels of the slow stage's convolutions (image inputs); >= 1."""
    hidden: int = 64
    """Width of the slow stage's MLP (vector inputs) and of the medium stage; >= 1."""
    inner_lr: float = 0.1
    """Initial fast rate eta_f (the medium's starts at a tenth of it); > 0."""
    beta_f0: float = 1e-3
    """Initial decay of the fast stage, in (0, 1)."""
    beta_m0: float = 1e-4
    """Initial pull of the medium stage toward its slow copy, in (0, 1)."""
    traj_classes: int = 3
    """Classification: classes per meta-training trajectory; >= 1."""
    traj_per_class: int = 5
    """Classification: images per class in a trajectory; >= 1."""
    remember: int = 5
    """Classification: further images per class in the query; >= 1."""
    traj_len: int = 64
    """Regression: samples of a meta-training trajectory, the first traj_len // n of each of
    the task's n experiences (at least one each; a task shorter than that is used whole); >= 1.
    The natural streams' tasks (16-32 samples) fit whole; it caps sine-incremental's 10 x 320."""
    n_meta_outputs: int = 1000
    """Classification with init='pretrain': outputs of the pre-training layer (>= the
    meta-train classes); it is used for pre-training only."""
    meta_lr: float = 1e-3
    """Adam learning rate of meta-training; > 0."""
    lr: float = eval_field(0.1, "fast-stage rate on the stream")
    """Rate of the fast stage on the stream (the medium's keeps its meta-learned ratio to
    it); tuned by the runner; > 0. A normalised step: below 2 is stable."""
    residual: bool = True
    """Add the scenario's persistence forecast (`spec.persistence`: the current frame, the
    last value) to the output, so the stages learn the change; no effect where the scenario
    declares none."""
    meta_seed: int = -1
    """Seed of the initialisation and of meta-training sampling; -1 (default): the run's
    seed, so each seed meta-trains its own network and a CI over seeds includes
    meta-training's variance (meta-training is cheap at the quick preset); >= -1."""
    order: Literal["first", "second"] = "first"
    """Meta-gradient: 'first' (inner gradients detached; default) or 'second' (through them)."""

    KIND: ClassVar[str] = "multistage"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"order": "first", "meta_steps": 400, "pretrain_steps": 400},
        "paper": {"order": "first", "meta_steps": 3000, "pretrain_steps": 3000, "width": 64,
                  "hidden": 256},
    }

    def __post_init__(self) -> None:
        self._check_common()
        check_range(self, "stages", ge=1, le=3)
        check_range(self, "width", "hidden", "traj_classes", "traj_per_class", "remember",
                    "traj_len", "n_meta_outputs", ge=1)
        check_range(self, "beta_f0", "beta_m0", gt=0, lt=1)

    def build(self, ctx: BuildContext) -> MultistageLearner:
        return MultistageLearner(self.for_seed(ctx.seed), ctx)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class MultistageNet(nn.Module):
    """The meta-parameters: slow stage, medium and fast initial weights, rates and decays."""

    def __init__(self, spec: ScenarioSpec, cfg: MultistageConfig) -> None:
        super().__init__()
        self.stages, self.classify = cfg.stages, spec.task == "classification"
        n_in = int(torch.Size(spec.input_shape).numel())
        self.slow: nn.Module = nn.Flatten()
        dim = n_in
        if cfg.stages >= 2 and len(spec.input_shape) == 3:
            channels, side = image_input(spec, "multistage")
            self.slow = kaiming_init(conv_trunk(channels, cfg.width, side))
            dim = cfg.width * trunk_side(side) ** 2
        elif cfg.stages >= 2:
            self.slow = kaiming_init(nn.Sequential(
                nn.Flatten(), nn.Linear(n_in, cfg.hidden), nn.ReLU(),
                nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU()))
            dim = cfg.hidden
        self.medium = nn.Linear(dim, cfg.hidden) if cfg.stages == 3 else None
        fast_in = cfg.hidden if cfg.stages == 3 else dim
        self.n_outputs = spec.n_outputs
        # Classification: the stream's classes are new, so the fast stage starts at zero; its
        # parameters are not trained (pre-training has its own layer, `pre`), and the
        # checkpoint does not depend on how many classes a stream has.
        self.fast = nn.Linear(fast_in, cfg.traj_classes if self.classify else spec.n_outputs)
        nn.init.zeros_(self.fast.weight)
        nn.init.zeros_(self.fast.bias)
        self.pre = (nn.Linear(fast_in, cfg.n_meta_outputs)
                    if self.classify and cfg.init == "pretrain" else None)
        """Classification pre-training's output layer, over the meta-train classes."""
        self.log_eta_f = nn.Parameter(torch.tensor(math.log(cfg.inner_lr)))
        self.logit_beta_f = nn.Parameter(torch.tensor(_logit(cfg.beta_f0)))
        self.log_eta_m = nn.Parameter(torch.tensor(math.log(cfg.inner_lr * 0.1)))
        self.logit_beta_m = nn.Parameter(torch.tensor(_logit(cfg.beta_m0)))
        if cfg.stages < 3:
            self.log_eta_m.requires_grad_(False)
            self.logit_beta_m.requires_grad_(False)

    def start(self, pretraining: bool = False) -> list[Tensor]:
        """The plastic weights' starting values [W_m0, b_m0, W_f0, b_f0] (medium only if S=3).
        For classification the fast stage starts at zero (its parameters serve supervised
        pre-training only)."""
        medium = [self.medium.weight, self.medium.bias] if self.medium is not None else []
        fast = [self.fast.weight, self.fast.bias]
        if self.classify and not pretraining:
            w = self.fast.weight
            fast = [w.new_zeros(self.n_outputs, w.shape[1], requires_grad=True),
                    w.new_zeros(self.n_outputs, requires_grad=True)]
        return [*medium, *fast]

    def rates(self) -> tuple[list[Tensor], list[Tensor]]:
        """Per plastic tensor (as `start`), its rate and its decay."""
        eta_f, beta_f = self.log_eta_f.exp(), torch.sigmoid(self.logit_beta_f)
        eta_m, beta_m = self.log_eta_m.exp(), torch.sigmoid(self.logit_beta_m)
        n_m = 2 if self.medium is not None else 0
        return [eta_m] * n_m + [eta_f] * 2, [beta_m] * n_m + [beta_f] * 2

    def _scale(self, a: Tensor) -> Tensor | float:
        """What a layer's step is divided by: 1 + the mean squared norm of its input for
        regression (normalised LMS); 1 for classification, whose cross-entropy gradient is
        bounded (plain SGD steps, as OML's and ANML's heads)."""
        return 1.0 if self.classify else 1.0 + a.detach().pow(2).sum(dim=1).mean()

    def head(self, feats: Tensor, weights: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """The plastic stages on the slow features, with the given plastic weights; also, per
        plastic tensor (as `start`), 1 + the mean squared norm of its layer's input."""
        scale = [self._scale(feats)] * 2
        if self.medium is not None:
            wm, bm, wf, bf = weights
            feats = F.relu(F.linear(feats, wm, bm))
            scale += [self._scale(feats)] * 2
        else:
            wf, bf = weights
        return F.linear(feats, wf, bf), scale


def update(weights: list[Tensor], grads: list[Tensor], scale: list[Tensor], start: list[Tensor],
           etas: list[Tensor], betas: list[Tensor]) -> list[Tensor]:
    """One step of every plastic stage: W - eta * grad / scale - beta * (W - W0), `scale` being
    1 + the squared norm of the layer's input (normalised LMS)."""
    return [w - eta * g / n - beta * (w - w0)
            for w, g, n, w0, eta, beta in zip(weights, grads, scale, start, etas, betas,
                                              strict=True)]


class MultistageLearner(TrainedNet):
    """The multistage network on the stream: slow stage frozen, medium and fast plastic."""

    cfg: MultistageConfig
    variant = "multistage"

    def __init__(self, cfg: MultistageConfig, ctx: BuildContext) -> None:
        super().__init__(cfg, ctx)
        self.classify = ctx.spec.task == "classification"
        self._data_type = LabeledPool if self.classify else TaskSampler
        self._data_name = "a labelled pool" if self.classify else "a task sampler"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.meta_seed)
            self.net = MultistageNet(ctx.spec, cfg)
        self.variant = f"multistage-s{cfg.stages}"
        self.to(self.device)
        self.reset()

    # -- the stream --------------------------------------------------------------------------

    def reset(self) -> None:
        """Plastic weights back to their (meta-)learned start."""
        self.weights = [w.detach().clone() for w in self.net.start()]
        with torch.no_grad():
            etas, betas = self.net.rates()
            ratio = float(self.net.log_eta_m.exp() / self.net.log_eta_f.exp())
        n_m = len(self.weights) - 2
        self.etas = [self.cfg.lr * ratio] * n_m + [self.cfg.lr] * 2
        self.betas = [float(b) for b in betas]

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        result = super().load_state_dict(state_dict, strict, assign)
        self.reset()
        return result

    def _trained(self) -> None:
        self.reset()

    def _base(self, x: Tensor) -> Tensor:
        """The persistence forecast the output adds (`residual`), else zeros."""
        if self.cfg.residual and self.spec.persistence:
            return from_input(x, self.spec.persistence)
        return torch.zeros(len(x), 1, device=x.device)

    def _loss(self, out: Tensor, y: Tensor) -> Tensor:
        if self.classify:
            return F.cross_entropy(out, y)
        return F.mse_loss(out, y.reshape(out.shape).to(out.dtype))

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.net.head(self.net.slow(x), self.weights)[0] + self._base(x)

    def observe(self, x: Tensor, y: Tensor) -> None:
        with torch.no_grad():
            feats = self.net.slow(x)
        with torch.enable_grad():
            weights = [w.requires_grad_(True) for w in self.weights]
            out, scale = self.net.head(feats, weights)
            loss = self._loss(out + self._base(x), y)
            if not torch.isfinite(loss):
                raise DivergedError(f"stream loss is {loss.item()}; lower lr (now "
                                    f"{self.cfg.lr})")
            grads = torch.autograd.grad(loss, weights)
        start = [w.detach() for w in self.net.start()]
        with torch.no_grad():
            self.weights = update([w.detach() for w in weights], list(grads), scale, start,
                                  self.etas, self.betas)

    def describe(self) -> dict[str, str | float]:
        with torch.no_grad():
            etas, betas = self.net.rates()
        out: dict[str, str | float] = {
            "variant": self.variant, "init": self.cfg.init, "meta_seed": self.cfg.meta_seed,
            "gradient_order": self.cfg.order if self.cfg.init == "meta" else "",
            "meta_train_steps": float(self.steps_done),
            "meta_train_seconds_total": round(self.seconds_done, 1),
            "eval_optimizer": "stage rules (normalised steps, decays)",
            "eval_trains": "fast stage" + (" and medium stage" if self.cfg.stages == 3 else ""),
            "eta_f_meta": float(etas[-1]), "beta_f_meta": float(betas[-1])}
        if self.cfg.stages == 3:
            out.update(eta_m_meta=float(etas[0]), beta_m_meta=float(betas[0]),
                       eta_m_stream=float(self.etas[0]))
        return out

    # -- meta-training -----------------------------------------------------------------------

    def _trajectory(self, data: Any, gen: torch.Generator) -> tuple[Tensor, ...]:
        """(x, y, x_query, y_query) of one meta-training trajectory, on the device."""
        if self.classify:
            cfg = self.cfg
            n_out = self.spec.n_outputs
            if cfg.traj_classes > n_out:
                raise HarnessError(f"traj_classes={cfg.traj_classes} exceeds the stream's "
                                   f"{n_out} classes; lower it")
            xs, ys, xq, yq = [], [], [], []
            for k, c in enumerate(data.sample_classes(cfg.traj_classes, gen).tolist()):
                idx = data.sample_from_class(c, cfg.traj_per_class + cfg.remember, gen)
                xs.append(data.x[idx[: cfg.traj_per_class]])
                xq.append(data.x[idx[cfg.traj_per_class :]])
                ys.append(torch.full((len(xs[-1]),), k))
                yq.append(torch.full((len(xq[-1]),), k))
            parts = (xs, ys, xq, yq)
            if any(len(q) == 0 for q in xq):
                raise HarnessError(f"a meta-train class holds at most {cfg.traj_per_class} "
                                   "images, none left for the query; lower traj_per_class")
        else:
            exps = data.sample(gen)
            n = max(1, self.cfg.traj_len // len(exps))
            parts = ([e.x[:n] for e in exps], [e.y[:n] for e in exps],
                     [e.x_test for e in exps], [e.y_test for e in exps])
        return tuple(torch.cat(p).to(self.device) for p in parts)

    def _meta_step(self, data: Any, gen: torch.Generator) -> Tensor:
        x, y, xq, yq = self._trajectory(data, gen)
        net, second = self.net, self.cfg.order == "second"
        feats = net.slow(torch.cat([x, xq]))
        base = self._base(x)
        f, fq = feats[: len(x)], feats[len(x) :]
        start = net.start()
        etas, betas = net.rates()
        weights = list(start)
        losses = []
        for t in range(len(x)):
            out, scale = net.head(f[t : t + 1], weights)
            loss = self._loss(out + base[t : t + 1], y[t : t + 1])
            grads = torch.autograd.grad(loss, weights, create_graph=second, retain_graph=True,
                                        allow_unused=True)
            grads = [torch.zeros_like(w) if g is None else g if second else g.detach()
                     for w, g in zip(weights, grads, strict=True)]
            weights = update(weights, grads, scale, start, etas, betas)
            losses.append(loss)
        query = net.head(fq, weights)[0] + self._base(xq)
        return torch.stack(losses).mean() + self._loss(query, yq)

    def _pretrain_step(self, data: Any, gen: torch.Generator) -> Tensor:
        """Supervised: `pretrain_batch` random meta-train images with their own classes (the
        stages and the pre-training layer), or random samples of a task (every stage)."""
        net, size = self.net, self.cfg.pretrain_batch
        if self.classify:
            if data.n_classes > self.cfg.n_meta_outputs:
                raise HarnessError(f"the meta-train pool has {data.n_classes} classes but "
                                   f"n_meta_outputs is {self.cfg.n_meta_outputs}; raise it")
            idx = data.sample_random(size, gen)
            f = net.slow(data.x[idx].to(self.device))
            if net.medium is not None:
                f = F.relu(net.medium(f))
            return F.cross_entropy(net.pre(f), data.y[idx].to(self.device))
        x, y, xq, yq = self._trajectory(data, gen)
        x, y = torch.cat([x, xq]), torch.cat([y, yq])
        idx = torch.randperm(len(x), generator=gen)[:size].to(self.device)
        out = net.head(net.slow(x[idx]), net.start(pretraining=True))[0]
        return self._loss(out + self._base(x[idx]), y[idx])
