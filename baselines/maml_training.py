"""How the MAML family meta-trains (`MAMLLearner.meta_train`): meta-batches of tasks from the
scenario's episode sampler, the meta-gradient through the inner loop (`meta_batch_loss`), Adam
on every meta-parameter with MAML++'s optional cosine schedule, eagerly or as a replayed CUDA
graph (`cuda_graph`), resumably from a partial checkpoint (baselines.metakit.resumable).

A time limit (`time_limit_s`, `budget.seconds`) that stops it early leaves the partial
checkpoint, which the next run of the config resumes, and reports the training incomplete.
MAML++'s ensemble validates after meta-steps through the learner's `_after_step` hook; it runs
eagerly between meta-steps, outside any CUDA graph, and draws nothing from the task sampler's
generator, so the meta-weights are those of a run without ensembling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from baselines.metakit.graphed import GraphedStep
from baselines.metakit.resumable import Info, step_target, stop_after, time_limit, train_steps
from harness.capabilities import MetaTrainReport, Validate
from harness.config import Progress
from harness.errors import DivergedError, HarnessError
from harness.protocol import Budget

if TYPE_CHECKING:
    from baselines.maml import MAMLLearner


def meta_train(learner: MAMLLearner, data: Any, budget: Budget, progress: Progress | None,
               validate: Validate | None) -> MetaTrainReport:
    """Meta-train `learner` on tasks from `data.sample_batch` (see the module docstring)."""
    cfg = learner.cfg
    tasks = learner._episodes(data)
    learner._check_validate(validate)
    progress = progress or learner.progress
    total = step_target(cfg.meta_steps, budget)
    limit = time_limit(cfg.time_limit_s, budget)
    g = learner._task_generator()
    opt, sched = outer_optimizer(learner, total)
    run = learner._resumable(opt, sched, g)
    step = meta_step(learner, tasks, g, opt, sched, cfg.train_queries or tasks.shots)
    return train_steps(run, total, step, stop_after(run, limit), progress, every=10,
                       after=learner._after_step(total, validate, progress))


def outer_optimizer(learner: MAMLLearner, total: int) -> tuple[torch.optim.Optimizer, Any]:
    """Adam on every meta-parameter, and the cosine schedule over `total` steps (or None)."""
    cfg = learner.cfg
    on_cuda = torch.device(learner.device).type == "cuda"
    if cfg.cuda_graph and not on_cuda:
        raise HarnessError(f"{cfg.NAME}: cuda_graph needs --device cuda (got "
                           f"{learner.device}); drop cuda_graph=true on this device")
    # Capturable Adam (its step count on the GPU) on any CUDA run, so that an eager run and
    # a graphed one do the same arithmetic. Graphed, the learning rate is a device tensor,
    # which the cosine schedule fills in place, so the captured Adam step reads it.
    lr = torch.tensor(cfg.meta_lr, device=learner.device) if cfg.cuda_graph else cfg.meta_lr
    opt = torch.optim.Adam(learner.parameters(), lr=lr, capturable=on_cuda)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, total, cfg.meta_lr / 100)
             if cfg.cosine else None)
    return opt, sched


def meta_step(learner: MAMLLearner, tasks: Any, g: torch.Generator,
              opt: torch.optim.Optimizer, sched: Any, queries: int) -> Callable[[int], Info]:
    """Meta-step i: a meta-batch of tasks, the meta-gradient, an Adam update; graphed
    (`cuda_graph`) where no multi-step loss applies (a change of gradient order re-captures)."""
    cfg = learner.cfg

    def update(batch: list[Tensor], second: bool, w: list[float] | None
               ) -> tuple[Tensor, Tensor]:
        opt.zero_grad(set_to_none=True)
        loss, score = learner.meta_batch_loss(*batch, second, w)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(learner.parameters(), cfg.grad_clip)
        opt.step()
        return loss.detach(), score.detach()

    graph: GraphedStep | None = None

    def step(i: int) -> Info:
        nonlocal graph
        batch = [t.to(learner.device) for t in
                 tasks.sample_batch(cfg.meta_batch, g, queries=queries)]
        second = not cfg.first_order and i >= cfg.da_steps
        w = learner.msl_weights(i)
        if cfg.cuda_graph and w is None:
            if graph is None or graph.second != second:
                graph = GraphedStep(update, opt, batch, second)
            loss, score = graph(batch)
        else:
            loss, score = update(batch, second, w)
        if not torch.isfinite(loss):
            raise DivergedError(f"{cfg.NAME}: meta-training loss is {loss.item()} at "
                                f"step {i}; lower meta_lr or inner_lr")
        if sched is not None:
            sched.step()
        return lambda: {"loss": float(loss),
                        "mse" if learner.regression else "acc": float(score)}

    return step
