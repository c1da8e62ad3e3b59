"""`persistence` and `seasonal-naive`: predictions by hand, in both forms, for batches."""

from __future__ import annotations

import pytest
import torch

from baselines.naive import PersistenceConfig, SeasonalNaiveConfig
from harness.config import BuildContext
from harness.errors import HarnessError
from harness.protocol import ScenarioSpec

WINDOW = ScenarioSpec(input_shape=(4,), n_outputs=1, task="regression", persistence=(3,),
                      seasonal=(1,))
NONE = ScenarioSpec(input_shape=(2,), n_outputs=2, task="regression")


def test_input_forms() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    p = PersistenceConfig().build(BuildContext(spec=WINDOW))
    s = SeasonalNaiveConfig().build(BuildContext(spec=WINDOW))
    assert p.predict(x).tolist() == [[4.0], [8.0]]
    assert s.predict(x).tolist() == [[2.0], [6.0]]
    p.observe(x, torch.tensor([[9.0], [9.0]]))  # learns nothing in the input form
    assert p.predict(x).tolist() == [[4.0], [8.0]]


def test_last_target_form_for_batches_and_reset() -> None:
    p = PersistenceConfig().build(BuildContext(spec=NONE))
    x = torch.zeros(3, 2)
    assert p.predict(x).tolist() == [[0.0, 0.0]] * 3
    p.observe(x[:2], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert p.predict(x).tolist() == [[3.0, 4.0]] * 3  # the whole batch: the last target
    p.reset()
    assert p.predict(x[:1]).tolist() == [[0.0, 0.0]]


def test_bad_scenarios() -> None:
    with pytest.raises(HarnessError, match="regression"):
        PersistenceConfig().build(BuildContext(spec=ScenarioSpec((2,), 3)))
    with pytest.raises(HarnessError, match="declares a season"):
        SeasonalNaiveConfig().build(BuildContext(spec=NONE))
