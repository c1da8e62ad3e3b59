"""The fast max-pool (baselines/networks/pool.py) against nn.MaxPool2d: the same values, the
same gradients bit for bit, second order included, and the same networks' outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad

from baselines.networks.pool import MaxPool2d, max_pool2d


@pytest.mark.parametrize("shape", [(6, 8, 26, 26), (2, 4, 11, 11), (1, 64, 13, 13),
                                   (3, 5, 7, 9)])
@pytest.mark.parametrize("k", [2, 3])
def test_values_and_gradients_are_those_of_torch(shape, k):
    g = torch.Generator().manual_seed(0)
    # Rounded ReLU outputs: many ties inside windows, where the kept index matters.
    x = torch.relu(torch.randn(shape, generator=g)).round(decimals=1)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref, fast = F.max_pool2d(a, k), max_pool2d(b, k)
    assert fast.is_contiguous() and torch.equal(ref, fast)
    upstream = torch.randn(ref.shape, generator=g)
    ref.backward(upstream)
    fast.backward(upstream)
    assert torch.equal(a.grad, b.grad)
    assert (b.grad != 0).sum() == ref.numel() - (upstream == 0).sum()  # one index per window


def test_a_window_larger_than_the_map_fails_as_in_torch():
    x = torch.randn(2, 3, 1, 1)
    with pytest.raises(RuntimeError):
        F.max_pool2d(x, 2)
    with pytest.raises(RuntimeError):
        max_pool2d(x, 2)


def test_second_order_gradients_are_those_of_torch():
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))

    def loss(pool):
        return lambda t: (pool(t, 2) ** 3).sum()

    for fn in (lambda f, t: grad(f)(t),
               lambda f, t: torch.autograd.grad(f(t), t, create_graph=True)[0]):
        hessians = []
        for pool in (F.max_pool2d, max_pool2d):
            t = x.clone().requires_grad_()
            g1 = fn(loss(pool), t)
            hessians.append(torch.autograd.grad((g1 ** 2).sum(), t)[0])
        assert torch.equal(*hessians)


def test_a_network_with_it_is_the_same_network():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 5 * 5, 3))
    fast = nn.Sequential(*[MaxPool2d(2) if isinstance(m, nn.MaxPool2d) else m for m in ref])
    assert fast.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(4, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 0])
    grads = []
    for net in (ref, fast):
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    assert torch.equal(ref(x), fast(x))
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    assert repr(fast[2]) == "MaxPool2d(kernel_size=2)"
