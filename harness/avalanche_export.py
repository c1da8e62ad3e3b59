"""Any harness scenario as an Avalanche benchmark, so Avalanche users can run their own code on
our streams (the `avalanche` extra; Avalanche is imported only inside these functions).

    from harness.avalanche_export import to_avalanche, online_stream
    scenario = VideoFramesConfig(ordering="instance").build(seed=0)
    bm = to_avalanche(scenario)
    for exp in bm.train_stream:                       # one Avalanche experience per harness one
        for mini in online_stream(exp, batch_size=exp_batch):   # the harness's exact batches
            strategy.train(mini)
        strategy.eval(bm.test_stream)                 # = row i of the harness's R matrix

Mapping: harness experience i -> `train_stream[i]` (its training stream, in the stored order)
and `test_stream[i]` (its held-out test set); task label = the experience's `task_id` when the
scenario grants task ids, else 0. A labelled meta-train pool becomes the one-experience
`meta_train_stream`; validation experiences become `valid_stream` / `valid_test_stream`.
Tensors are shared, not copied.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torch import Tensor

from harness.errors import HarnessError
from harness.protocol import Experience, LabeledPool, Scenario


def _avalanche() -> Any:
    try:
        import avalanche  # noqa: F401, PLC0415 (optional extra)
    except ImportError:
        raise HarnessError("the Avalanche exporter needs avalanche-lib: "
                           "pip install -e '.[avalanche]'") from None
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

    return benchmark_from_datasets, _make_taskaware_tensor_classification_dataset


def tensor_dataset(x: Tensor, y: Tensor, task_label: int = 0) -> Any:
    """An Avalanche classification dataset over (x, y) with one task label, in order."""
    _, make = _avalanche()
    return make(x, y, targets=y, task_labels=int(task_label))


def to_avalanche(scenario: Scenario) -> Any:
    """The scenario as an Avalanche `CLScenario` with train/test (and more) streams.

    Raises:
        HarnessError: the scenario is not classification (Avalanche's classification
            datasets need integer targets) or Avalanche is not installed.
    """
    if scenario.spec.task != "classification":
        raise HarnessError(f"scenario {scenario.id!r} is {scenario.spec.task}; the Avalanche "
                           "exporter supports classification scenarios")
    benchmark_from_datasets, _ = _avalanche()

    def task(e: Experience) -> int:
        return e.task_id if scenario.spec.task_ids else 0

    streams: dict[str, list[Any]] = {
        "train": [tensor_dataset(e.x, e.y, task(e)) for e in scenario.experiences],
        "test": [tensor_dataset(e.x_test, e.y_test, task(e)) for e in scenario.experiences],
    }
    if scenario.val_experiences:
        streams["valid"] = [tensor_dataset(e.x, e.y, task(e)) for e in scenario.val_experiences]
        streams["valid_test"] = [tensor_dataset(e.x_test, e.y_test, task(e))
                                 for e in scenario.val_experiences]
    if isinstance(scenario.meta_train, LabeledPool):
        streams["meta_train"] = [tensor_dataset(scenario.meta_train.x, scenario.meta_train.y)]
    bm = benchmark_from_datasets(**streams)
    # Provenance travels with the benchmark.
    bm.harness_id = scenario.id
    bm.harness_version = scenario.version
    bm.harness_stream_hash = scenario.stream_hash
    bm.harness_batch_sizes = [e.batch_size for e in scenario.experiences]
    return bm


def online_stream(experience: Any, batch_size: int) -> Iterator[Any]:
    """The experience split into consecutive mini-experiences of `batch_size`, in stored order
    and without task-boundary information: exactly the batches the harness runner feeds to a
    learner (Avalanche's `split_online_stream` with shuffle off)."""
    from avalanche.benchmarks.scenarios.online import split_online_stream

    # seed=0: with no seed Avalanche draws one from Python's global `random` (unused when not
    # shuffling), which would shift the random numbers a strategy sees (e.g. AGEM's memory).
    yield from split_online_stream([experience], experience_size=batch_size, shuffle=False,
                                   access_task_boundaries=False, seed=0)


def accuracy_matrix(results: Sequence[dict[str, float]], n_experiences: int,
                    stream: str = "test_stream") -> list[list[float]]:
    """Avalanche's per-experience accuracies after each training experience, as an R matrix.

    `results[i]` is the dict returned by `strategy.eval(bm.test_stream)` after training
    experience i, with `accuracy_metrics(experience=True)` in the evaluator.
    """
    rows = []
    for res in results:
        row = []
        for j in range(n_experiences):
            keys = [k for k in res if k.startswith(f"Top1_Acc_Exp/eval_phase/{stream}/")
                    and k.endswith(f"/Exp{j:03d}")]
            if len(keys) != 1:
                raise KeyError(f"no single accuracy for experience {j} in {sorted(res)[:5]}...")
            row.append(float(res[keys[0]]))
        rows.append(row)
    return rows
