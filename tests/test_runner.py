"""The runner's contract: predict before observe, what a learner may see, R and R0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.errors import DivergedError, LearnerError
from harness.protocol import Experience, LabeledPool, ScenarioSpec
from harness.runner import run_episodes, run_stream
from my_learners.toy import Diverging, Linear, Spy, WrongShape

SPEC = ScenarioSpec(input_shape=(2,), n_outputs=2)


def _exp(label: int, n: int = 6, batch: int = 2) -> Experience:
    x = torch.full((n, 2), float(label)) + torch.linspace(0, 0.1, n)[:, None]
    y = torch.full((n,), label, dtype=torch.long)
    return Experience(x=x, y=y, x_test=x[:3].clone(), y_test=y[:3].clone(), batch_size=batch,
                      classes=(label,))


class Fixed(torch.nn.Module):
    """Predicts a fixed class per input sign; observe learns nothing. For hand-computed R."""

    def __init__(self) -> None:
        super().__init__()
        self.flip_after = 0
        self.seen = 0

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        # Class 0 until `flip_after` samples were observed, then class 1 for everything.
        c = 1 if self.flip_after and self.seen >= self.flip_after else 0
        out = torch.zeros(len(x), 2)
        out[:, c] = 1.0
        return out

    def observe(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.seen += len(x)


def test_predict_comes_before_observe_for_every_batch() -> None:
    spy = Spy(SPEC)
    run_stream(spy, [_exp(0), _exp(1)], SPEC)
    stream_calls = [c for c in spy.calls if c[2]]  # training mode = the stream
    kinds = [c[0] for c in stream_calls]
    assert kinds == ["predict", "observe"] * 6
    assert all(c[1] == 2 for c in stream_calls)  # batch size 2, never more
    # Evaluations ran in eval mode, on the 3 held-out samples of each experience.
    assert all(c[0] == "predict" for c in spy.calls if not c[2])


def test_r_matrix_and_r0_match_a_hand_computed_learner() -> None:
    learner = Fixed()
    learner.flip_after = 6  # after the first experience (6 samples) it predicts class 1
    rec = run_stream(learner, [_exp(0), _exp(1)], SPEC)
    # Before training: class 0 everywhere -> exp0 test 1.0, exp1 test 0.0.
    np.testing.assert_allclose(rec.R0, [1.0, 0.0])
    # After exp0 (6 seen): predicts 1 -> R[0] = [0, 1]; after exp1: still 1 -> [0, 1].
    np.testing.assert_allclose(rec.R, [[0.0, 1.0], [0.0, 1.0]])
    # Prequential: the 6 samples of exp0 were predicted as 0 before observing (all hits);
    # exp1's were predicted as 1 (hits).
    assert rec.prequential.tolist() == [1.0] * 12
    assert rec.prequential_exp.tolist() == [0] * 6 + [1] * 6
    np.testing.assert_allclose(rec.R_train, [0.0, 1.0])
    assert rec.test_sizes.tolist() == [3, 3]


def test_eval_every_fills_a_curve() -> None:
    rec = run_stream(Fixed(), [_exp(0), _exp(1)], SPEC, eval_every=4)
    assert rec.curve_samples.tolist() == [4, 8, 12]
    assert rec.curve_scores.shape == (3, 2)


def test_wrong_shape_is_a_learner_error_with_the_expected_shape() -> None:
    with pytest.raises(LearnerError, match=r"returned shape \[3, 3\], expected \[3, 2\]"):
        run_stream(WrongShape(SPEC), [_exp(0)], SPEC)


def test_non_tensor_output_is_a_learner_error() -> None:
    class ReturnsList(Fixed):
        def predict(self, x):  # type: ignore[override]
            return [0] * len(x)

    with pytest.raises(LearnerError, match="expected a torch.Tensor"):
        run_stream(ReturnsList(), [_exp(0)], SPEC)


def test_nan_outputs_are_divergence() -> None:
    with pytest.raises(DivergedError):
        run_stream(Diverging(SPEC), [_exp(0, n=20)], SPEC)


def test_learner_cannot_alter_the_stream() -> None:
    class Vandal(Fixed):
        def observe(self, x, y):  # type: ignore[override]
            x.mul_(0)
            y.fill_(1)

    exp = _exp(1)
    before = exp.x.clone(), exp.y.clone()
    run_stream(Vandal(), [exp], SPEC)
    assert torch.equal(exp.x, before[0]) and torch.equal(exp.y, before[1])


def test_task_ids_only_when_granted() -> None:
    class WantsTask(Fixed):
        def __init__(self) -> None:
            super().__init__()
            self.tasks: list[int] = []

        def set_task(self, t: int) -> None:
            self.tasks.append(t)

    learner = WantsTask()
    run_stream(learner, [_exp(0)], SPEC)
    assert learner.tasks == []
    granted = ScenarioSpec(input_shape=(2,), n_outputs=2, task_ids=True)
    run_stream(learner, [_exp(0)], granted)
    assert learner.tasks == [0]


def test_linear_learner_learns_and_regression_scores_are_mse() -> None:
    torch.manual_seed(0)
    rec = run_stream(Linear(SPEC, lr=0.5), [_exp(0, 20), _exp(1, 20)], SPEC)
    assert rec.R[1, 1] == 1.0
    reg = ScenarioSpec(input_shape=(2,), n_outputs=1, task="regression")
    x = torch.randn(40, 2)
    y = x.sum(dim=1, keepdim=True)
    exp = Experience(x=x, y=y, x_test=x[:10], y_test=y[:10], batch_size=4)
    rec = run_stream(Linear(reg, lr=0.1), [exp], reg)
    assert rec.R0[0] > rec.R[0, 0] >= 0.0  # MSE went down


def test_episodes_reset_observe_predict() -> None:
    class Episodic(Fixed):
        resets = 0

        def reset(self) -> None:
            self.resets += 1
            self.seen = 0

    learner = Episodic()
    learner.flip_after = 6
    rec = run_episodes(learner, [_exp(1), _exp(0)], SPEC)
    assert learner.resets == 2
    np.testing.assert_allclose(rec.scores, [1.0, 0.0])


def test_labeled_pool_sampling_is_seeded_and_by_class() -> None:
    y = torch.tensor([0, 1, 0, 2, 1, 0])
    pool = LabeledPool(x=torch.arange(6.0)[:, None], y=y, n_classes=3)
    assert sorted(pool.class_indices(0).tolist()) == [0, 2, 5]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(pool.sample_from_class(0, 2, g1), pool.sample_from_class(0, 2, g2))
    assert all(y[i] == 1 for i in pool.sample_from_class(1, 5, g1))
