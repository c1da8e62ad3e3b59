"""harness.meta: inner steps against hand-computed SGD, meta-gradients against autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.meta import adapt, functional, inner_loop, inner_step, lr_for, sgd_update


def tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def data(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def test_one_inner_step_is_hand_computed_sgd() -> None:
    lin = nn.Linear(3, 2).double()
    fm = functional(lin, "")
    fast, slow = fm.params()
    x, t = data(1, 5, 3), data(2, 5, 2)
    new = inner_step(fm, fast, slow, x, t, loss_fn=F.mse_loss, lr=0.3)
    # loss = mean((xW^T + b - t)^2) over 10 entries: dL/dout = 2 (out - t) / 10.
    W, b = lin.weight.detach(), lin.bias.detach()
    d_out = 2 * (x @ W.T + b - t) / t.numel()
    torch.testing.assert_close(new["weight"], W - 0.3 * d_out.T @ x)
    torch.testing.assert_close(new["bias"], b - 0.3 * d_out.sum(0))


def test_functional_call_matches_module_and_split() -> None:
    net = tiny_net()
    fm = functional(net, lambda n: n.startswith("2."))
    assert fm.fast_names == ("2.weight", "2.bias")
    assert fm.slow_names == ("0.weight", "0.bias")
    fast, slow = fm.params()
    x = data(3, 6, 3)
    torch.testing.assert_close(fm(fast, slow, x), net(x))
    with pytest.raises(ValueError, match="no parameters named"):
        functional(net, ["head.weight"])


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_reaches_slow_weights(first_order: bool) -> None:
    net = tiny_net()
    fm = functional(net, "2.")
    fast, slow = fm.params()
    xs, ys = data(4, 5, 1, 3), torch.tensor([[0], [1], [0], [1], [1]])
    adapted = inner_loop(fm, fast, slow, xs, ys, loss_fn=F.cross_entropy, lr=0.5,
                         first_order=first_order)
    F.cross_entropy(fm(adapted, slow, data(5, 8, 3)), torch.arange(8) % 2).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def reference_meta_grads(first_order: bool, lr: float = 0.4, steps: int = 3):
    """Unrolled loop with torch.autograd.grad(create_graph=...) on module copies."""
    net = tiny_net()
    w1, b1, w2, b2 = (p for p in net.parameters())
    xs, ys = data(6, steps, 4, 3), data(7, steps, 4, 2)
    xq, yq = data(8, 6, 3), data(9, 6, 2)

    def f(x, a, c):
        return torch.tanh(x @ w1.T + b1) @ a.T + c

    a, c = w2, b2
    for i in range(steps):
        loss = F.mse_loss(f(xs[i], a, c), ys[i])
        ga, gc = torch.autograd.grad(loss, (a, c), create_graph=not first_order)
        a, c = a - lr * ga, c - lr * gc
    F.mse_loss(f(xq, a, c), yq).backward()
    return {n: p.grad.clone() for n, p in net.named_parameters()}, (xs, ys, xq, yq)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_unrolled_autograd(first_order: bool, fused: bool) -> None:
    expected, (xs, ys, xq, yq) = reference_meta_grads(first_order)
    net = tiny_net()
    fm = functional(net, "2.")
    fast, slow = fm.params()
    adapted = inner_loop(fm, fast, slow, xs, ys, loss_fn=F.mse_loss, lr=0.4,
                         first_order=first_order, fused=fused)
    F.mse_loss(fm(adapted, slow, xq), yq).backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-10, atol=1e-12)


def test_second_and_first_order_differ() -> None:
    so, _ = reference_meta_grads(False)
    fo, _ = reference_meta_grads(True)
    assert not torch.allclose(so["0.weight"], fo["0.weight"])


def test_adapt_under_vmap_equals_per_task_loop() -> None:
    net = tiny_net()
    fm = functional(net, "")
    fast, slow = fm.params()
    xs, ys = data(10, 4, 5, 3), data(11, 4, 5, 2)
    xq, yq = data(12, 4, 7, 3), data(13, 4, 7, 2)

    def task_loss(x, y, xq_, yq_):
        adapted = adapt(fm, fast, slow, x, y, steps=2, loss_fn=F.mse_loss, lr=0.1)
        return F.mse_loss(fm(adapted, slow, xq_), yq_)

    batched = torch.func.vmap(task_loss)(xs, ys, xq, yq)
    looped = torch.stack([task_loss(xs[i], ys[i], xq[i], yq[i]) for i in range(4)])
    torch.testing.assert_close(batched, looped)
    g_b = torch.autograd.grad(batched.mean(), list(net.parameters()))
    g_l = torch.autograd.grad(looped.mean(), list(net.parameters()))
    for a, b in zip(g_b, g_l, strict=True):
        torch.testing.assert_close(a, b)


def test_per_step_and_per_parameter_lr_and_learned_lr() -> None:
    lrs = torch.tensor([0.1, 0.2])
    assert float(lr_for(lrs, "w", 1)) == pytest.approx(0.2)
    assert lr_for({"w": 0.5}, "w") == 0.5
    with pytest.raises(KeyError):
        lr_for({"w": 0.5}, "b")
    with pytest.raises(ValueError):
        lr_for(lrs, "w")
    p, g = {"w": torch.ones(2)}, {"w": torch.full((2,), 2.0)}
    torch.testing.assert_close(sgd_update(p, g, {"w": lrs}, step=1)["w"], torch.full((2,), 0.6))

    net = tiny_net()
    fm = functional(net, "2.")
    fast, slow = fm.params()
    lr = torch.tensor([0.3, 0.3], dtype=torch.float64, requires_grad=True)
    xs, ys = data(14, 2, 4, 3), data(15, 2, 4, 2)
    for first_order in (False, True):
        adapted = inner_loop(fm, fast, slow, xs, ys, loss_fn=F.mse_loss, lr=lr,
                             first_order=first_order)
        (g,) = torch.autograd.grad(F.mse_loss(fm(adapted, slow, xs[0]), ys[0]), [lr])
        assert g.abs().sum() > 0


def test_fused_update_is_the_same_sgd_step() -> None:
    params = {"a": data(10, 4, 3), "b": data(11, 3)}
    grads = {"a": data(12, 4, 3), "b": data(13, 3)}
    fused = sgd_update(params, grads, 0.3, fused=True)
    assert list(fused) == ["a", "b"]
    for k in params:  # p + (-lr) g in one kernel: the same step up to rounding
        torch.testing.assert_close(fused[k], params[k] - 0.3 * grads[k], rtol=1e-15, atol=1e-15)
    # a per-parameter or learned rate is not fused (it is not one float)
    lr = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    new = sgd_update(params, grads, lr, fused=True)
    assert new["a"].requires_grad


class Scaled(nn.Module):
    """A module with a second positional input: out = lin(x) * s."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.lin = nn.Linear(3, 2).double()

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * s


def test_tuple_inputs_go_to_the_module_step_by_step() -> None:
    net = Scaled()
    fm = functional(net, "")
    fast, slow = fm.params()
    xs, ss, ys = data(14, 4, 5, 3), data(15, 4, 5, 2), data(16, 4, 5, 2)
    got = inner_loop(fm, fast, slow, (xs, ss), ys, loss_fn=F.mse_loss, lr=0.2)
    want = dict(fast)
    for i in range(4):  # by hand: step i sees (xs[i], ss[i])
        want = inner_step(fm, want, slow, (xs[i], ss[i]), ys[i], loss_fn=F.mse_loss, lr=0.2)
        if i == 0:  # the first step against the module called directly
            loss = F.mse_loss(net.lin(xs[0]) * ss[0], ys[0])
            g = torch.autograd.grad(loss, [net.lin.weight, net.lin.bias])
            torch.testing.assert_close(want["lin.weight"], net.lin.weight - 0.2 * g[0])
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="differ in number of steps"):
        inner_loop(fm, fast, slow, (xs, ss[:3]), ys, loss_fn=F.mse_loss, lr=0.2)
