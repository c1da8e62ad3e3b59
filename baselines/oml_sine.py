"""OML on incremental sine regression (Javed & White 2019, section 4.1).

Network: 9 Linear layers with ReLU, 11 -> 300 -> 300 -> 300 -> 300 -> 300 -> 900 (the RLN,
six layers) | 900 -> 300 -> 300 -> 1 (the PLN, three layers): 996,601 parameters. The input is
z and the one-hot slot of the function (`sine-incremental`).

Meta-training: each outer step draws a fresh sequence of 10 functions (the scenario's
`TaskSampler`); the PLN (fast) is trained through them in order, 40 SGD steps of batch 8 per
function at lr 0.003; the outer loss is the MSE at the adapted PLN on held-out points of all
10 functions; Adam 1e-4 on RLN and PLN.

Meta-test: the RLN is frozen and the PLN, starting from its meta-learned weights, learns by
SGD on each incoming batch (lr chosen by the runner). `init='pretrain'` instead trains the
whole network supervised on random points of random sequences (Pretrain & Transfer);
`init='random'` leaves it at its initialization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from baselines.headonly import HeadOnlyConfig, TrainedNet
from baselines.networks.oml_anml import SineNet, kaiming_init
from harness.config import BuildContext, check_choice, check_range
from harness.errors import DivergedError, HarnessError
from harness.meta import functional, inner_loop
from harness.protocol import TaskSampler


@dataclass
class OMLSineConfig(HeadOnlyConfig):
    """OML incremental-sine recipe (defaults: the paper)."""

    width: int = 300
    """Hidden width (paper 300); >= 1."""
    rep: int = 900
    """Representation size (paper 900); >= 1."""
    inner_lr: float = 0.003
    """SGD learning rate of the inner loop; > 0."""
    steps_per_function: int = 40
    """Inner SGD steps (batches) per function; >= 1."""
    query_per_function: int = 20
    """Held-out points per function in the outer loss; >= 1."""
    weight_init: Literal["kaiming", "torch"] = "kaiming"
    """'kaiming': He-normal weights, zero biases, as the authors' code; 'torch': PyTorch's
    default."""

    KIND: ClassVar[str] = "oml-sine"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "quick": {"order": "first", "meta_steps": 1000, "pretrain_steps": 2000},
        "long": {"order": "first", "meta_steps": 20000, "pretrain_steps": 20000},
        "paper": {},
    }

    def __post_init__(self) -> None:
        self._check_common()
        check_range(self, "width", "rep", "steps_per_function", "query_per_function", ge=1)
        check_choice(self, "weight_init", ("kaiming", "torch"))

    def build(self, ctx: BuildContext) -> OMLSineLearner:
        return OMLSineLearner(self.for_seed(ctx.seed), ctx)


class OMLSineLearner(TrainedNet):
    """Frozen RLN, PLN trained online by SGD from its (meta-)trained weights."""

    cfg: OMLSineConfig
    variant = "oml-sine"
    _data_type: ClassVar[type] = TaskSampler
    _data_name: ClassVar[str] = "a task sampler"

    def __init__(self, cfg: OMLSineConfig, ctx: BuildContext) -> None:
        if ctx.spec.task != "regression" or len(ctx.spec.input_shape) != 1:
            raise HarnessError("oml-sine is for vector regression scenarios (sine-incremental)")
        if ctx.spec.n_outputs != 1:
            raise HarnessError(f"oml-sine predicts one value; this scenario has "
                               f"{ctx.spec.n_outputs} outputs")
        super().__init__(cfg, ctx)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.meta_seed)
            self.net = SineNet(ctx.spec.input_shape[0], cfg.width, cfg.rep)
            if cfg.weight_init == "kaiming":
                kaiming_init(self.net)
        self._fm = functional(self.net.pln, "")
        self.to(self.device)
        self._save_reset_point()

    def _save_reset_point(self) -> None:
        self._pln0 = {k: v.detach().clone() for k, v in self.net.pln.state_dict().items()}
        self.reset()

    def reset(self) -> None:
        """Back to the (meta-)trained PLN with a fresh SGD optimizer."""
        self.net.pln.load_state_dict(self._pln0)
        self.opt = torch.optim.SGD(self.net.pln.parameters(), lr=self.cfg.lr)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        result = super().load_state_dict(state_dict, strict, assign)
        self._save_reset_point()
        return result

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.net(x)

    def observe(self, x: Tensor, y: Tensor) -> None:
        with torch.no_grad():
            rep = self.net.rln(x)
        with torch.enable_grad():
            loss = F.mse_loss(self.net.pln(rep), y.reshape(-1, 1).to(rep.dtype))
            if not torch.isfinite(loss):
                raise DivergedError(f"stream loss is {loss.item()}; lower lr (now {self.cfg.lr})")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    def set_task(self, task_id: int) -> None:
        """Task ids are ignored (the input carries the function's slot)."""

    def describe(self) -> dict[str, str | float]:
        return {"variant": "oml-sine", "init": self.cfg.init,
                "gradient_order": self.cfg.order if self.cfg.init == "meta" else "",
                "meta_train_steps": float(self.steps_done), "eval_optimizer": "sgd",
                "eval_trains": "PLN (RLN frozen)"}

    # -- (meta-)training ------------------------------------------------------------------------

    def _task(self, sampler: Any, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A fresh function sequence: trajectory batches [S, 8, d] and query points."""
        exps = sampler.sample(gen)
        k, q = self.cfg.steps_per_function, self.cfg.query_per_function
        xs, ys, xq, yq = [], [], [], []
        for e in exps:
            n = min(k * e.batch_size, e.n_train)
            xs.append(e.x[:n].reshape(-1, e.batch_size, e.x.shape[1]))
            ys.append(e.y[:n].reshape(-1, e.batch_size, 1))
            xq.append(e.x_test[:q])
            yq.append(e.y_test[:q])
        dev = self.device
        return (torch.cat(xs).to(dev), torch.cat(ys).to(dev), torch.cat(xq).to(dev),
                torch.cat(yq).to(dev))

    def _meta_step(self, sampler: Any, gen: torch.Generator) -> Tensor:
        xs, ys, xq, yq = self._task(sampler, gen)
        first = self.cfg.order == "first"
        rep = self.net.rln(xs.reshape(-1, xs.shape[-1])).reshape(*xs.shape[:2], -1)
        fast, slow = self._fm.params()
        adapted = inner_loop(self._fm, fast, slow, rep.detach() if first else rep, ys,
                             loss_fn=F.mse_loss, lr=self.cfg.inner_lr, first_order=first)
        return F.mse_loss(self._fm(adapted, slow, self.net.rln(xq)), yq)

    def _pretrain_step(self, sampler: Any, gen: torch.Generator) -> Tensor:
        xs, ys, _, _ = self._task(sampler, gen)
        x, y = xs.reshape(-1, xs.shape[-1]), ys.reshape(-1, 1)
        idx = torch.randperm(len(x), generator=gen)[: self.cfg.pretrain_batch]
        return F.mse_loss(self.net(x[idx]), y[idx])

    def _trained(self) -> None:
        """The stream starts from the (meta-)trained PLN."""
        self._save_reset_point()
