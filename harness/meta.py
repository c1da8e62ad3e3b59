"""Functional inner loops over explicit parameter dicts (torch.func), shared by OML, ANML and
the MAML family (docs/design.md D4, D8).

A model is used through a `FunctionalModel`: the module plus the names of its *fast*
parameters (adapted in the inner loop); every other parameter is *slow* (changed only by the
outer optimizer). Parameters travel as plain dicts `{name: Tensor}`, so an inner loop is an
ordinary function of tensors: it composes with `torch.func.vmap` (a batch of tasks) and with
outer autograd (the meta-gradient).

    fm = functional(net, fast=lambda name: name.startswith("head."))
    fast, slow = fm.params()                      # live nn.Parameters: grads reach them
    adapted = inner_loop(fm, fast, slow, xs, ys, loss_fn=F.cross_entropy, lr=0.1)
    outer = F.cross_entropy(fm(adapted, slow, x_query), y_query)
    outer.backward()                              # meta-gradient into fast-init and slow

Gradient order:
  - `first_order=False` (second order, MAML): inner gradients are taken with
    `torch.func.grad` on the live tensors, so the meta-gradient differentiates through them
    (Hessian-vector products included).
  - `first_order=True` (FOMAML / OML-2019 / feasibility ANML): inner gradients are computed on
    detached copies of fast and slow weights and enter the update as constants; the update
    `fast - lr * g` itself stays in the graph, so d(adapted)/d(fast) = I, the slow weights get
    the outer loss's gradient at the adapted weights, and a learnable `lr` still gets its
    gradient (-g . dL/dadapted).

Learning rates (`lr`): a float or scalar Tensor for all parameters; a 1-D Tensor of length
`steps` (one rate per step); or a Mapping from fast-parameter name to either of those
(per-parameter, optionally per-step, as in Meta-SGD / MAML++). A Tensor with requires_grad
is learned by the outer loop.

Inputs (`x`, `xs`): a Tensor, or a tuple of Tensors passed to the module as positional
arguments (e.g. ANML's images and their precomputed gates); `inner_loop` indexes each
member of the tuple by step.

Buffers (e.g. BatchNorm running statistics) are passed to every call unchanged. Modules
whose forward writes buffers (BatchNorm in train mode with running statistics) cannot be
vmapped: use eval mode, `track_running_stats=False`, or a per-sample normalization.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad

Params = dict[str, Tensor]
Inputs = Tensor | tuple[Tensor, ...]
LossFn = Callable[[Tensor, Tensor], Tensor]
LR = float | Tensor | Mapping[str, float | Tensor]

__all__ = [
    "FunctionalModel",
    "Inputs",
    "Params",
    "adapt",
    "detach_params",
    "functional",
    "inner_grads",
    "inner_loop",
    "inner_step",
    "lr_for",
    "sgd_update",
]


@dataclass(frozen=True)
class FunctionalModel:
    """A module called functionally with explicit fast and slow parameter dicts."""

    module: nn.Module
    fast_names: tuple[str, ...]
    """Names (as in `named_parameters()`) of the parameters adapted in the inner loop."""

    @property
    def slow_names(self) -> tuple[str, ...]:
        fast = set(self.fast_names)
        return tuple(n for n, _ in self.module.named_parameters() if n not in fast)

    def params(self) -> tuple[Params, Params]:
        """The module's live parameters as (fast, slow) dicts; gradients reach the module."""
        fast = set(self.fast_names)
        named = dict(self.module.named_parameters())
        return ({n: named[n] for n in self.fast_names},
                {n: p for n, p in named.items() if n not in fast})

    def buffers(self) -> Params:
        return dict(self.module.named_buffers())

    def __call__(self, fast: Mapping[str, Tensor], slow: Mapping[str, Tensor], *args: Tensor,
                 **kwargs: Tensor) -> Tensor:
        """`module(*args)` with parameters `slow | fast` (and the module's buffers)."""
        return functional_call(self.module, {**self.buffers(), **slow, **fast}, args, kwargs,
                               strict=True)


def functional(module: nn.Module, fast: Callable[[str], bool] | Iterable[str] | str
               ) -> FunctionalModel:
    """Declare which parameters of `module` are fast.

    Args:
        module: the network.
        fast: a predicate on parameter names, an iterable of names, or a name prefix
            (e.g. 'head.'; '' makes every parameter fast).

    Raises:
        ValueError: a named parameter does not exist.
    """
    names = [n for n, _ in module.named_parameters()]
    if isinstance(fast, str):
        chosen = [n for n in names if n.startswith(fast)]
    elif callable(fast):
        chosen = [n for n in names if fast(n)]
    else:
        wanted = list(fast)
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ValueError(f"no parameters named {unknown} in the module (it has {names})")
        chosen = [n for n in names if n in set(wanted)]
    return FunctionalModel(module, tuple(chosen))


def detach_params(params: Mapping[str, Tensor]) -> Params:
    return {k: v.detach() for k, v in params.items()}


def lr_for(lr: LR, name: str, step: int | None = None) -> float | Tensor:
    """The learning rate of parameter `name` at inner step `step` (see module docstring)."""
    if isinstance(lr, Mapping):
        if name not in lr:
            raise KeyError(f"per-parameter lr has no entry for {name!r} (has {sorted(lr)})")
        lr = lr[name]
    if isinstance(lr, Tensor) and lr.ndim >= 1:
        if step is None:
            raise ValueError("a per-step lr (1-D tensor) needs the step index")
        if step >= len(lr):
            raise IndexError(f"per-step lr has {len(lr)} entries, step {step} asked for")
        return lr[step]
    return lr


def sgd_update(params: Mapping[str, Tensor], grads: Mapping[str, Tensor], lr: LR,
               step: int | None = None, fused: bool = False) -> Params:
    """One plain SGD step: `p - lr * g` for every parameter (differentiable).

    `fused` (a float `lr` only): one `torch._foreach_add(params, grads, alpha=-lr)` call for all
    parameters instead of two operators per parameter. It computes `p + (-lr) * g` in one
    kernel, which does not round as `p - lr * g` does (docs/profile-meta-step.md).
    """
    if fused and isinstance(lr, float):
        names = list(params)
        new = torch._foreach_add([params[k] for k in names], [grads[k] for k in names],
                                 alpha=-lr)
        return dict(zip(names, new, strict=True))
    return {k: p - lr_for(lr, k, step) * grads[k] for k, p in params.items()}


def _args(x: Inputs) -> tuple[Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)


def inner_grads(fm: FunctionalModel, fast: Mapping[str, Tensor], slow: Mapping[str, Tensor],
                x: Inputs, y: Tensor, loss_fn: LossFn, first_order: bool = False
                ) -> tuple[Params, Tensor]:
    """Gradient of `loss_fn(fm(fast, slow, x), y)` with respect to `fast`, and the loss.

    Second order: the gradient is a differentiable function of fast and slow. First order:
    it is computed on detached copies and carries no graph.
    """
    if first_order:
        fast, slow = detach_params(fast), detach_params(slow)
    if _autograd_applies(fast, first_order):
        return _autograd_grads(fm, fast, slow, x, y, loss_fn, first_order)

    def loss_of(f: Params) -> tuple[Tensor, Tensor]:
        loss = loss_fn(fm(f, slow, *_args(x)), y)
        return loss, loss.detach()

    g, loss = grad(loss_of, has_aux=True)(dict(fast))
    if first_order:
        g = detach_params(g)
    return g, loss


def _autograd_applies(fast: Mapping[str, Tensor], first_order: bool) -> bool:
    """Whether plain `torch.autograd.grad` gives the same gradients as `torch.func.grad`
    with less per-call overhead: outside any torch.func transform (vmap, grad), and for second
    order only where grad mode is on and every fast tensor is in the graph."""
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return False
    return first_order or (torch.is_grad_enabled()
                           and all(t.requires_grad for t in fast.values()))


def _autograd_grads(fm: FunctionalModel, fast: Mapping[str, Tensor],
                    slow: Mapping[str, Tensor], x: Inputs, y: Tensor, loss_fn: LossFn,
                    first_order: bool) -> tuple[Params, Tensor]:
    """`inner_grads` by `torch.autograd.grad` (first order: on detached leaf copies, without a
    graph; second order: with `create_graph`). Measured bit-identical to the torch.func path
    (benchmarks/bench_meta_step.py compares the weights after training)."""
    with torch.enable_grad():
        if first_order:
            fast = {k: v.requires_grad_() for k, v in fast.items()}
        loss = loss_fn(fm(fast, slow, *_args(x)), y)
        g = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
    return dict(zip(fast, g, strict=True)), loss.detach()


def inner_step(fm: FunctionalModel, fast: Mapping[str, Tensor], slow: Mapping[str, Tensor],
               x: Inputs, y: Tensor, *, loss_fn: LossFn, lr: LR, first_order: bool = False,
               step: int | None = None, fused: bool = False) -> Params:
    """One SGD step of the fast weights on the batch (x, y): the new fast dict."""
    g, _ = inner_grads(fm, fast, slow, x, y, loss_fn, first_order)
    return sgd_update(fast, g, lr, step, fused)


def inner_loop(fm: FunctionalModel, fast: Mapping[str, Tensor], slow: Mapping[str, Tensor],
               xs: Inputs, ys: Tensor, *, loss_fn: LossFn, lr: LR, first_order: bool = False,
               fused: bool = False) -> Params:
    """Sequential SGD over a trajectory (OML/ANML): step i uses the batch (xs[i], ys[i]).

    `xs` (each member, if a tuple) has a leading step dimension: e.g. [20, 1, C, H, W] for 20
    single-image steps. `fused`: as in `sgd_update`.
    """
    members = _args(xs)
    if any(len(t) != len(ys) for t in members):
        raise ValueError(f"xs and ys differ in number of steps "
                         f"({[len(t) for t in members]} vs {len(ys)})")
    out = dict(fast)
    for i in range(len(ys)):
        x = tuple(t[i] for t in members) if isinstance(xs, tuple) else xs[i]
        out = inner_step(fm, out, slow, x, ys[i], loss_fn=loss_fn, lr=lr,
                         first_order=first_order, step=i, fused=fused)
    return out


def adapt(fm: FunctionalModel, fast: Mapping[str, Tensor], slow: Mapping[str, Tensor],
          x: Tensor, y: Tensor, *, steps: int, loss_fn: LossFn, lr: LR,
          first_order: bool = False) -> Params:
    """`steps` SGD steps on the same batch (x, y) (MAML's inner loop on a support set).

    Usable under `torch.func.vmap` over a batch of tasks (x, y with a leading task dim).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    out = dict(fast)
    for i in range(steps):
        out = inner_step(fm, out, slow, x, y, loss_fn=loss_fn, lr=lr,
                         first_order=first_order, step=i)
    return out
