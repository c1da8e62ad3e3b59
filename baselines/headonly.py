"""What OML and ANML share: a frozen meta-learned feature network, a head-only meta-test, and
resumable, checkpointed meta-training.

Meta-test (the `omniglot-stream` protocol of OML/ANML): only a linear output layer learns, by
plain SGD on each incoming batch, starting from zeros (re-initialized once, for the stream's
classes); everything before it is frozen. The frozen features are memoized
(`harness.fast_eval.FEATURES`), and `sweep_features` gives them to the harness, which runs the
whole head-only trajectory for many learning rates at once (`harness.fast_eval.head_sgd_sweep`).

Meta-training runs a step function repeatedly under Adam (baselines.metakit.resumable), reports
progress (loss, steps, ETA from the CLI), and every `checkpoint_every_s` seconds writes the
network, the optimizer state, the sampler's RNG state, the step and the elapsed time to
`BuildContext.resume_path` (safetensors + JSON). A killed or interrupted run restarted with the
same config continues from the last checkpoint and ends in the same state as an uninterrupted
one. A run stopped by `max_meta_seconds` reports itself incomplete and keeps that checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.metakit.resumable import (
    Info,
    KeyedState,
    ResumableRun,
    step_target,
    train_steps,
)
from baselines.seeding import sub_seed
from harness.capabilities import MetaTrainReport, Validate
from harness.config import (
    BuildContext,
    Progress,
    check_choice,
    check_range,
    eval_field,
    train_config_hash,
)
from harness.errors import DivergedError, HarnessError
from harness.fast_eval import FEATURES, weights_digest
from harness.protocol import Budget, LabeledPool


@torch.no_grad()
def reset_rows(weight: Tensor, rows: Sequence[int], gen: torch.Generator) -> None:
    """Re-draw output rows (Kaiming normal, fan-in, ReLU gain, as the original code's reset)
    from `gen`, so a resumed meta-training draws the same values."""
    std = (2.0 / weight.shape[1]) ** 0.5
    for r in rows:
        weight[r] = torch.randn(weight.shape[1], generator=gen).to(weight) * std


@dataclass
class HeadOnlyConfig:
    """Fields every head-only meta-learner (and OML-sine) shares: meta-test, bookkeeping, and
    the outer and inner loops of meta-training (defaults overridden where the papers differ)."""

    init: Literal["meta", "random", "pretrain"] = "meta"
    """Features: meta-trained ('meta'), untrained ('random': the same network at its
    initialization) or supervised pre-trained on the meta-train split ('pretrain')."""
    meta_seed: int = 0
    """Seed of the initialization and of meta-training sampling (not the run seed), so one
    checkpoint serves every stream seed; >= 0. -1: the run's seed, so that each seed of
    `harness compare --seeds` meta-trains its own network and the CI over seeds includes
    meta-training variance."""
    pretrain_steps: int = 1500
    """init='pretrain': Adam steps of supervised training on all meta-train classes; >= 1."""
    pretrain_batch: int = 64
    """init='pretrain': minibatch size; >= 1."""
    pretrain_lr: float = 1e-3
    """init='pretrain': Adam learning rate; > 0."""
    max_meta_seconds: float = 0.0
    """Stop (meta- or pre-)training after this many seconds in total, across resumes
    (0 = no limit). The steps actually done are recorded."""
    checkpoint_every_s: float = 120.0
    """Seconds between resumable checkpoints during training; 0 = after every step."""
    lr: float = eval_field(1e-3, "head learning rate on the stream")
    """Learning rate of the output layer on the stream (SGD; tuned by the runner); > 0."""
    iid: bool = eval_field(False, "i.i.d. oracle instead of the stream")
    """The i.i.d. oracle: the output layer is re-fitted from zero at every evaluation on all
    samples seen so far, shuffled, `iid_epochs` epochs of minibatches of `iid_batch`."""
    iid_epochs: int = eval_field(5, "epochs of the i.i.d. oracle's fit")
    """Epochs of each i.i.d. fit; >= 1."""
    iid_batch: int = eval_field(16, "minibatch of the i.i.d. oracle's fit")
    """Minibatch size of each i.i.d. fit; >= 1."""
    order: Literal["first", "second"] = "second"
    """Meta-gradient: 'second' (exact, through the inner loop) or 'first' (approximation)."""
    meta_steps: int = 20000
    """Outer (Adam) steps of meta-training; >= 1."""
    meta_lr: float = 1e-4
    """Adam learning rate of the outer loop; > 0."""
    inner_lr: float = 0.03
    """SGD learning rate of the inner loop; > 0."""

    KIND: ClassVar[str] = "meta"
    """Names the network family in checkpoint file names."""
    _ORDERS: ClassVar[tuple[str, ...]] = ("first", "second")
    """The values `order` takes."""

    @property
    def SEEDED_TRAINING(self) -> bool:  # noqa: N802 (the harness's name for this flag)
        """meta_seed=-1: one checkpoint per run seed (the harness adds the seed to the key)."""
        return self.meta_seed < 0

    def for_seed(self, seed: int) -> Any:
        """The config a run with this seed trains: meta_seed=-1 becomes the seed."""
        return dataclasses.replace(self, meta_seed=int(seed)) if self.meta_seed < 0 else self

    def training_steps(self) -> int:
        """Steps of the training `init` asks for: pre-training or meta-training."""
        return self.pretrain_steps if self.init == "pretrain" else self.meta_steps

    def checkpoint_key(self) -> dict[str, Any]:
        """What a (meta-/pre-)trained checkpoint depends on: the network family and every
        training field. The eval-only fields (lr, the i.i.d. oracle) are left out, so e.g.
        `anml` and `anml-iid` share one meta-trained checkpoint."""
        return {"kind": f"{self.KIND}-{self.init}", "train": train_config_hash(self)}

    def _check_common(self) -> None:
        check_choice(self, "init", ("meta", "random", "pretrain"))
        check_range(self, "meta_seed", ge=-1)
        check_range(self, "pretrain_steps", "pretrain_batch", "iid_epochs", "iid_batch", ge=1)
        check_range(self, "pretrain_lr", "lr", gt=0)
        check_range(self, "max_meta_seconds", "checkpoint_every_s", ge=0)
        check_choice(self, "order", self._ORDERS)
        check_range(self, "meta_steps", ge=1)
        check_range(self, "meta_lr", "inner_lr", gt=0)


class TrainedNet(nn.Module):
    """A learner with a network `net` trained before the stream, resumably (OML, ANML and
    OML-sine). `meta_train` meta-trains it (init='meta') or pre-trains it (init='pretrain') by
    Adam on the losses of `_meta_step` or `_pretrain_step`, which subclasses implement.

    The checkpoint (`state_dict`) is the net plus the steps trained ('train.steps') and the
    seconds they took ('train.seconds').
    """

    net: nn.Module
    cfg: Any
    variant: str = ""
    """Names the learner in result rows and progress phases."""
    _data_type: ClassVar[type] = LabeledPool
    """What `meta_train` trains on: a labelled pool, or a TaskSampler (OML-sine)."""
    _data_name: ClassVar[str] = "a labelled meta-train pool"

    def __init__(self, cfg: Any, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg, self.spec = cfg, ctx.spec
        self.device = torch.device(ctx.device)
        self.needs_meta_train = cfg.init != "random"
        self._progress = ctx.progress
        self._resume_path: Path | None = ctx.resume_path
        self.steps_done = 0
        self.seconds_done = 0.0
        self._weights_key = ""

    # -- checkpoints --------------------------------------------------------------------------

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "",
                   keep_vars: bool = False) -> dict[str, Any]:
        sd = self.net.state_dict(prefix=prefix + "net.", keep_vars=keep_vars)
        sd[prefix + "train.steps"] = torch.tensor(self.steps_done)
        sd[prefix + "train.seconds"] = torch.tensor(self.seconds_done, dtype=torch.float64)
        return sd

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        net = {k.removeprefix("net."): v for k, v in state_dict.items() if k.startswith("net.")}
        other = set(state_dict) - {f"net.{k}" for k in net} - {"train.steps", "train.seconds"}
        if strict and other:
            raise HarnessError(f"checkpoint has unexpected keys {sorted(other)[:5]}; it was not "
                               f"written by {type(self).__name__}")
        result = self.net.load_state_dict(net, strict=strict, assign=assign)
        self.steps_done = int(state_dict.get("train.steps", torch.tensor(0)))
        self.seconds_done = float(state_dict.get("train.seconds", torch.tensor(0.0)))
        self._weights_key = ""
        return result

    # -- (meta-)training ----------------------------------------------------------------------

    def meta_train(self, data: Any, budget: Budget, progress: Progress | None,
                   validate: Validate | None) -> MetaTrainReport:
        """Meta-train (init='meta') or pre-train (init='pretrain') the net, resumably;
        `validate` is not used."""
        if self.cfg.init == "random":
            return MetaTrainReport(steps_done=0)
        if not isinstance(data, self._data_type):
            raise HarnessError(f"{type(self).__name__} needs {self._data_name}, got "
                               f"{type(data).__name__}")
        if self.cfg.init == "meta":
            total, lr = self.cfg.meta_steps, self.cfg.meta_lr
            step_fn: Callable[[Any, torch.Generator], Tensor] = self._meta_step
            phase = f"meta-train {self.variant}"
        else:
            total, lr = self.cfg.pretrain_steps, self.cfg.pretrain_lr
            step_fn, phase = self._pretrain_step, f"pretrain {self.variant}"
        report = self._train_loop(data, total, lr, step_fn, budget,
                                  progress or self._progress, phase)
        self._trained()
        return report

    def _meta_step(self, data: Any, gen: torch.Generator) -> Tensor:
        """The outer loss of one meta-training step on `data`, drawing from `gen`."""
        raise NotImplementedError

    def _pretrain_step(self, data: Any, gen: torch.Generator) -> Tensor:
        """The loss of one supervised pre-training step on `data`, drawing from `gen`."""
        raise NotImplementedError

    def _trained(self) -> None:
        """Called when (meta-/pre-)training returns."""

    def _train_loop(self, data: Any, total: int, lr: float,
                    step_fn: Callable[[Any, torch.Generator], Tensor], budget: Budget,
                    progress: Progress | None, phase: str) -> MetaTrainReport:
        """`total` Adam steps (lr `lr`) on the losses of `step_fn(data, gen)`, resumably; the
        sampler's generator is seeded by the config's meta_seed and init. Stops early, before
        a step, once `max_meta_seconds` (across resumes) or `budget.seconds` (this call) are
        spent: then the report says incomplete and the partial checkpoint stays."""
        cfg = self.cfg
        gen = torch.Generator().manual_seed(sub_seed(cfg.meta_seed, cfg.init))
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        state = KeyedState(self, opt, train_config_hash(cfg))
        run = ResumableRun(state, gen, self._resume_path, cfg.checkpoint_every_s)
        self.net.train()
        ema: float | None = None

        def stop(i: int) -> bool:
            spent = run.seconds()
            return bool((cfg.max_meta_seconds
                         and run.seconds_before + spent >= cfg.max_meta_seconds)
                        or (budget.seconds and spent >= budget.seconds))

        def step(i: int) -> Info:
            nonlocal ema
            loss = step_fn(data, gen)
            if not torch.isfinite(loss):
                raise DivergedError(f"{phase}: loss is {loss.item()} at step {i + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.steps_done = i + 1
            self.seconds_done = run.seconds_before + run.seconds()
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            value = ema
            return lambda: {"loss": value}

        report = train_steps(run, step_target(total, budget), step, stop, progress,
                             phase=phase)
        self.steps_done = run.steps
        self._weights_key = ""
        return report


class HeadOnlyLearner(TrainedNet):
    """A feature network `net` (frozen on the stream) and a linear stream `head`.

    Subclasses set `self.net`, implement `frozen_features(x)` (no grad), `_meta_step(pool,
    gen)` (one meta-training step, returns the outer loss) and `_pretrain_logits(x)`, and call
    `_finish_init()` at the end of `__init__`. The checkpoint (`state_dict`) is the net plus
    the steps trained ('train.steps'); the head is rebuilt for each stream.
    """

    cfg: HeadOnlyConfig
    feature_dim: int
    gradient_order: str = "first"
    cache_features: bool = True

    def _finish_init(self) -> None:
        if self.spec.task != "classification":
            raise HarnessError(f"{type(self).__name__} is for classification streams; "
                               "use oml-sine for regression")
        self.head = nn.Linear(self.feature_dim, self.spec.n_outputs)
        self.to(self.device)
        self.reset()

    # -- the stream ---------------------------------------------------------------------------

    def frozen_features(self, x: Tensor) -> Tensor:
        """The frozen part of the network: `net.features` (ANML's gated, OML's RLN)."""
        return self.net.features(x)

    def features(self, x: Tensor) -> Tensor:
        """Frozen features, memoized on (weights, input bytes) unless `cache_features` is
        False (the plain reference loop of benchmarks/bench_fast_eval.py)."""
        if not self.cache_features:
            return self._no_grad_features(x)
        if not self._weights_key:
            self._weights_key = weights_digest([*self.net.state_dict().values()])
        return FEATURES.get(self._weights_key, x, self._no_grad_features)

    def _no_grad_features(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            was = self.net.training
            self.net.eval()
            try:
                return self.frozen_features(x)
            finally:
                self.net.train(was)

    def reset(self) -> None:
        """Zero stream head and a fresh SGD optimizer (the post-meta-training state)."""
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
        self.opt = torch.optim.SGD(self.head.parameters(), lr=self.cfg.lr)
        self._seen_f: list[Tensor] = []
        self._seen_y: list[Tensor] = []
        self._n_fitted = 0

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        f = self.features(x)
        if self.cfg.iid and not self.training and sum(map(len, self._seen_y)) > self._n_fitted:
            self._fit_iid()
        return self.head(f)

    def _sgd_step(self, f: Tensor, y: Tensor) -> None:
        with torch.enable_grad():
            loss = F.cross_entropy(self.head(f), y)
            if not torch.isfinite(loss):
                raise DivergedError(f"stream loss is {loss.item()}; lower lr (now {self.cfg.lr})")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    def observe(self, x: Tensor, y: Tensor) -> None:
        f = self.features(x)
        if self.cfg.iid:  # the oracle only stores; it fits at evaluation time
            self._seen_f.append(f)
            self._seen_y.append(y.detach())
            return
        self._sgd_step(f, y)

    def _fit_iid(self) -> None:
        """The oracle: the output layer from zero on all samples seen so far, shuffled."""
        f, y = torch.cat(self._seen_f), torch.cat(self._seen_y)
        self.reset()  # zero head, fresh optimizer; it empties the store, so put it back
        self._seen_f, self._seen_y = [f], [y]
        gen = torch.Generator().manual_seed(sub_seed(self.cfg.meta_seed, "iid"))
        for _ in range(self.cfg.iid_epochs):
            order = torch.randperm(len(y), generator=gen).to(f.device)
            for i in range(0, len(y), self.cfg.iid_batch):
                idx = order[i : i + self.cfg.iid_batch]
                self._sgd_step(f[idx], y[idx])
        self._n_fitted = len(y)

    def set_task(self, task_id: int) -> None:
        """Task ids are ignored (single head)."""

    def sweep_features(self) -> Callable[[Tensor], Tensor] | None:
        """The frozen features, with which the harness runs the head-only stream for every lr
        at once (`harness.fast_eval.head_sgd_sweep`, the same records as the runner's loop);
        None for the i.i.d. oracle, which has no stream protocol."""
        return None if self.cfg.iid else self.features

    def describe(self) -> dict[str, str | float]:
        return {"variant": self.variant, "init": self.cfg.init, "meta_seed": self.cfg.meta_seed,
                "gradient_order": self.gradient_order if self.cfg.init == "meta" else "",
                "meta_train_steps": float(self.steps_done),
                "meta_train_seconds_total": round(self.seconds_done, 1),
                "eval_optimizer": "sgd", "eval_trains": "output layer only (zero init)",
                "eval_order": (f"iid oracle ({self.cfg.iid_epochs} epochs, batch "
                               f"{self.cfg.iid_batch})" if self.cfg.iid else "stream")}

    # -- (meta-)training ----------------------------------------------------------------------

    def _pretrain_logits(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _check_meta_pool(self, pool: Any) -> None:
        """The meta-training output layer must cover every meta-train class."""
        if pool.n_classes > self.cfg.n_meta_outputs:
            raise HarnessError(f"the meta-train pool has {pool.n_classes} classes but "
                               f"n_meta_outputs is {self.cfg.n_meta_outputs}; raise it")

    def _pretrain_step(self, pool: Any, gen: torch.Generator) -> Tensor:
        idx = pool.sample_random(self.cfg.pretrain_batch, gen)
        x, y = pool.x[idx].to(self.device), pool.y[idx].to(self.device)
        return F.cross_entropy(self._pretrain_logits(x), y)
