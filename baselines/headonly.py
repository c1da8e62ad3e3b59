"""What OML and ANML share: a frozen meta-learned feature network, a head-only meta-test, and
resumable, checkpointed meta-training.

Meta-test (the `omniglot-stream` protocol of OML/ANML): only a linear output layer learns, by
plain SGD on each incoming batch, starting from zeros (re-initialized once, for the stream's
classes); everything before it is frozen. The frozen features are memoized
(`harness.fast_eval.FEATURES`), and `lr_sweep` runs the whole head-only trajectory for many
learning rates at once.

Meta-training runs `_train_step` repeatedly under Adam, reports progress (loss, steps, ETA
from the CLI), and every `checkpoint_every_s` seconds writes the network, the optimizer state,
the sampler's RNG state, the step and the elapsed time to `BuildContext.resume_path`
(safetensors + JSON). A killed or interrupted run restarted with the same config continues
from the last checkpoint and ends in the same state as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.backbone import derive_seed
from harness import checkpoint
from harness.config import (
    BuildContext,
    Progress,
    check_choice,
    check_range,
    eval_field,
    train_config_hash,
)
from harness.errors import DivergedError, HarnessError
from harness.fast_eval import FEATURES, head_sgd_sweep, weights_digest
from harness.protocol import Budget, Experience, ScenarioSpec
from harness.runner import StreamRecord


@torch.no_grad()
def reset_rows(weight: Tensor, rows: Sequence[int], gen: torch.Generator) -> None:
    """Re-draw output rows (Kaiming normal, fan-in, ReLU gain, as the original code's reset)
    from `gen`, so a resumed meta-training draws the same values."""
    std = (2.0 / weight.shape[1]) ** 0.5
    for r in rows:
        weight[r] = torch.randn(weight.shape[1], generator=gen).to(weight) * std


@dataclass
class HeadOnlyConfig:
    """Fields every head-only meta-learner shares (meta-test and bookkeeping)."""

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

    KIND: ClassVar[str] = "meta"
    """Names the network family in checkpoint file names."""

    @property
    def SEEDED_TRAINING(self) -> bool:  # noqa: N802 (the harness's name for this flag)
        """meta_seed=-1: one checkpoint per run seed (the harness adds the seed to the key)."""
        return self.meta_seed < 0

    def for_seed(self, seed: int) -> Any:
        """The config a run with this seed trains: meta_seed=-1 becomes the seed."""
        return dataclasses.replace(self, meta_seed=int(seed)) if self.meta_seed < 0 else self

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


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], Any]:
    sd = opt.state_dict()
    tensors = {f"opt.{i}.{k}": (v if isinstance(v, Tensor) else torch.tensor(v))
               for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], groups: Any) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


class MetaTrainable(nn.Module):
    """A learner with a network `net` trained before the stream, resumably.

    The checkpoint (`state_dict`) is the net plus the steps trained ('train.steps').
    Subclasses set `self.net` and `self.cfg` and call `_train_loop`.
    """

    net: nn.Module
    steps_done: int = 0
    seconds_done: float = 0.0
    resumed_seconds = 0.0
    """Seconds of earlier, interrupted segments added back on resume (reported total)."""
    _resume_path: Path | None = None
    _weights_key: str = ""

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

    def _train_loop(self, pool: Any, total: int, lr: float,
                    step_fn: Callable[[Any, torch.Generator], Tensor], budget: Budget,
                    progress: Progress | None, phase: str) -> None:
        cfg = self.cfg
        key = train_config_hash(cfg)
        gen = torch.Generator().manual_seed(derive_seed(cfg.meta_seed, cfg.init))
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        step, elapsed_before = 0, 0.0
        path = self._resume_path
        if path is not None and checkpoint.exists(path):
            tensors, meta = checkpoint.load(path)
            if meta.get("train_key") == key:
                self.load_state_dict({k: v for k, v in tensors.items()
                                      if k.startswith(("net.", "train."))})
                _load_optimizer(opt, tensors, meta["param_groups"])
                gen.set_state(tensors["rng"])
                step, elapsed_before = int(meta["step"]), float(meta["elapsed_s"])
        self.resumed_seconds = elapsed_before
        self.net.train()
        t0 = last_save = time.perf_counter()
        ema = None

        def save() -> None:
            if path is None:
                return
            ot, groups = _optimizer_tensors(opt)
            checkpoint.save(path, {**self.state_dict(), **ot, "rng": gen.get_state()},
                            {"train_key": key, "step": step, "param_groups": groups,
                             "elapsed_s": elapsed_before + time.perf_counter() - t0})

        while step < total:
            spent = elapsed_before + time.perf_counter() - t0
            if ((cfg.max_meta_seconds and spent >= cfg.max_meta_seconds)
                    or (budget.seconds and time.perf_counter() - t0 >= budget.seconds)
                    or (budget.steps and step >= budget.steps)):
                break
            loss = step_fn(pool, gen)
            if not torch.isfinite(loss):
                raise DivergedError(f"{phase}: loss is {loss.item()} at step {step + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            self.steps_done = step
            self.seconds_done = elapsed_before + time.perf_counter() - t0
            ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
            if time.perf_counter() - last_save >= cfg.checkpoint_every_s:
                save()
                last_save = time.perf_counter()
            if progress is not None:
                progress(phase, step, total, {"loss": ema})
        self.steps_done = step
        self._weights_key = ""
        if path is not None:
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)


class HeadOnlyLearner(MetaTrainable):
    """A feature network `net` (frozen on the stream) and a linear stream `head`.

    Subclasses set `self.net`, implement `frozen_features(x)` (no grad), `_meta_step(gen)`
    (one meta-training step, returns the outer loss) and `_pretrain_logits(x)`, and call
    `_finish_init()` at the end of `__init__`. The checkpoint (`state_dict`) is the net plus
    the steps trained ('train.steps'); the head is rebuilt for each stream.
    """

    cfg: HeadOnlyConfig
    net: nn.Module
    feature_dim: int
    variant: str = ""
    gradient_order: str = "first"
    cache_features: bool = True

    def __init__(self, cfg: HeadOnlyConfig, ctx: BuildContext) -> None:
        super().__init__()
        self.cfg, self.spec = cfg, ctx.spec
        self.device = torch.device(ctx.device)
        self.needs_meta_train = cfg.init != "random"
        self._progress = ctx.progress
        self._resume_path: Path | None = ctx.resume_path
        self.steps_done = 0
        self._weights_key = ""

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
        gen = torch.Generator().manual_seed(derive_seed(self.cfg.meta_seed, "iid"))
        for _ in range(self.cfg.iid_epochs):
            order = torch.randperm(len(y), generator=gen).to(f.device)
            for i in range(0, len(y), self.cfg.iid_batch):
                idx = order[i : i + self.cfg.iid_batch]
                self._sgd_step(f[idx], y[idx])
        self._n_fitted = len(y)

    def set_task(self, task_id: int) -> None:
        """Task ids are ignored (single head)."""

    def lr_sweep(self, experiences: Sequence[Experience], spec: ScenarioSpec,
                 lrs: Sequence[float]) -> list[StreamRecord]:
        """The head-only stream for every lr at once (same records as the runner's loop)."""
        if self.cfg.iid:
            raise HarnessError("lr_sweep runs the stream protocol; the i.i.d. oracle has none")
        return head_sgd_sweep(self.features, experiences, spec, lrs, self.device)

    def describe(self) -> dict[str, str | float]:
        return {"variant": self.variant, "init": self.cfg.init, "meta_seed": self.cfg.meta_seed,
                "gradient_order": self.gradient_order if self.cfg.init == "meta" else "",
                "meta_train_steps": float(self.steps_done),
                "meta_train_seconds_total": round(self.seconds_done, 1),
                "eval_optimizer": "sgd", "eval_trains": "output layer only (zero init)",
                "eval_order": (f"iid oracle ({self.cfg.iid_epochs} epochs, batch "
                               f"{self.cfg.iid_batch})" if self.cfg.iid else "stream")}

    # -- (meta-)training ----------------------------------------------------------------------

    def _meta_step(self, pool: Any, gen: torch.Generator) -> Tensor:
        raise NotImplementedError

    def _pretrain_logits(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _meta_steps_and_lr(self) -> tuple[int, float]:
        return self.cfg.meta_steps, self.cfg.meta_lr

    def _check_meta_pool(self, pool: Any) -> None:
        """The meta-training output layer must cover every meta-train class."""
        if pool.n_classes > self.cfg.n_meta_outputs:
            raise HarnessError(f"the meta-train pool has {pool.n_classes} classes but "
                               f"n_meta_outputs is {self.cfg.n_meta_outputs}; raise it")

    def _pretrain_step(self, pool: Any, gen: torch.Generator) -> Tensor:
        idx = pool.sample_random(self.cfg.pretrain_batch, gen)
        x, y = pool.x[idx].to(self.device), pool.y[idx].to(self.device)
        return F.cross_entropy(self._pretrain_logits(x), y)

    def meta_train(self, pool: Any, budget: Budget, progress: Progress | None = None) -> None:
        """Meta-train (init='meta') or pre-train (init='pretrain') the net, resumably."""
        if self.cfg.init == "random":
            return
        if not hasattr(pool, "sample_random"):
            raise HarnessError(f"{type(self).__name__} needs a labelled meta-train pool, got "
                               f"{type(pool).__name__}")
        if self.cfg.init == "meta":
            total, lr = self._meta_steps_and_lr()
            step_fn: Callable[[Any, torch.Generator], Tensor] = self._meta_step
            phase = f"meta-train {self.variant}"
        else:
            total, lr = self.cfg.pretrain_steps, self.cfg.pretrain_lr
            step_fn, phase = self._pretrain_step, f"pretrain {self.variant}"
        self._train_loop(pool, total, lr, step_fn, budget, progress or self._progress, phase)
