"""SLDA on the omniglot-stream: the classifier kept by Woodbury updates of a base
eigendecomposition vs one factorisation of the covariance per classifier request
(docs/design.md D8 for how benchmarks are run and recorded).

    python benchmarks/bench_slda.py [--classes 100] [--samples 0] [--threads 1]

Both sides run `harness.runner.run_stream` on the same `omniglot-stream` (seed 0) with the quick
slda config on fixed features (randomly initialised convnet-small, 1024 features; pretrain off:
the timing does not depend on the weights):
  - reference: a subclass that rebuilds (W, b) as before, by a Cholesky factorisation of
    A = (1 - eps) cov + eps I and a solve for every class (O(d^3)) at every classifier request,
    i.e. after every stream sample, since each sample is predicted before it is observed;
  - new: `baselines.slda.SLDALearner` (O(d^2) per sample plus an eigendecomposition every
    `REBASE_EVERY` updates).
Reported: seconds per stream sample spent in the learners' predict + observe during the stream,
the whole run's seconds (stream and every evaluation) per sample, the ratio, whether the
records (R, R0, R_train, prequential, final test scores) are identical, the largest
difference of the predict logits over the run (relative to max(1, max|logit|), classes
never seen left out: both give them UNSEEN_LOGIT) and of the
final (W, b) (relative to max(1, max|W|), max(1, max|b|)). `--samples N` runs only the first
N stream samples (the stream cut there, each experience's test set kept) and says so.
Results go to benchmarks/results/bench_slda.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from record import Printer, write

from baselines.backbone import UNSEEN_LOGIT
from baselines.slda import SLDAConfig, SLDALearner
from harness.config import BuildContext
from harness.experiment import build_scenario
from harness.runner import run_stream


class Timed(SLDALearner):
    """Keeps every predict output and the time spent in stream predict + observe."""

    def _reset_stream(self) -> None:
        super()._reset_stream()
        self.outputs: list[torch.Tensor] = []
        self.stream_s = 0.0

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = super().predict(x)
        if self.training:  # a stream sample (the runner evaluates in eval mode)
            self.stream_s += time.perf_counter() - t0
        self.outputs.append(out)
        return out

    def observe(self, x: torch.Tensor, y: torch.Tensor) -> None:
        t0 = time.perf_counter()
        super().observe(x, y)
        self.stream_s += time.perf_counter() - t0


class Reference(Timed):
    """The learner as it was: the direct solve at every classifier request (no factors)."""

    def _current_factors(self) -> None:
        return None


def rel(new: torch.Tensor, ref: torch.Tensor) -> float:
    """max|new - ref| / max(1, max|ref|), over the entries that are not UNSEEN_LOGIT in both
    (inf when only one of them is)."""
    unseen = ref == UNSEEN_LOGIT
    if not torch.equal(new == UNSEEN_LOGIT, unseen):
        return float("inf")
    new, ref = new[~unseen].double(), ref[~unseen].double()
    if not len(ref):
        return 0.0
    return float((new - ref).abs().max()) / max(1.0, float(ref.abs().max()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--samples", type=int, default=0,
                    help="run only the first N stream samples (0 = the whole stream)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    scenario = build_scenario("omniglot-stream", 0, None, {"n_classes": str(args.classes)})
    exps, spec = list(scenario.experiences), scenario.spec
    full = sum(e.n_train for e in exps)
    if args.samples:
        cut, left = [], args.samples
        for e in exps:
            if left <= 0:
                break
            cut.append(dataclasses.replace(e, x=e.x[:left], y=e.y[:left]))
            left -= e.n_train
        exps = cut
    n_samples = sum(e.n_train for e in exps)
    cfg = SLDAConfig(**{**SLDAConfig.PRESETS["quick"], "pretrain": False})

    runs = {}
    for name, cls in (("new", Timed), ("reference", Reference)):
        learner = cls(cfg, BuildContext(spec=spec))
        t0 = time.perf_counter()
        rec = run_stream(learner, exps, spec)
        runs[name] = (learner, rec, time.perf_counter() - t0)
    (new, rec_new, t_new), (ref, rec_ref, t_ref) = runs["new"], runs["reference"]

    identical = {f: bool(np.array_equal(getattr(rec_new, f), getattr(rec_ref, f)))
                 for f in ("R", "R0", "R_train", "prequential", "final_test_scores")}
    logit_diff = max(rel(a, b) for a, b in zip(new.outputs, ref.outputs, strict=True))
    argmax_same = all(torch.equal(a.argmax(1), b.argmax(1))
                      for a, b in zip(new.outputs, ref.outputs, strict=True))
    (w_new, b_new), (w_ref, b_ref) = new.classifier(), ref.classifier()
    w_diff, b_diff = rel(w_new, w_ref), rel(b_new, b_ref)
    per_new, per_ref = new.stream_s / n_samples, ref.stream_s / n_samples
    ratio = per_ref / per_new

    say = Printer()
    say(f"omniglot-stream, {args.classes} classes, {n_samples} stream samples"
        + (f" (the first {n_samples} of {full}: --samples)" if n_samples < full else "")
        + f", quick slda (eps {cfg.shrinkage:g}) on random convnet-small features, "
          f"d = {new.features.out_dim}, torch threads {torch.get_num_threads()}")
    say(f"reference (Cholesky of A at every request): {per_ref * 1e3:.2f} ms per sample in "
        f"predict + observe; whole run {t_ref:.1f} s ({t_ref / n_samples * 1e3:.2f} ms/sample)")
    say(f"new (Woodbury on a base eigh, REBASE_EVERY {SLDALearner.REBASE_EVERY}, {new.rebases} "
        f"eighs): {per_new * 1e3:.2f} ms per sample in predict + observe; whole run {t_new:.1f} s "
        f"({t_new / n_samples * 1e3:.2f} ms/sample)")
    say(f"speed-up per stream sample: {ratio:.1f}x; whole run: {t_ref / t_new:.1f}x")
    say(f"identical records: {identical}")
    say(f"max predict-logit difference over {len(new.outputs)} predict calls (float32 outputs): "
        f"{logit_diff:.2e}; same argmax everywhere: {argmax_same}")
    say(f"final classifier: max|dW| / max(1, max|W|) = {w_diff:.2e}, "
        f"max|db| / max(1, max|b|) = {b_diff:.2e}")
    write("bench_slda", ap, args,
          {"classes": args.classes, "stream_samples": n_samples, "full_stream_samples": full,
           "features": new.features.out_dim, "shrinkage": cfg.shrinkage,
           "rebase_every": SLDALearner.REBASE_EVERY, "rebases": new.rebases,
           "reference_s_per_sample": per_ref, "new_s_per_sample": per_new,
           "speedup_per_sample": ratio, "reference_run_s": t_ref, "new_run_s": t_new,
           "speedup_run": t_ref / t_new, "identical": identical,
           "same_argmax": argmax_same, "max_logit_rel_diff": logit_diff,
           "max_W_rel_diff": w_diff, "max_b_rel_diff": b_diff},
          say.lines, ("s per stream sample, reference / new", ratio,
                      "O(d^2) per sample; classifier equal to 1e-8, identical records"))


if __name__ == "__main__":
    main()
