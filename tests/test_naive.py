"""`persistence` and `seasonal-naive`: predictions by hand, in both forms, for batches."""

from __future__ import annotations

import pytest
import torch

from baselines.naive import PersistenceConfig, SeasonalNaiveConfig
from harness.config import BuildContext, field_names
from harness.errors import HarnessError
from harness.protocol import ScenarioSpec

WINDOW = ScenarioSpec(input_shape=(4,), n_outputs=1, task="regression", persistence=(3,),
                      seasonal=(1,))
"""A window of 4 past values, season 2: persistence x[3], seasonal-naive x[1]."""
FRAMES = ScenarioSpec(input_shape=(1, 2, 2), n_outputs=2, task="regression",
                      persistence=(3, 0))
"""A 2x2 frame whose flattened pixels 3 and 0 are the two outputs' persistence forecasts."""
NONE = ScenarioSpec(input_shape=(2,), n_outputs=2, task="regression")


def test_input_forms() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    p = PersistenceConfig().build(BuildContext(spec=WINDOW))
    s = SeasonalNaiveConfig().build(BuildContext(spec=WINDOW))
    assert p.predict(x).tolist() == [[4.0], [8.0]]
    assert s.predict(x).tolist() == [[2.0], [6.0]]
    p.observe(x, torch.tensor([[9.0], [9.0]]))  # learns nothing in the input form
    assert p.predict(x).tolist() == [[4.0], [8.0]]
    f = PersistenceConfig().build(BuildContext(spec=FRAMES))
    assert f.predict(x.reshape(2, 1, 2, 2)).tolist() == [[4.0, 1.0], [8.0, 5.0]]
    assert p.describe() == {"variant": "persistence", "forecast": "input values"}


def test_last_target_form_for_batches_and_reset() -> None:
    p = PersistenceConfig().build(BuildContext(spec=NONE))
    x = torch.zeros(3, 2)
    assert p.predict(x).tolist() == [[0.0, 0.0]] * 3
    p.observe(x[:2], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert p.predict(x).tolist() == [[3.0, 4.0]] * 3  # the whole batch: the last target
    p.observe(x[:1], torch.tensor([[5.0, 6.0]]))
    assert p.predict(x[:1]).tolist() == [[5.0, 6.0]]
    assert p.describe()["forecast"] == "last observed target"
    p.reset()
    assert p.predict(x[:1]).tolist() == [[0.0, 0.0]]


def test_no_lr_and_bad_scenarios() -> None:
    # no `lr`: the harness runs no learning-rate search for them
    assert "lr" not in field_names(PersistenceConfig) | field_names(SeasonalNaiveConfig)
    with pytest.raises(HarnessError, match="regression streams only; this scenario is "
                                           "classification"):
        PersistenceConfig().build(BuildContext(spec=ScenarioSpec((2,), 3)))
    with pytest.raises(HarnessError, match="declares a season"):
        SeasonalNaiveConfig().build(BuildContext(spec=NONE))
