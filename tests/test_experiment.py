"""End-to-end runs on the synthetic stream: results, provenance, caching, lr selection, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from harness import metrics, results
from harness.cli_inputs import parse_seeds
from harness.errors import HarnessError
from harness.experiment import RunConfig, compare, execute
from harness.results import COLUMNS

SMALL = {"n_classes": "4", "train_per_class": "10", "test_per_class": "5"}


def _cfg(tmp_path: Path, learner: str, **kw) -> RunConfig:
    kw.setdefault("overrides", dict(SMALL))
    return RunConfig(scenario="synthetic-stream", learner=learner, out_dir=tmp_path / "res",
                     cache_dir=tmp_path / "cache", **kw)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_run_writes_tidy_rows_config_and_raw_arrays(tmp_path: Path) -> None:
    res = execute(_cfg(tmp_path, "my_learners.toy:Linear"))
    assert res.status == "ok"
    rows = _rows(res.csv_path)
    assert list(rows[0])[: len(COLUMNS)] == COLUMNS
    by_metric = {r["metric"]: float(r["value"]) for r in rows}
    for key in ("acc_final_macro", "forgetting_max", "bwt", "fwt", "online_acc",
                "meta_test_test_acc", "wall_s", "peak_rss_mb", "samples_per_s", "params"):
        assert key in by_metric
    assert {r["seed"] for r in rows} == {"0"} and rows[0]["git_sha"] and rows[0]["torch_version"]
    # Any metric can be recomputed from the raw arrays saved beside the CSV.
    raw = np.load(res.csv_path.with_suffix(".npz"))
    assert by_metric["acc_final_macro"] == pytest.approx(metrics.acc_final_macro(raw["R"]))
    assert by_metric["forgetting_max"] == pytest.approx(metrics.forgetting_max(raw["R"]))
    assert by_metric["online_acc"] == pytest.approx(raw["prequential"].mean())
    config = json.loads(res.csv_path.with_suffix(".json").read_text())
    assert config["run"]["learner"] == "my_learners.toy:Linear"
    assert config["scenario_params"]["n_classes"] == 4
    # No temp file is left; the one hidden entry is the folder's writer lock (results.py).
    hidden = sorted(p.name for p in res.csv_path.parent.iterdir() if p.name.startswith("."))
    assert hidden == [".locks"]
    assert [p.name for p in (res.csv_path.parent / ".locks").iterdir()] == [results.WRITE_LOCK]


def test_same_seed_same_results(tmp_path: Path) -> None:
    a = execute(_cfg(tmp_path / "a", "finetune", seed=3, lr_grid=(1e-3, 1e-1)))
    b = execute(_cfg(tmp_path / "b", "finetune", seed=3, lr_grid=(1e-3, 1e-1)))
    for key in ("acc_final_macro", "online_acc", "forgetting_max", "bwt"):
        assert a.metrics[key] == b.metrics[key]
    assert a.extra["lr"] == b.extra["lr"]
    assert a.run_id == b.run_id


def test_lr_is_chosen_on_validation_from_the_shared_grid(tmp_path: Path) -> None:
    grid = (1e-6, 1e-3, 1e-1)
    res = execute(_cfg(tmp_path, "finetune", lr_grid=grid))
    assert res.extra["lr"] in grid
    assert res.extra["lr_selected_on"].startswith("val(")
    scores = json.loads(res.csv_path.with_suffix(".json").read_text())["lr_selection"]
    assert len(scores["lr_scores"]) == len(grid)
    best = max(scores["lr_scores"].values())
    assert scores["lr_scores"][str(res.extra["lr"])] == best
    # An explicit lr is kept and recorded as fixed.
    fixed = execute(_cfg(tmp_path, "finetune", overrides={**SMALL, "lr": "0.01"}))
    assert fixed.extra["lr"] == 0.01 and fixed.extra["lr_selected_on"] == "fixed"


def test_pretraining_is_cached_and_reused(tmp_path: Path) -> None:
    first = execute(_cfg(tmp_path, "ncm"))
    ckpts = list((tmp_path / "cache" / "checkpoints").glob("*.safetensors"))
    assert len(ckpts) == 1 and ckpts[0].with_suffix(".json").exists()
    assert first.metrics["meta_train_s"] > 0
    mtime = ckpts[0].stat().st_mtime
    second = execute(_cfg(tmp_path, "ncm"))
    assert ckpts[0].stat().st_mtime == mtime  # loaded, not retrained
    cfg = json.loads(second.csv_path.with_suffix(".json").read_text())
    assert cfg["meta_train"]["checkpoint_cached"] is True
    assert second.metrics["acc_final_macro"] == first.metrics["acc_final_macro"]


def test_diverged_run_is_recorded_and_other_results_survive(tmp_path: Path) -> None:
    ok = execute(_cfg(tmp_path, "my_learners.toy:Linear"))
    before = ok.csv_path.read_bytes()
    bad = execute(_cfg(tmp_path, "my_learners.toy:Diverging"))
    assert bad.status == "diverged"
    assert {r["metric"] for r in _rows(bad.csv_path)} >= {"diverged", "wall_s"}
    assert ok.csv_path.read_bytes() == before


def test_crashing_learner_is_recorded_as_failed(tmp_path: Path) -> None:
    res = execute(_cfg(tmp_path, "my_learners.toy:Crashing"))
    assert res.status == "failed" and "boom" in res.error


def test_interrupted_run_leaves_no_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.measure as measure

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(measure, "run_stream", interrupt)
    with pytest.raises(KeyboardInterrupt):
        execute(_cfg(tmp_path, "my_learners.toy:Linear"))
    assert not list((tmp_path / "res").rglob("*.csv"))


def test_compare_gives_every_learner_the_identical_stream(tmp_path: Path) -> None:
    base = _cfg(tmp_path, "finetune", lr_grid=(1e-3, 1e-1))
    results = compare(base, ["finetune", "ncm"], [0, 1])
    by_seed: dict[int, set[str]] = {}
    for r in results:
        stream = {row["stream_hash"] for row in _rows(r.csv_path)}
        by_seed.setdefault(r.seed, set()).update(stream)
    assert all(len(h) == 1 for h in by_seed.values())
    assert by_seed[0] != by_seed[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"learner": "finetun"}, "did you mean finetune"),
        ({"scenario": "omniglot-strem"}, "did you mean omniglot-stream"),
        ({"overrides": {"n_clases": "3"}}, "did you mean n_classes"),
        ({"overrides": {"n_classes": "many"}}, "bad value 'many' for n_classes"),
        ({"overrides": {"n_classes": "0"}}, "n_classes"),
        ({"overrides": {"lr": "-1"}}, "lr must be > 0"),
        ({"preset": "nope"}, "no preset 'nope'"),
    ],
)
def test_bad_input_is_a_one_line_harness_error(tmp_path: Path, kwargs, message) -> None:
    cfg = {"scenario": "synthetic-stream", "learner": "finetune", **kwargs}
    with pytest.raises(HarnessError, match=message) as e:
        execute(RunConfig(out_dir=tmp_path / "res", cache_dir=tmp_path / "c", **cfg))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "res").exists()  # nothing written on bad input


def test_wrong_task_and_seed_parsing(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="supports classification"):
        execute(RunConfig(scenario="sine-incremental", learner="ncm", out_dir=tmp_path))
    assert parse_seeds("0-2") == [0, 1, 2] and parse_seeds("4,1") == [1, 4]
    for bad in ("2-0", "a", "-1"):
        with pytest.raises(HarnessError):
            parse_seeds(bad)


def test_learners_on_the_same_pretrained_backbone_share_one_checkpoint(tmp_path: Path) -> None:
    execute(_cfg(tmp_path, "ncm"))
    slda = execute(_cfg(tmp_path, "slda"))
    assert len(list((tmp_path / "cache" / "checkpoints").glob("*.safetensors"))) == 1
    cfg = json.loads(slda.csv_path.with_suffix(".json").read_text())
    assert cfg["meta_train"]["checkpoint_cached"] is True


def test_compare_runs_every_named_variant_unless_one_is_fixed() -> None:
    from harness.experiment import scenario_variants

    runs = scenario_variants("video-frames", {"seed_x": "1"})
    assert [r["ordering"] for r in runs] == ["iid", "instance", "class-instance"]
    assert all(r["seed_x"] == "1" for r in runs)
    assert scenario_variants("video-frames", {"ordering": "iid"}) == [{"ordering": "iid"}]
    assert scenario_variants("synthetic-stream", {}) == [{}]


def test_compare_routes_learner_keys_and_presets_to_the_learners_that_have_them(
        tmp_path: Path) -> None:
    base = _cfg(tmp_path, "finetune", lr_grid=(1e-2,),
                overrides={**SMALL, "buffer_size": "50"}, preset="conv4")
    results = compare(base, ["replay", "ncm"], [0])
    assert [r.status for r in results] == ["ok", "ok"]
    cfgs = [json.loads(r.csv_path.with_suffix(".json").read_text()) for r in results]
    assert cfgs[0]["learner_config"]["buffer_size"] == 50
    assert "buffer_size" not in cfgs[1]["learner_config"]
    with pytest.raises(HarnessError, match="neither"):
        compare(_cfg(tmp_path, "finetune", overrides={"nonsense": "1"}), ["replay"], [0])


def test_gpu_provenance_says_whether_tf32_convolutions_were_on(monkeypatch) -> None:
    import torch

    from harness.results import provenance

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert provenance("cuda")["device"] == "cuda:Fake GPU (tf32 conv on)"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert provenance("cuda")["device"] == "cuda:Fake GPU (tf32 conv off)"
    assert provenance("cpu")["device"].startswith("cpu:")


def test_the_prepared_memo_is_bounded_and_keeps_the_most_recent() -> None:
    from harness.prepare import Prepared, PreparedMemo

    memo = PreparedMemo(size=2)
    a, b, c = (Prepared(state=None, info={"k": k}) for k in "abc")
    memo.put("a", a)
    memo.put("b", b)
    assert memo.get("a") is a  # a is now the most recent
    memo.put("c", c)  # evicts b, the least recently used
    assert memo.get("b") is None and memo.get("a") is a and memo.get("c") is c


def test_lr_selection_and_pretraining_report_their_start_before_any_work(tmp_path: Path) -> None:
    """A phase's first report is (phase, 0, total), so 'done in' of the log counts its first
    rate or epoch too (it did not: selection and pre-training reported only finished units)."""
    calls: list[tuple[str, int, int]] = []

    def progress(phase: str, done: int, total: int, info: dict[str, float]) -> None:
        calls.append((phase.split(": ")[-1], done, total))  # phases are named '<run>: <phase>'

    execute(_cfg(tmp_path, "finetune", lr_grid=(1e-3, 1e-1)), progress=progress)
    selection = [c for c in calls if c[0] == "lr selection"]
    assert selection[0] == ("lr selection", 0, 2) and selection[-1] == ("lr selection", 2, 2)
    calls.clear()
    execute(_cfg(tmp_path, "ncm", overrides={**SMALL, "pretrain_epochs": "2"}),
            progress=progress)
    assert [c for c in calls if c[0] == "pretrain"] == [
        ("pretrain", 0, 2), ("pretrain", 1, 2), ("pretrain", 2, 2)]
