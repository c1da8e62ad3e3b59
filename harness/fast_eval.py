"""Fast head-only meta-test evaluation (docs/design.md D8).

On `omniglot-stream` the meta-learners (OML, ANML) and the head-only baselines train only a
linear output layer on frozen features. Two things make their meta-test cheap without changing
a single number:

1. `FeatureCache`: the frozen features are a pure function of the input and of the frozen
   weights, so they are memoized, keyed by a digest of the frozen weights and of the input's
   bytes. The runner's per-sample loop calls `predict(x)` then `observe(x)` on the same image
   and re-evaluates the same test sets at every experience end: each image is featurized once.
2. `head_sgd_sweep`: the whole head-only trajectory (batch-by-batch SGD on cross-entropy,
   prequential hits, the R matrix at experience ends, accuracy on all trained images after
   the stream) is computed from cached features at once for many learning rates, with
   `torch.func.vmap` over the candidate rates. It returns the same `StreamRecord`s as
   `harness.runner.run_stream` on the learner (tests/test_anml_oml.py checks the accuracies
   are identical; benchmarks/bench_fast_eval.py prints the speed-up).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from harness.protocol import Experience, ScenarioSpec
from harness.runner import StreamRecord

FEATURE_BATCH = 256


def input_digest(x: Tensor) -> str:
    """sha1 of a tensor's dtype, shape and bytes (a cache key, not a security feature)."""
    t = x.detach().to("cpu").contiguous()
    h = hashlib.sha1(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()


def weights_digest(tensors: Sequence[Tensor]) -> str:
    return hashlib.sha1("".join(input_digest(t) for t in tensors).encode()).hexdigest()


class FeatureCache:
    """Process-wide LRU memo of frozen-feature functions, bounded in bytes.

    `get(weights_key, x, fn)` returns `fn(x)` computed once per (weights_key, bytes of x). The
    weights key must change whenever the frozen weights do (see `weights_digest`).
    """

    def __init__(self, max_bytes: int = 512 << 20) -> None:
        self.max_bytes = max_bytes
        self._store: OrderedDict[tuple[str, str], Tensor] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, weights_key: str, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        key = (weights_key, input_digest(x))
        hit = self._store.get(key)
        if hit is not None:
            self._store.move_to_end(key)
            self.hits += 1
            return hit.to(x.device)
        self.misses += 1
        value = fn(x).detach()
        self._store[key] = value
        self._bytes += value.numel() * value.element_size()
        while self._bytes > self.max_bytes and self._store:
            _, old = self._store.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()
        return value

    def clear(self) -> None:
        self._store.clear()
        self._bytes = 0


FEATURES = FeatureCache()
"""The shared cache used by the head-only learners."""


@torch.no_grad()
def batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch: int = FEATURE_BATCH) -> Tensor:
    """`fn` over `x` in chunks of `batch` (no gradients)."""
    if len(x) == 0:
        return fn(x[:1])[:0]
    return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


def _head_step(W: Tensor, b: Tensor, lr: Tensor, f: Tensor, y: Tensor
               ) -> tuple[Tensor, Tensor, Tensor]:
    """One SGD step of a linear softmax head on a batch (f [B, D], y [B]); hits before it.

    The gradient of mean cross-entropy, written out: dL/dlogits = (softmax - onehot) / B.
    """
    logits = f @ W.T + b
    hits = (logits.argmax(dim=1) == y).float()
    g = (torch.softmax(logits, dim=1) - F.one_hot(y, W.shape[0]).to(f.dtype)) / len(y)
    return W - lr * (g.T @ f), b - lr * g.sum(0), hits


def _accuracy(W: Tensor, b: Tensor, f: Tensor, y: Tensor) -> Tensor:
    """Per-sample hits of the head (W, b) on features f."""
    return ((f @ W.T + b).argmax(dim=1) == y).float()


def _records(R: Tensor, R0: Tensor, R_train: Tensor, final: Tensor, finite: Tensor,
             prequential: np.ndarray, preq_exp: np.ndarray, y_test: Tensor,
             experiences: Sequence[Experience], C: int, wall: float) -> list[StreamRecord]:
    """One StreamRecord per rate; a rate whose head went non-finite gets NaN scores."""
    counts = torch.bincount(y_test, minlength=C).float()
    records = []
    for k in range(len(R)):
        if not finite[k]:
            R[k], R_train[k], final[k] = float("nan"), float("nan"), float("nan")
        correct = torch.bincount(y_test, weights=final[k], minlength=C)
        per_class = torch.where(counts > 0, correct / counts.clamp(min=1), torch.nan).numpy()
        records.append(StreamRecord(
            R=R[k].double().numpy(), R0=R0[k].double().numpy(),
            R_train=R_train[k].cpu().double().numpy(),
            test_sizes=np.array([e.n_test for e in experiences]),
            train_sizes=np.array([e.n_train for e in experiences]),
            prequential=prequential[k], prequential_exp=preq_exp,
            per_class_test=per_class, final_test_scores=final[k].numpy(), wall_s=wall,
            samples=sum(e.n_train for e in experiences), task="classification",
        ))
    return records


def head_sgd_sweep(
    features: Callable[[Tensor], Tensor],
    experiences: Sequence[Experience],
    spec: ScenarioSpec,
    lrs: Sequence[float],
    device: str | torch.device = "cpu",
) -> list[StreamRecord]:
    """Head-only online SGD from a zero head, for every lr at once (vmap over lrs).

    Follows the runner's protocol exactly (`harness.runner.run_stream`): batches in stream
    order, each predicted (prequential hit) before its SGD step; all test sets evaluated
    before training (R0) and after every experience (R); all training data after the stream
    (R_train); per-class test accuracy at the end.

    Args:
        features: frozen feature function, inputs [B, ...] -> [B, D] (called under no_grad).
        experiences: the stream.
        spec: its spec (classification; `n_outputs` classes).
        lrs: candidate learning rates.

    Returns:
        One StreamRecord per lr, in the order of `lrs`. An lr whose head went non-finite (the
        runner's loop would raise DivergedError) gets NaN in its R, R_train and accuracies.
    """
    if spec.task != "classification":
        raise ValueError("head_sgd_sweep is for classification streams")
    t0 = time.perf_counter()
    dev = torch.device(device)
    T, C, L = len(experiences), spec.n_outputs, len(lrs)
    f_train = [batched(features, e.x.to(dev)) for e in experiences]
    y_train = [e.y.to(dev) for e in experiences]
    ft_all = torch.cat([batched(features, e.x_test.to(dev)) for e in experiences])
    yt_all = torch.cat([e.y_test.to(dev) for e in experiences])
    W = torch.zeros(L, C, f_train[0].shape[1], device=dev)
    b = torch.zeros(L, C, device=dev)
    lr = torch.tensor(list(lrs), dtype=torch.float32, device=dev)
    step = torch.func.vmap(_head_step, in_dims=(0, 0, 0, None, None))
    acc = torch.func.vmap(_accuracy, in_dims=(0, 0, None, None))
    bounds = np.cumsum([0] + [e.n_test for e in experiences])

    def eval_tests() -> Tensor:  # [L, T]
        hits = acc(W, b, ft_all, yt_all)
        return torch.stack([hits[:, bounds[j] : bounds[j + 1]].mean(dim=1)
                            if bounds[j + 1] > bounds[j] else torch.full((L,), float("nan"))
                            for j in range(T)], dim=1)

    R = torch.zeros(L, T, T)
    R0 = eval_tests().cpu()
    preq: list[Tensor] = []
    with torch.no_grad():
        for i, e in enumerate(experiences):
            bs = e.batch_size
            for s in range(0, e.n_train, bs):
                W, b, hits = step(W, b, lr, f_train[i][s : s + bs], y_train[i][s : s + bs])
                preq.append(hits.cpu())
            R[:, i] = eval_tests().cpu()
        R_train = torch.stack([acc(W, b, f, y).mean(dim=1) for f, y in zip(f_train, y_train,
                                                                           strict=True)], dim=1)
        final = acc(W, b, ft_all, yt_all).cpu()
        finite = (torch.isfinite(W).flatten(1).all(1) & torch.isfinite(b).all(1)).cpu()
    prequential = torch.cat(preq, dim=1).numpy() if preq else np.zeros((L, 0))
    preq_exp = np.concatenate([np.full(e.n_train, i, dtype=np.int64)
                               for i, e in enumerate(experiences)])
    return _records(R, R0, R_train, final, finite, prequential, preq_exp, yt_all.cpu(),
                    experiences, C, (time.perf_counter() - t0) / max(L, 1))
