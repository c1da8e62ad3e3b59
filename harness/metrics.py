"""Continual-learning metrics as pure functions over numpy arrays (docs/design.md D5).

Conventions (0-indexed):
    R: T x T accuracy matrix, R[i, j] = accuracy on experience j after training through
        experience i. The upper triangle (j > i) holds accuracies on experiences not yet seen;
        it is filled, and only `fwt` reads it.
    R0: length T, accuracy on each experience before any training.
    sizes: length T, number of held-out test samples per experience.

Every function checks its input and raises ValueError saying what is wrong; each returns plain
Python floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats

__all__ = [
    "acc_final_macro",
    "acc_final_micro",
    "acc_incremental",
    "bwt",
    "forgetting_initial",
    "forgetting_max",
    "fwt",
    "learning_acc",
    "mean_ci95",
    "mean_ci95_normal",
    "mse_final",
    "mse_increase",
    "online_acc",
    "online_mse",
    "per_experience_final",
    "relative_drop",
    "summarize",
    "t_ci95_half_width",
]


def _finite(x: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf; every entry must be a finite number")


def _square(R, name: str = "R", unit: bool = True) -> np.ndarray:
    """Return R as a float T x T array (T >= 1); with unit=True, values must lie in [0, 1]."""
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square T x T matrix, got shape {R.shape}")
    _finite(R, name)
    if unit and (R.min() < 0.0 or R.max() > 1.0):
        raise ValueError(
            f"{name} holds accuracies, which must lie in [0, 1]; got values in "
            f"[{R.min():g}, {R.max():g}] (pass fractions, not percentages)"
        )
    if not unit and R.min() < 0.0:
        raise ValueError(f"{name} holds mean squared errors, which must be >= 0; got {R.min():g}")
    return R


def _vector(x, name: str, length: int | None = None) -> np.ndarray:
    """Return x as a finite, non-empty 1-D float array (of the given length if set)."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {x.shape}")
    if length is not None and x.size != length:
        raise ValueError(f"{name} must have length T = {length} (one per experience), got {x.size}")
    _finite(x, name)
    return x


def acc_final_macro(R) -> float:
    """Final average accuracy, each experience weighted equally.

    Formula: (1/T) sum_j R[T-1, j] (e.g. Lopez-Paz & Ranzato 2017, GEM, "ACC").
    """
    R = _square(R)
    return float(R[-1].mean())


def acc_final_micro(R, sizes) -> float:
    """Final accuracy over all held-out samples, experiences weighted by test-set size.

    Formula: sum_j sizes[j] * R[T-1, j] / sum_j sizes[j].
    """
    R = _square(R)
    w = _vector(sizes, "sizes", R.shape[0])
    if w.min() < 0 or w.sum() <= 0:
        raise ValueError(f"sizes must be >= 0 with a positive total, got {w.tolist()}")
    return float(np.dot(w, R[-1]) / w.sum())


def acc_incremental(R) -> float:
    """Average incremental accuracy (Rebuffi et al. 2017, iCaRL).

    Formula: (1/T) sum_k (1/(k+1)) sum_{j<=k} R[k, j], the mean over steps of the accuracy on
    the experiences seen so far. The upper triangle is not read.
    """
    R = _square(R)
    return float(np.mean([R[k, : k + 1].mean() for k in range(R.shape[0])]))


def forgetting_max(R) -> float:
    """Average forgetting (Chaudhry et al. 2018, RWalk).

    Formula: (1/(T-1)) sum_{j<T-1} (max_{j<=l<T-1} R[l, j] - R[T-1, j]).
    The max runs over the steps after j was learned (l from j to T-2), as in Chaudhry 2018;
    steps l < j are excluded because experience j was not yet seen then. Negative values mean
    accuracy on old experiences went up. Returns 0.0 for T == 1.
    """
    R = _square(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    return float(np.mean([R[j : T - 1, j].max() - R[-1, j] for j in range(T - 1)]))


def forgetting_initial(R) -> float:
    """Average drop from the accuracy just after learning each experience.

    Formula: (1/(T-1)) sum_{j<T-1} (R[j, j] - R[T-1, j]); equals -bwt. Returns 0.0 for T == 1.
    """
    return -bwt(R)


def bwt(R) -> float:
    """Backward transfer (Lopez-Paz & Ranzato 2017, GEM).

    Formula: (1/(T-1)) sum_{j<T-1} (R[T-1, j] - R[j, j]). Returns 0.0 for T == 1.
    """
    R = _square(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    diag = np.diag(R)[: T - 1]
    return float(np.mean(R[-1, : T - 1] - diag))


def fwt(R, R0) -> float:
    """Forward transfer (Lopez-Paz & Ranzato 2017, GEM).

    Formula: (1/(T-1)) sum_{j>=1} (R[j-1, j] - R0[j]), the accuracy on experience j just before
    it is trained on, relative to an untrained model. Returns 0.0 for T == 1.
    """
    R = _square(R)
    T = R.shape[0]
    r0 = _vector(R0, "R0", T)
    if r0.min() < 0.0 or r0.max() > 1.0:
        raise ValueError(f"R0 holds accuracies, which must lie in [0, 1]; got {r0.tolist()}")
    if T == 1:
        return 0.0
    return float(np.mean([R[j - 1, j] - r0[j] for j in range(1, T)]))


def learning_acc(R) -> float:
    """Learning accuracy (Riemer et al. 2019, MER).

    Formula: (1/T) sum_j R[j, j], the accuracy on each experience right after learning it.
    """
    R = _square(R)
    return float(np.diag(R).mean())


def online_acc(hits) -> float:
    """Prequential (predict-before-observe) accuracy over the stream.

    Formula: (1/N) sum_t hits[t], where hits[t] is 1 if the prediction made before observing
    sample t was correct, else 0.
    """
    h = _vector(hits, "hits")
    if not np.all((h == 0) | (h == 1)):
        raise ValueError("hits must hold only 0/1 (or bool) prequential outcomes")
    return float(h.mean())


def online_mse(sq_errors) -> float:
    """Prequential mean squared error: (1/N) sum_t sq_errors[t] (per-sample squared errors)."""
    e = _vector(sq_errors, "sq_errors")
    if e.min() < 0:
        raise ValueError("sq_errors must be >= 0: pass squared errors, not signed residuals")
    return float(e.mean())


def online_mae(abs_errors) -> float:
    """Prequential mean absolute error: (1/N) sum_t abs_errors[t] (per-sample absolute errors,
    averaged over output dims)."""
    e = _vector(abs_errors, "abs_errors")
    if e.min() < 0:
        raise ValueError("abs_errors must be >= 0: pass absolute errors, not signed residuals")
    return float(e.mean())


def skill(error, reference_error) -> float:
    """Skill score against a reference forecast on the same samples (e.g. persistence).

    Formula: 1 - error / reference_error, for errors such as MSEs (>= 0). 1 is a perfect
    forecast, 0 is no better than the reference, negative is worse than it.

    Returns:
        The skill; NaN when the reference error is 0 (nothing to improve on).
    """
    e, r = float(error), float(reference_error)
    if not (math.isfinite(e) and math.isfinite(r)) or e < 0 or r < 0:
        raise ValueError(f"errors must be finite and >= 0; got {e:g} and {r:g}")
    return math.nan if r == 0.0 else 1.0 - e / r


def mase(mae, naive_mae) -> float:
    """Mean absolute scaled error (Hyndman & Koehler 2006) of an online forecast.

    Formula: mae / naive_mae, where `naive_mae` is the mean absolute error of the
    seasonal-naive forecast (the value one season back) on the same samples of the scored
    stream: below 1 beats seasonal-naive. The scale is computed on the scored stream itself,
    as its errors are, not on a separate training span.

    Returns:
        The ratio; NaN when `naive_mae` is 0.
    """
    a, n = float(mae), float(naive_mae)
    if not (math.isfinite(a) and math.isfinite(n)) or a < 0 or n < 0:
        raise ValueError(f"errors must be finite and >= 0; got {a:g} and {n:g}")
    return math.nan if n == 0.0 else a / n


def recovery(errors, change_points, window: int) -> list[dict[str, float]]:
    """Error around each regime change of a stream, and how long the error takes to come back.

    For each change point c (a sample index where a new regime starts, 0 < c < N), with `end`
    the next change point (or N) and `start` the previous one (or 0):
      - `before` = mean(errors[max(start, c - window) : c]), the level just before the change;
      - `after` = mean(errors[c : min(c + window, end)]), the error right after it;
      - `steps` = the smallest s >= 0 with mean(errors[c + s : c + s + w]) <= `before`,
        w = min(window, end - c), s <= end - c - w; when there is none, `end - c` (the regime
        ended before the error came back) and `recovered` = 0, else 1.

    Args:
        errors: per-sample prequential errors (e.g. squared errors), in stream order.
        change_points: increasing sample indices.
        window: samples averaged on each side (>= 1).

    Returns:
        One dict per change point with keys before, after, steps, recovered.
    """
    e = _vector(errors, "errors")
    n = e.size
    cps = [int(c) for c in change_points]
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if any(not 0 < c < n for c in cps) or any(np.diff(cps) <= 0):
        raise ValueError(f"change points must increase strictly within (0, {n}); got {cps}")
    out = []
    for k, c in enumerate(cps):
        start = cps[k - 1] if k else 0
        end = cps[k + 1] if k + 1 < len(cps) else n
        before = float(e[max(start, c - window) : c].mean())
        w = min(window, end - c)
        means = np.convolve(e[c:end], np.ones(w) / w, mode="valid")
        hits = np.flatnonzero(means <= before)
        out.append({"before": before, "after": float(e[c : c + w].mean()),
                    "steps": float(hits[0]) if hits.size else float(end - c),
                    "recovered": float(hits.size > 0)})
    return out


def mean_ci95(values) -> tuple[float, float, int]:
    """Mean and half-width of the Student-t 95% confidence interval (e.g. over seeds).

    Formula: half = t_{0.975, n-1} * s / sqrt(n), s the sample std (ddof=1).

    Returns:
        (mean, half_width, n); half_width is nan for n == 1.
    """
    return _mean_and_half(values, lambda sd, n: float(t_ci95_half_width(sd, n)))


def _mean_and_half(values, half: Callable[[float, int], float]) -> tuple[float, float, int]:
    """(mean, half(sd, n), n) of a non-empty finite vector; the half-width is nan for n == 1."""
    v = _vector(values, "values")
    n = v.size
    if n == 1:
        return float(v[0]), math.nan, 1
    return float(v.mean()), half(v.std(ddof=1), n), n


def t_ci95_half_width(sd, n) -> np.ndarray:
    """Half-width of the Student-t 95% confidence interval of a mean, elementwise over arrays
    (or scalars) of sample standard deviations `sd` (ddof=1) and sample sizes `n`.

    Formula: t_{0.975, n-1} * sd / sqrt(n); NaN where n < 2.

    Returns:
        A float array shaped like `n` (0-d for scalars); `sd` has the same shape.
    """
    n = np.asarray(n, dtype=float)
    sd = np.asarray(sd, dtype=float)
    ok = n >= 2
    half = np.full(n.shape, np.nan)
    half[ok] = stats.t.ppf(0.975, n[ok] - 1) * sd[ok] / np.sqrt(n[ok])
    return half


def mean_ci95_normal(values) -> tuple[float, float, int]:
    """Mean and normal-approximation 95% CI half-width, the few-shot convention over episodes.

    Formula: half = 1.96 * s / sqrt(n), s the sample std (ddof=1) (e.g. Finn et al. 2017, MAML).

    Returns:
        (mean, half_width, n); half_width is nan for n == 1.
    """
    return _mean_and_half(values, lambda sd, n: float(1.96 * sd / math.sqrt(n)))


def mse_final(M) -> float:
    """Final mean squared error for regression streams.

    Formula: (1/T) sum_j M[T-1, j], where M[i, j] is the MSE on experience j after training
    through experience i (values >= 0).
    """
    M = _square(M, "M", unit=False)
    return float(M[-1].mean())


def mse_increase(M) -> float:
    """Forgetting in MSE terms: how much the error on old experiences grew.

    Formula: (1/(T-1)) sum_{j<T-1} (M[T-1, j] - M[j, j]). Returns 0.0 for T == 1.
    """
    M = _square(M, "M", unit=False)
    T = M.shape[0]
    if T == 1:
        return 0.0
    return float(np.mean(M[-1, : T - 1] - np.diag(M)[: T - 1]))


def per_experience_final(R) -> list[float]:
    """Final accuracy on each experience: R[T-1, :]."""
    R = _square(R)
    return [float(x) for x in R[-1]]


def relative_drop(acc, oracle_acc) -> float:
    """Relative drop of a stream learner's accuracy below its i.i.d. oracle's.

    Formula: (oracle_acc - acc) / oracle_acc, on the same data: the OML/ANML meta-test
    (Javed & White 2019, OML; Beaulieu et al. 2020, ANML) compares the output layer trained
    on the class-by-class stream with an "oracle" that trains the same layer on the same frozen
    representation with the same samples shuffled i.i.d.; both accuracies are fractions in
    [0, 1] (e.g. `meta_test_test_acc`, `meta_test_train_acc`).

    0 means the stream lost nothing against the oracle, 0.25 that it kept three quarters of the
    oracle's accuracy, 1 that it kept none; a negative value means the stream scored above the
    oracle (e.g. -0.1: 10% above). The drop is at most 1 and unbounded below.

    Returns:
        The relative drop; NaN when `oracle_acc` is 0 (the ratio is undefined: there is no
        accuracy to drop from).
    """
    a, o = float(acc), float(oracle_acc)
    for name, v in (("acc", a), ("oracle_acc", o)):
        if not math.isfinite(v):
            raise ValueError(f"{name} is {v}; it must be a finite accuracy")
        if not 0.0 <= v <= 1.0:
            raise ValueError(
                f"{name} holds an accuracy, which must lie in [0, 1]; got {v:g} "
                "(pass fractions, not percentages)"
            )
    if o == 0.0:
        return math.nan
    return (o - a) / o


def summarize(R, R0, sizes, hits_or_errors, task: str) -> dict[str, float]:
    """All scalar metrics of one run.

    Args:
        R: T x T accuracies (classification) or MSEs (regression).
        R0: length-T accuracies before training (classification; unused for regression).
        sizes: length-T test-set sizes (classification; unused for regression).
        hits_or_errors: prequential 0/1 hits (classification) or per-sample squared errors
            (regression).
        task: "classification" or "regression".

    Returns:
        Metric name -> value, names matching the functions of this module.
    """
    if task == "classification":
        return {
            "acc_final_macro": acc_final_macro(R),
            "acc_final_micro": acc_final_micro(R, sizes),
            "acc_incremental": acc_incremental(R),
            "forgetting_max": forgetting_max(R),
            "forgetting_initial": forgetting_initial(R),
            "bwt": bwt(R),
            "fwt": fwt(R, R0),
            "learning_acc": learning_acc(R),
            "online_acc": online_acc(hits_or_errors),
        }
    if task == "regression":
        return {
            "mse_final": mse_final(R),
            "online_mse": online_mse(hits_or_errors),
            "mse_increase": mse_increase(R),
        }
    raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")



def group_metrics(hits, groups) -> dict[str, tuple[float, int]]:
    """Per-group (e.g. per-video) accuracy from per-sample hits on the held-out samples.

    Formulas, over the G groups present, with acc_g the fraction of group g's samples
    classified correctly:
      - `acc_sequence_macro` = (1/G) sum_g acc_g (every video counts equally, however long);
      - `acc_sequence_majority` = (1/G) sum_g [acc_g > 0.5] (a video-level decision by a
        majority of correct frames).
    Computed in float32 with torch, as the scenario's stream is.

    Returns:
        name -> (value, G).
    """
    import torch  # noqa: PLC0415  (the rest of this module is numpy only)

    h = torch.as_tensor(np.asarray(hits)).float().flatten()
    ids = torch.as_tensor(np.asarray(groups)).long().flatten()
    if len(h) != len(ids):
        raise ValueError(f"{len(h)} hits but {len(ids)} group ids")
    uniq, inv = torch.unique(ids, return_inverse=True)
    n = len(uniq)
    per = torch.zeros(n).index_add_(0, inv, h) / torch.bincount(inv, minlength=n).float()
    return {"acc_sequence_macro": (float(per.mean()), n),
            "acc_sequence_majority": (float((per > 0.5).float().mean()), n)}
