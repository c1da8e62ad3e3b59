"""A 2-D max-pool with PyTorch's values, indices and gradients, computed faster on the CPU.

PyTorch's CPU max-pool kernel for NCHW tensors is much slower than its channels-last kernel
(ANML's quick meta-step: 170.9 -> 162.0 ms with this module, docs/profile-meta-step.md).
Both kernels scan each window in the same order and keep the first maximum, so they return the
same values and the same indices. `MaxPool2d` pools a channels-last copy, returns NCHW
tensors and computes the gradient with PyTorch's own NCHW backward from those indices:
forward values and gradients are bit-identical to `nn.MaxPool2d` (tests/test_networks_pool.py),
second-order gradients included. It has no parameters, so checkpoints are unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _MaxPoolFn(torch.autograd.Function):
    """Square kernel = stride, no padding, floor mode."""

    @staticmethod
    def forward(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        if x.device.type != "cpu" or x.dim() != 4:
            out, idx = F.max_pool2d_with_indices(x, k)
        else:
            out, idx = F.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last), k)
        return out.contiguous(), idx.contiguous()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, int], output: tuple[Tensor, Tensor]
                      ) -> None:
        x, k = inputs
        ctx.save_for_backward(x, output[1])
        ctx.k = k
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _grad_idx: Tensor) -> tuple[Tensor, None]:
        x, idx = ctx.saved_tensors
        k = [ctx.k, ctx.k]
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), x, k, k, [0, 0], [1, 1], False, idx), None


def max_pool2d(x: Tensor, k: int) -> Tensor:
    """`F.max_pool2d(x, k)` for a square window with stride k (see the module docstring)."""
    return _MaxPoolFn.apply(x, k)[0]


class MaxPool2d(nn.Module):
    """Drop-in for `nn.MaxPool2d(k)` (stride k, no padding), bit-identical and faster on CPU."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: Tensor) -> Tensor:
        return max_pool2d(x, self.kernel_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"
