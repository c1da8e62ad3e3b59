"""`GraphedStep`: one meta-update of a torch.func meta-learner captured as a CUDA graph and
replayed (MAML family, `cuda_graph=true`), which removes the per-kernel CPU launch cost."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class GraphedStep:
    """One meta-update captured as a CUDA graph (whole-step capture, as in PyTorch's CUDA-graph
    notes). `update(batch, second, None)` runs three times on a side stream first to warm up
    (cuDNN workspaces, the allocator); those would be three extra updates, so the weights and
    the Adam state are put back afterwards, in place. Then one call is captured on static input
    tensors. Calling the object copies a batch into them and replays the graph: the weights and
    Adam state update in place, and the loss and score land in static outputs."""

    def __init__(self, update: Any, opt: torch.optim.Optimizer, batch: list[Tensor],
                 second: bool) -> None:
        self.second = second
        self.static = [t.clone() for t in batch]
        params = [p for group in opt.param_groups for p in group["params"]]
        before = {p: (p.detach().clone(),
                      {k: v.clone() for k, v in opt.state.get(p, {}).items()})
                  for p in params}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                update(self.static, second, None)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for p, (value, state) in before.items():
                p.copy_(value)
                for k, v in opt.state.get(p, {}).items():
                    if k in state:
                        v.copy_(state[k])
                    else:  # no state before the warm-up: a fresh Adam's zeros
                        v.zero_()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss, self.score = update(self.static, second, None)

    def __call__(self, batch: list[Tensor]) -> tuple[Tensor, Tensor]:
        for dst, src in zip(self.static, batch, strict=True):
            dst.copy_(src)
        self.graph.replay()
        return self.loss, self.score
