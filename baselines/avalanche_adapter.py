"""`avalanche:<Strategy>`: an Avalanche strategy inside the harness's predict-then-observe loop.

Each `observe(x, y)` is one Avalanche `strategy.train(experience)` call on a one-batch
experience without task-boundary information: exactly Avalanche's own online (OCL) protocol,
`split_online_stream(..., experience_size=batch, shuffle=False, access_task_boundaries=False)`.
A strategy's per-experience step (EWC importances, LwF teacher, AGEM/GDumb memories) therefore
runs after every batch, as it does when Avalanche itself runs an online stream. `predict` is a
plain forward pass of the strategy's model in eval mode. The model is the baselines' backbone
plus a zero-initialized linear head, so `avalanche:Naive` and `finetune` start from identical
networks; `pretrain=true` pre-trains the features like every baseline.

Supported strategies: Naive, Replay, EWC, LwF, AGEM, GDumb. (GDumb, per batch, restarts from
the initial network and trains on its class-balanced memory, as Avalanche's GDumb does for
every experience.) Avalanche is imported only when a
learner is built (the `avalanche` extra).

One deviation, for AGEM only: Avalanche's AGEM keeps one memory per experience and samples
`sample_size // n_memories` patterns from each, which reaches 0 (and fails) once an online
stream has produced more than `sample_size` experiences. The adapter folds the memories into a
single one of at most `mem_size` random patterns whenever there are more than `sample_size` of
them (recorded as `agem_memory=folded` in the results).
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from baselines.backbone import BackboneConfig, FeatureLearner
from baselines.networks.modules import eval_mode
from harness.config import BuildContext, check_choice, check_range, eval_field
from harness.errors import DivergedError, HarnessError

STRATEGIES: tuple[str, ...] = ("Naive", "Replay", "EWC", "LwF", "AGEM", "GDumb")


@dataclass
class AvalancheConfig(BackboneConfig):
    """An Avalanche strategy (`avalanche:<Strategy>`) on the baselines' backbone + linear head."""

    strategy: str = "Naive"
    """Avalanche strategy class: Naive, Replay, EWC, LwF, AGEM or GDumb."""
    lr: float = eval_field(1e-3, "learning rate of the strategy's SGD optimizer")
    """Learning rate of plain SGD (no momentum), tuned by the runner; > 0."""
    train_epochs: int = eval_field(1, "Avalanche train_epochs per incoming batch")
    """Passes over each incoming batch (Avalanche `train_epochs`); >= 1."""
    mem_size: int = eval_field(200, "memory size of Replay / GDumb / AGEM")
    """Replay and GDumb buffer size; AGEM's total memory cap (see module docstring)."""
    ewc_lambda: float = eval_field(1.0, "EWC penalty weight")
    """EWC: weight of the quadratic penalty; >= 0."""
    ewc_mode: Literal["online", "separate"] = eval_field("online", "EWC mode")
    """EWC: 'online' (one decayed importance; the only bounded choice per batch) or 'separate'."""
    ewc_decay: float = eval_field(0.99, "online EWC decay factor")
    """EWC online: decay of the accumulated importance per experience (= per batch)."""
    lwf_alpha: float = eval_field(1.0, "LwF distillation weight")
    """LwF: weight of the distillation loss; >= 0."""
    lwf_temperature: float = eval_field(2.0, "LwF softmax temperature")
    """LwF: softmax temperature of the distillation; > 0."""
    agem_patterns_per_exp: int = eval_field(1, "AGEM patterns stored per experience (batch)")
    """AGEM: patterns kept from each experience (= each incoming batch); >= 1."""
    agem_sample_size: int = eval_field(64, "AGEM reference-gradient sample size")
    """AGEM: memory patterns per reference gradient; >= 1."""

    PRESETS: ClassVar[dict[str, dict]] = {"quick": {}}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown Avalanche strategy {self.strategy!r}; the adapter "
                             f"supports {', '.join(STRATEGIES)} (e.g. avalanche:EWC)")
        check_range(self, "lr", gt=0)
        check_range(self, "train_epochs", "mem_size", "agem_patterns_per_exp",
                    "agem_sample_size", ge=1)
        check_range(self, "ewc_lambda", "lwf_alpha", ge=0)
        check_range(self, "lwf_temperature", gt=0)
        check_choice(self, "ewc_mode", ("online", "separate"))
        check_range(self, "ewc_decay", gt=0, le=1)

    def build(self, ctx: BuildContext) -> AvalancheLearner:
        if ctx.spec.task != "classification":
            raise HarnessError("the Avalanche adapter supports classification scenarios only")
        return AvalancheLearner(self, ctx)


def make_strategy(cfg: AvalancheConfig, model: nn.Module, device: torch.device,
                  evaluator: Any = None, train_mb_size: int = 1) -> Any:
    """The Avalanche strategy of `cfg` over `model` (plain SGD, cross-entropy, quiet).

    `evaluator`: an Avalanche EvaluationPlugin (default: one with no metrics and no loggers).
    `train_mb_size`: Avalanche's minibatch size; the adapter sets it to each incoming batch's
    size, so one observed batch is one SGD step (per epoch).
    """
    try:
        from avalanche.training import AGEM, EWC, GDumb, LwF, Naive, Replay  # noqa: PLC0415
        from avalanche.training.plugins import EvaluationPlugin  # noqa: PLC0415
    except ImportError:
        raise HarnessError("avalanche:<Strategy> learners need avalanche-lib: "
                           "pip install -e '.[avalanche]'") from None
    if evaluator is None:
        with warnings.catch_warnings():  # "No loggers specified": none are wanted here
            warnings.simplefilter("ignore", UserWarning)
            evaluator = EvaluationPlugin()
    common = dict(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=cfg.lr),
                  criterion=nn.CrossEntropyLoss(), train_mb_size=train_mb_size,
                  train_epochs=cfg.train_epochs, eval_mb_size=512, device=device,
                  evaluator=evaluator)
    s = cfg.strategy
    if s == "Naive":
        return Naive(**common)
    if s == "Replay":
        return Replay(mem_size=cfg.mem_size, **common)
    if s == "GDumb":
        return GDumb(mem_size=cfg.mem_size, **common)
    if s == "EWC":
        return EWC(ewc_lambda=cfg.ewc_lambda, mode=cfg.ewc_mode,
                   decay_factor=cfg.ewc_decay if cfg.ewc_mode == "online" else None, **common)
    if s == "LwF":
        return LwF(alpha=cfg.lwf_alpha, temperature=cfg.lwf_temperature, **common)
    return AGEM(patterns_per_exp=cfg.agem_patterns_per_exp, sample_size=cfg.agem_sample_size,
                **common)


class _Arena:
    """Incoming batches as subsets of a few large Avalanche datasets.

    Avalanche flattens concatenations (replay buffers) fast only when they are subsets of the
    same dataset; one fresh dataset per batch makes every buffer operation scan hundreds of
    datasets. Batches are therefore copied into preallocated tensors (capacity doubling, so a
    stream uses O(log n) base datasets) and handed out as subsets. Rows are written before the
    subset is made and never changed afterwards, so each subset sees exactly its batch.
    """

    def __init__(self) -> None:
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.targets: list[int] = []
        self.base: Any = None
        self.n = 0

    def add(self, x: Tensor, y: Tensor) -> Any:
        from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

        b = len(x)
        if self.x is None or self.n + b > len(self.x) or self.x.shape[1:] != x.shape[1:]:
            cap = max(256, 2 * b, 2 * (len(self.x) if self.x is not None else 0))
            self.x = torch.zeros((cap, *x.shape[1:]), dtype=x.dtype)
            self.y = torch.zeros(cap, dtype=torch.long)
            # A plain list: Avalanche keeps a reference to it (a tensor would be copied).
            self.targets = [0] * cap
            self.base = _make_taskaware_tensor_classification_dataset(
                self.x, self.y, targets=self.targets, task_labels=0)
            self.n = 0
        assert self.y is not None
        self.x[self.n : self.n + b] = x
        self.y[self.n : self.n + b] = y
        self.targets[self.n : self.n + b] = y.tolist()
        ds = self.base.subset(list(range(self.n, self.n + b)))
        self.n += b
        return ds


class AvalancheLearner(FeatureLearner):
    """Backbone + linear head trained by an Avalanche strategy, one `train()` per batch."""

    cfg: AvalancheConfig

    def _reset_stream(self) -> None:
        # The strategy must not be a registered submodule (it holds its own model reference).
        self.__dict__["model"] = nn.Sequential(self.features, self.head)
        self.__dict__["strategy"] = make_strategy(self.cfg, self.model, self.device)
        self._n_obs = 0
        self._arena = _Arena()

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        with eval_mode(self.features), eval_mode(self.head):
            return self.head(self.features(x))

    def observe(self, x: Tensor, y: Tensor) -> None:
        from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience
        from avalanche.benchmarks.scenarios.generic_scenario import EagerCLStream

        ds = self._arena.add(x.detach().cpu(), y.detach().cpu())
        # A one-experience stream gives the experience the origin_stream Avalanche expects.
        stream = EagerCLStream("train_stream", [DatasetExperience(dataset=ds)])
        exp = stream[0]
        exp.current_experience = self._n_obs
        strategy = self.strategy
        strategy.train_mb_size = len(x)
        was = self.features.training
        # Avalanche 0.6 warns on every call of its own deprecated storage-policy API (and resets
        # the warning filters to do so); record=True keeps those warnings out of the output.
        with torch.enable_grad(), warnings.catch_warnings(record=True):
            # shuffle=False: the batch is used as it came (its order is irrelevant to one
            # step, and no RNG is drawn, so runs are reproducible and match native Avalanche).
            strategy.train(exp, shuffle=False)
        if strategy.model is not self.model:
            # Some plugins replace the strategy's model (GDumb restarts from a copy of the
            # initial one every experience); predict and checkpoints follow its weights.
            self.model.load_state_dict(strategy.model.state_dict())
        self.features.train(was)
        self.head.train(was)
        self._n_obs += 1
        loss = getattr(strategy, "loss", None)
        if isinstance(loss, Tensor) and not torch.isfinite(loss).all():
            raise DivergedError(f"training loss is {loss.item()}; lower lr (now {self.cfg.lr})")
        if self.cfg.strategy == "AGEM":
            self._fold_agem_memory()

    def _fold_agem_memory(self) -> None:
        """See the module docstring: one memory of <= mem_size patterns past sample_size."""
        plugin = next(p for p in self.strategy.plugins if type(p).__name__ == "AGEMPlugin")
        if len(plugin.buffers) <= plugin.sample_size:
            return
        from avalanche.benchmarks.utils.data_loader import GroupBalancedInfiniteDataLoader
        from avalanche.benchmarks.utils.utils import concat_datasets

        merged = concat_datasets(plugin.buffers)
        if len(merged) > self.cfg.mem_size:
            keep = random.Random(self.seed + self._n_obs).sample(range(len(merged)),
                                                                 self.cfg.mem_size)
            merged = merged.subset(sorted(keep))
        plugin.buffers = [merged]
        plugin.buffer_dataloader = GroupBalancedInfiniteDataLoader(
            plugin.buffers, batch_size=plugin.sample_size, num_workers=0, pin_memory=False,
            persistent_workers=False)
        plugin.buffer_dliter = iter(plugin.buffer_dataloader)

    def describe(self) -> dict[str, Any]:
        """Provenance columns for the results."""
        import avalanche

        out = {"avalanche_version": avalanche.__version__,
               "avalanche_strategy": self.cfg.strategy}
        if self.cfg.strategy == "AGEM":
            out["agem_memory"] = f"folded past {self.cfg.agem_sample_size} batches"
        return out
