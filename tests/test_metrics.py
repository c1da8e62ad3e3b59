"""Golden, property and error tests for harness/metrics.py (docs/design.md D5).

Every expected value in the golden tables is worked out by hand in the comments.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from harness import metrics as m

# ---------------------------------------------------------------------------------------------
# Golden tables: (case id, R, R0, sizes, {metric: expected}).
# ---------------------------------------------------------------------------------------------

# T = 1: one experience; forgetting-style metrics are defined as 0.
T1 = {
    "R": [[0.7]],
    "R0": [0.1],
    "sizes": [10],
    "expected": {
        "acc_final_macro": 0.7,
        "acc_final_micro": 0.7,
        "acc_incremental": 0.7,
        "forgetting_max": 0.0,
        "forgetting_initial": 0.0,
        "bwt": 0.0,
        "fwt": 0.0,
        "learning_acc": 0.7,
    },
}

# 3x3 with negative forgetting: accuracy on experiences 0 and 1 is higher at the end than
# when they were learned.
NEG = {
    "R": [
        [0.8, 0.1, 0.2],
        [0.7, 0.9, 0.3],
        [0.9, 0.95, 0.5],
    ],
    "R0": [0.1, 0.2, 0.3],
    "sizes": [100, 50, 10],
    "expected": {
        # (0.9 + 0.95 + 0.5) / 3 = 2.35 / 3
        "acc_final_macro": 2.35 / 3,
        # (100*0.9 + 50*0.95 + 10*0.5) / 160 = (90 + 47.5 + 5) / 160 = 142.5 / 160 = 0.890625
        "acc_final_micro": 0.890625,
        # k=0: 0.8; k=1: (0.7+0.9)/2 = 0.8; k=2: 2.35/3; mean = (1.6 + 2.35/3) / 3
        "acc_incremental": (1.6 + 2.35 / 3) / 3,
        # j=0: max(0.8, 0.7) - 0.9 = -0.1; j=1: 0.9 - 0.95 = -0.05; mean = -0.075
        "forgetting_max": -0.075,
        # j=0: 0.8 - 0.9 = -0.1; j=1: 0.9 - 0.95 = -0.05; mean = -0.075
        "forgetting_initial": -0.075,
        # -forgetting_initial
        "bwt": 0.075,
        # j=1: R[0,1] - R0[1] = 0.1 - 0.2 = -0.1; j=2: R[1,2] - R0[2] = 0.3 - 0.3 = 0; mean -0.05
        "fwt": -0.05,
        # (0.8 + 0.9 + 0.5) / 3 = 2.2 / 3
        "learning_acc": 2.2 / 3,
    },
}

# Unseen experiences: the upper triangle is all 1.0. R[0, 1] = 1.0 would raise forgetting_max
# on j=1 to 1.0 - 0.6 = 0.4 if the max ran over l < j; it must not.
UNSEEN = {
    "R": [
        [0.6, 1.0, 1.0],
        [0.5, 0.7, 1.0],
        [0.4, 0.6, 0.8],
    ],
    "R0": [0.0, 0.5, 0.5],
    "sizes": [1, 1, 1],
    "expected": {
        # (0.4 + 0.6 + 0.8) / 3 = 0.6
        "acc_final_macro": 0.6,
        "acc_final_micro": 0.6,
        # k=0: 0.6; k=1: (0.5+0.7)/2 = 0.6; k=2: 0.6; mean 0.6
        "acc_incremental": 0.6,
        # j=0: max(0.6, 0.5) - 0.4 = 0.2; j=1: max(R[1,1]) - 0.6 = 0.7 - 0.6 = 0.1; mean 0.15
        "forgetting_max": 0.15,
        # j=0: 0.6 - 0.4 = 0.2; j=1: 0.7 - 0.6 = 0.1; mean 0.15
        "forgetting_initial": 0.15,
        "bwt": -0.15,
        # fwt reads the upper triangle: j=1: 1.0 - 0.5 = 0.5; j=2: 1.0 - 0.5 = 0.5; mean 0.5
        "fwt": 0.5,
        # (0.6 + 0.7 + 0.8) / 3 = 0.7
        "learning_acc": 0.7,
    },
}

# forgetting_max > forgetting_initial: experience 0 improves after it was learned (0.5 -> 0.9),
# then drops to 0.3.
PEAK = {
    "R": [
        [0.5, 0.0, 0.0],
        [0.9, 0.6, 0.0],
        [0.3, 0.6, 0.7],
    ],
    "R0": [0.0, 0.0, 0.0],
    "sizes": [3, 1, 1],
    "expected": {
        # (0.3 + 0.6 + 0.7) / 3 = 1.6 / 3
        "acc_final_macro": 1.6 / 3,
        # (3*0.3 + 0.6 + 0.7) / 5 = 2.2 / 5 = 0.44
        "acc_final_micro": 0.44,
        # k=0: 0.5; k=1: (0.9+0.6)/2 = 0.75; k=2: 1.6/3; mean = (1.25 + 1.6/3) / 3
        "acc_incremental": (1.25 + 1.6 / 3) / 3,
        # j=0: max(0.5, 0.9) - 0.3 = 0.6; j=1: 0.6 - 0.6 = 0; mean 0.3
        "forgetting_max": 0.3,
        # j=0: 0.5 - 0.3 = 0.2; j=1: 0.6 - 0.6 = 0; mean 0.1
        "forgetting_initial": 0.1,
        "bwt": -0.1,
        # j=1: R[0,1] - 0 = 0; j=2: R[1,2] - 0 = 0; mean 0
        "fwt": 0.0,
        # (0.5 + 0.6 + 0.7) / 3 = 0.6
        "learning_acc": 0.6,
    },
}

# Ragged sizes: micro and macro differ. Last row [1.0, 0.0], sizes [1, 3].
RAGGED = {
    "R": [
        [1.0, 0.2],
        [1.0, 0.0],
    ],
    "R0": [0.0, 0.5],
    "sizes": [1, 3],
    "expected": {
        # (1.0 + 0.0) / 2 = 0.5
        "acc_final_macro": 0.5,
        # (1*1.0 + 3*0.0) / 4 = 0.25
        "acc_final_micro": 0.25,
        # k=0: 1.0; k=1: (1.0+0.0)/2 = 0.5; mean 0.75
        "acc_incremental": 0.75,
        # j=0: 1.0 - 1.0 = 0
        "forgetting_max": 0.0,
        "forgetting_initial": 0.0,
        "bwt": 0.0,
        # j=1: R[0,1] - R0[1] = 0.2 - 0.5 = -0.3
        "fwt": -0.3,
        # (1.0 + 0.0) / 2 = 0.5
        "learning_acc": 0.5,
    },
}

CASES = {"T1": T1, "neg_forgetting": NEG, "unseen": UNSEEN, "peak": PEAK, "ragged": RAGGED}


def _call(name, case):
    fn = getattr(m, name)
    if name == "acc_final_micro":
        return fn(case["R"], case["sizes"])
    if name == "fwt":
        return fn(case["R"], case["R0"])
    return fn(case["R"])


GOLDEN = [
    pytest.param(case, name, value, id=f"{cid}-{name}")
    for cid, case in CASES.items()
    for name, value in case["expected"].items()
]


@pytest.mark.parametrize(("case", "name", "expected"), GOLDEN)
def test_golden(case, name, expected):
    got = _call(name, case)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("fill", [0.0, 0.37, 1.0])
def test_upper_triangle_does_not_affect_backward_metrics(fill):
    R = np.array(UNSEEN["R"])
    R2 = np.tril(R) + fill * np.triu(np.ones_like(R), k=1)
    for name in [
        "forgetting_max",
        "forgetting_initial",
        "bwt",
        "acc_incremental",
        "learning_acc",
        "acc_final_macro",
    ]:
        assert getattr(m, name)(R2) == pytest.approx(getattr(m, name)(R), abs=1e-12), name


def test_per_experience_final():
    assert m.per_experience_final(NEG["R"]) == [0.9, 0.95, 0.5]
    assert m.per_experience_final([[0.7]]) == [0.7]


def test_online_acc():
    # 3 hits out of 4 -> 0.75
    assert m.online_acc([1, 0, 1, 1]) == 0.75
    assert m.online_acc(np.array([True, False])) == 0.5


def test_mse_final_and_increase():
    M = [[0.5, 2.0], [1.0, 0.25]]
    # mse_final: (1.0 + 0.25) / 2 = 0.625; mse_increase: j=0: 1.0 - 0.5 = 0.5
    assert m.mse_final(M) == 0.625
    assert m.mse_increase(M) == 0.5
    assert m.mse_final([[3.0]]) == 3.0
    assert m.mse_increase([[3.0]]) == 0.0


def test_summarize_classification():
    out = m.summarize(NEG["R"], NEG["R0"], NEG["sizes"], [1, 1, 0, 1], "classification")
    expected = dict(NEG["expected"], online_acc=0.75)
    assert set(out) == set(expected)
    for k, v in expected.items():
        assert isinstance(out[k], float)
        assert out[k] == pytest.approx(v, abs=1e-12), k


def test_summarize_regression():
    M = [[0.5, 2.0], [1.0, 0.25]]
    # online_mse: (0 + 1 + 4 + 1) / 4 = 1.5
    out = m.summarize(M, None, None, [0.0, 1.0, 4.0, 1.0], "regression")
    assert out == {"mse_final": 0.625, "online_mse": 1.5, "mse_increase": 0.5}


def test_mean_ci95_hand_computed():
    # values 1, 2, 3, 4: mean 2.5; deviations -1.5, -0.5, 0.5, 1.5; sum of squares 5;
    # s = sqrt(5/3) = 1.2909944; s/sqrt(4) = 0.6454972; t_{0.975, 3} = 3.1824463 (t table)
    # half = 3.1824463 * 0.6454972 = 2.0542603
    mean, half, n = m.mean_ci95([1, 2, 3, 4])
    assert (mean, n) == (2.5, 4)
    assert half == pytest.approx(2.0542603, abs=1e-6)
    # normal: 1.96 * 0.6454972 = 1.2651745
    mean, half, n = m.mean_ci95_normal([1, 2, 3, 4])
    assert (mean, n) == (2.5, 4)
    assert half == pytest.approx(1.2651745, abs=1e-6)


def test_mean_ci95_single_value():
    for fn in (m.mean_ci95, m.mean_ci95_normal):
        mean, half, n = fn([0.4])
        assert mean == 0.4 and n == 1 and math.isnan(half)


@pytest.mark.parametrize(
    ("acc", "oracle", "expected"),
    [
        (0.6, 0.8, 0.25),  # (0.8 - 0.6) / 0.8 = 0.2 / 0.8
        (0.8, 0.8, 0.0),  # the stream matches the oracle: nothing lost
        (0.0, 0.5, 1.0),  # (0.5 - 0) / 0.5: everything lost
        (0.3, 1.0, 0.7),  # (1 - 0.3) / 1
        (0.9, 0.6, -0.5),  # stream above the oracle: (0.6 - 0.9) / 0.6 = -0.3 / 0.6
        (1.0, 0.1, -9.0),  # (0.1 - 1) / 0.1: unbounded below
    ],
)
def test_relative_drop_golden(acc, oracle, expected):
    assert m.relative_drop(acc, oracle) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("acc", [0.0, 0.3])
def test_relative_drop_oracle_zero_is_nan(acc):
    # (0 - acc) / 0 is undefined, even 0 / 0: NaN, not an error
    assert math.isnan(m.relative_drop(acc, 0.0))


@pytest.mark.parametrize(
    ("acc", "oracle", "match"),
    [
        (1.5, 0.5, r"acc .*\[0, 1\]"),
        (0.5, -0.1, r"oracle_acc .*\[0, 1\]"),
        (60.0, 80.0, "percentages"),
        (np.nan, 0.5, "finite"),
        (0.5, np.inf, "finite"),
    ],
)
def test_relative_drop_bad_input(acc, oracle, match):
    with pytest.raises(ValueError, match=match):
        m.relative_drop(acc, oracle)


# ---------------------------------------------------------------------------------------------
# Properties over random matrices in [0, 1].
# ---------------------------------------------------------------------------------------------


@st.composite
def runs(draw):
    T = draw(st.integers(1, 6))
    unit = st.floats(0.0, 1.0, allow_nan=False)
    R = draw(arrays(np.float64, (T, T), elements=unit))
    R0 = draw(arrays(np.float64, (T,), elements=unit))
    sizes = draw(arrays(np.int64, (T,), elements=st.integers(1, 1000)))
    return R, R0, sizes


@settings(max_examples=200, deadline=None)
@given(runs())
def test_properties(run):
    R, R0, sizes = run
    assert m.bwt(R) == pytest.approx(-m.forgetting_initial(R), abs=1e-12)
    assert m.forgetting_max(R) >= m.forgetting_initial(R) - 1e-12
    for name in ["acc_final_macro", "acc_incremental", "learning_acc"]:
        assert 0.0 <= getattr(m, name)(R) <= 1.0, name
    assert 0.0 <= m.acc_final_micro(R, sizes) <= 1.0
    for v in (m.forgetting_max(R), m.forgetting_initial(R), m.bwt(R), m.fwt(R, R0)):
        assert -1.0 <= v <= 1.0
    last = R[-1]
    assert last.min() - 1e-12 <= m.acc_final_macro(R) <= last.max() + 1e-12
    assert last.min() - 1e-12 <= m.acc_final_micro(R, sizes) <= last.max() + 1e-12


# ---------------------------------------------------------------------------------------------
# Bad input raises ValueError with a message.
# ---------------------------------------------------------------------------------------------

ACC_FNS = [
    m.acc_final_macro,
    m.acc_incremental,
    m.forgetting_max,
    m.forgetting_initial,
    m.bwt,
    m.learning_acc,
    m.per_experience_final,
]

BAD_R = {
    "nan": ([[0.5, np.nan], [0.5, 0.5]], "NaN"),
    "inf": ([[0.5, np.inf], [0.5, 0.5]], "NaN or inf"),
    "not_square": ([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], "square"),
    "one_d": ([0.5, 0.5], "square"),
    "empty": (np.zeros((0, 0)), "non-empty"),
    "above_one": ([[0.5, 0.5], [1.2, 0.5]], r"\[0, 1\]"),
    "percent": ([[50.0, 0.0], [40.0, 60.0]], "percentages"),
    "negative": ([[0.5, 0.5], [-0.1, 0.5]], r"\[0, 1\]"),
}


@pytest.mark.parametrize("fn", ACC_FNS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", BAD_R.values(), ids=list(BAD_R))
def test_bad_accuracy_matrix(fn, bad):
    R, match = bad
    with pytest.raises(ValueError, match=match):
        fn(R)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: m.acc_final_micro([[0.5]], [1, 2]), "length T = 1"),
        (lambda: m.acc_final_micro([[0.5]], [-1]), "sizes must be >= 0"),
        (lambda: m.acc_final_micro([[0.5, 0.5], [0.5, 0.5]], [0, 0]), "positive total"),
        (lambda: m.acc_final_micro([[0.5]], [np.nan]), "NaN"),
        (lambda: m.acc_final_micro([[1.5]], [1]), r"\[0, 1\]"),
        (lambda: m.fwt([[0.5, 0.5], [0.5, 0.5]], [0.1]), "length T = 2"),
        (lambda: m.fwt([[0.5, 0.5], [0.5, 0.5]], [0.1, 1.5]), r"R0 .*\[0, 1\]"),
        (lambda: m.fwt([[0.5, 0.5], [0.5, 0.5]], [[0.1, 0.1]]), "1-D"),
        (lambda: m.online_acc([1, 0, 0.5]), "0/1"),
        (lambda: m.online_acc([]), "non-empty"),
        (lambda: m.online_acc([1, np.nan]), "NaN"),
        (lambda: m.online_mse([1.0, -0.5]), "squared errors"),
        (lambda: m.mean_ci95([]), "non-empty"),
        (lambda: m.mean_ci95([1.0, np.nan]), "NaN"),
        (lambda: m.mean_ci95_normal([[1.0, 2.0]]), "1-D"),
        (lambda: m.mse_final([[0.5, 1.0], [-0.1, 2.0]]), ">= 0"),
        (lambda: m.mse_final([[np.inf]]), "NaN or inf"),
        (lambda: m.mse_increase([[1.0, 2.0]]), "square"),
        (lambda: m.summarize([[0.5]], [0.0], [1], [1], "ranking"), "classification"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
