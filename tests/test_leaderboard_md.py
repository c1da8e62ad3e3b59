"""The pasted leaderboard (``leaderboard.md``): one compact table per scenario variant, groups in
numeric parameter order, the metrics of each scenario kind, mean ± 95% CI computed by hand, the
per-episode CI of a single seed; and the same on a copy of the published runs."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from harness import leaderboard as lb
from harness.errors import HarnessError

sys.path.insert(0, str(Path(__file__).parent))
from test_leaderboard import write_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STREAM = "omniglot-stream"
FEWSHOT = "omniglot-fewshot"


def _run(root: Path, run_id: str, learner: str, seed: int, metrics: dict, **params) -> None:
    """One run whose config hash and scenario_params hold `params` (as the harness does)."""
    scenario = params.pop("scenario", STREAM)
    tag = "-".join(f"{k}{v}" for k, v in params.items())
    write_run(root, run_id, learner, seed, metrics, scenario=scenario,
              config_hash=f"cfg-{learner}-{tag}",
              extra={"scenario_params": json.dumps(params, sort_keys=True)})


@pytest.fixture
def stream(tmp_path: Path) -> Path:
    """omniglot-stream at n_classes 100, 600, 10, 50 (written in that order). At 10 classes:
    anml on seeds 0-2 and a partial seed 3, finetune on seeds 0, 1 and a failed seed 2;
    elsewhere anml on one seed."""
    for n, acc in ((100, 0.3), (600, 0.1), (50, 0.35)):
        _run(tmp_path, f"anml-{n}", "anml", 0, {"acc_final_macro": acc}, n_classes=n,
             test_per_class=5)
    for seed, (acc, test, forget) in enumerate([(0.5, 0.55, 0.1), (0.6, 0.65, 0.2),
                                                (0.7, 0.75, 0.3)]):
        metrics = {"acc_final_macro": acc, "meta_test_test_acc": test,
                   "acc_final_micro": test, "forgetting_max": forget, "online_acc": 0.4,
                   "wall_s": 9.0, "bwt": -forget}
        _run(tmp_path, f"anml-10-{seed}", "anml", seed, metrics, n_classes=10, test_per_class=5)
    for seed, acc in enumerate([0.2, 0.4]):
        metrics = {"acc_final_macro": acc, "meta_test_test_acc": acc, "acc_final_micro": acc,
                   "forgetting_max": 0.0, "online_acc": 0.1, "wall_s": 1.0, "bwt": 0.0}
        _run(tmp_path, f"ft-10-{seed}", "finetune", seed, metrics, n_classes=10,
             test_per_class=5)
    _run(tmp_path, "ft-10-2", "finetune", 2, {"failed": 1.0, "wall_s": 1.0}, n_classes=10,
         test_per_class=5)
    stopped = {"acc_final_macro": 0.9, "meta_train_complete": 0.0, "meta_steps_done": 30.0,
               "meta_steps_asked": 100.0}
    _run(tmp_path, "anml-10-3", "anml", 3, stopped, n_classes=10, test_per_class=5)
    return tmp_path / STREAM


def test_one_compact_table_per_variant_in_numeric_order(stream: Path) -> None:
    runs = lb.load_runs(stream)
    md = lb.leaderboard_text(runs)
    titles = [line for line in md.splitlines() if line.startswith("## ")]
    rank = ": ranked by acc_final_macro (higher is better)"
    assert titles == [
        *(f"## {STREAM}, n_classes={n}{rank}" for n in (10, 50, 100, 600)),
        f"## {lb.PARTIAL_TITLE}",
    ]
    # anml: acc (0.5, 0.6, 0.7) -> mean 0.6, sd 0.1, ci95 = t(0.975, 2) 0.1 / sqrt(3) = 0.248414
    # (the same for meta_test_test_acc 0.55..0.75 and forgetting_max 0.1..0.3); online_acc
    # 0.4 on every seed: ci95 0. finetune: (0.2, 0.4) -> mean 0.3, sd 0.141421, ci95 =
    # t(0.975, 1) 0.141421 / sqrt(2) = 12.706205 * 0.1 = 1.270620; its seed 2 failed.
    # acc_final_micro is the same number as meta_test_test_acc: one column; bwt and wall_s
    # are not headline metrics.
    ten = md[: md.index(f"## {STREAM}, n_classes=50")]
    assert ten == (
        f"## {STREAM}, n_classes=10{rank}\n\n"
        "Scenario version 1; parameters `n_classes=10, test_per_class=5`. "
        "Mean ± 95% CI (Student t) over seeds.\n\n"
        "| rank | learner | preset | seeds | failed | acc_final_macro | meta_test_test_acc "
        "| forgetting_max | online_acc |\n"
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        "| 1 | anml | quick | 3 | 0 | 0.600 ± 0.248 | 0.650 ± 0.248 | 0.200 ± 0.248 "
        "| 0.400 ± 0.000 |\n"
        "| 2 | finetune | quick | 2 | 1 | 0.300 ± 1.271 | 0.300 ± 1.271 | 0.000 ± 0.000 "
        "| 0.100 ± 0.000 |\n\n"
    )
    # One seed: the mean alone; no failed run: no failed column.
    fifty = md[md.index(f"## {STREAM}, n_classes=50") : md.index(f"## {STREAM}, n_classes=100")]
    assert fifty.splitlines()[4:] == [
        "| rank | learner | preset | seeds | acc_final_macro | meta_test_test_acc "
        "| forgetting_max | online_acc |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
        "| 1 | anml | quick | 1 | 0.350 |  |  |  |",
        "",
    ]
    # The partial seed is apart, unranked, with the parameter that tells it apart.
    assert md.split(f"## {lb.PARTIAL_TITLE}\n\n")[1] == (
        "| learner | preset | n_classes | seeds | steps done of asked | acc_final_macro |\n"
        "| --- | --- | --- | ---: | ---: | ---: |\n"
        "| anml | quick | 10 | 1 | 30 of 100 | 0.900 |\n"
    )


def test_the_csv_keeps_every_column_in_numeric_order(stream: Path) -> None:
    runs = lb.load_runs(stream)
    csv_path, md_path = lb.write_leaderboard(stream, runs)
    assert lb.leaderboard_text(runs, "csv") == csv_path.read_text()
    assert lb.leaderboard_text(runs, "md") == md_path.read_text(encoding="utf-8")
    board = pd.read_csv(csv_path)
    n = [json.loads(p)["n_classes"] for p in board["scenario_params"]]
    assert n == [10, 10, 50, 100, 600, 10]
    assert board["status"].tolist() == ["complete"] * 5 + ["partial"]
    assert {"bwt_mean", "wall_s_ci95", "acc_final_micro_mean", "git_sha"} <= set(board.columns)
    assert board.loc[1, "failed"] == 1
    assert board.loc[0, "acc_final_macro_ci95"] == pytest.approx(0.248414, abs=1e-6)


def test_the_results_page_has_the_same_compact_tables(stream: Path) -> None:
    page = lb.results_markdown(stream.parent)
    section = lb.leaderboard_markdown(lb.leaderboard_table(lb.load_runs(stream)), level=3)
    assert section in page
    headings = [line for line in page.splitlines() if line.startswith("#")]
    assert headings[1:] == [
        f"## {STREAM}",
        *(f"### {STREAM}, n_classes={n}: ranked by acc_final_macro (higher is better)"
          for n in (10, 50, 100, 600)),
        f"### {lb.PARTIAL_TITLE}",
    ]


def test_the_metric_option_ranks_and_titles(stream: Path) -> None:
    runs = lb.load_runs(stream)
    md = lb.leaderboard_text(runs, "md", primary_metric="forgetting_max")
    assert f"## {STREAM}, n_classes=10: ranked by forgetting_max (lower is better)" in md
    assert "| 1 | finetune | quick | 2 | 1 | 0.000 ± 0.000 | 0.300 ± 1.271 |" in md
    with pytest.raises(HarnessError, match="unknown metric"):
        lb.leaderboard_text(runs, "md", primary_metric="no_such_metric")
    with pytest.raises(HarnessError, match="choose md or csv"):
        lb.leaderboard_text(runs, "html")


def test_one_few_shot_seed_shows_its_episode_ci(tmp_path: Path) -> None:
    few = {"scenario": FEWSHOT}
    _run(tmp_path, "p5", "protonet", 0, {"episode_acc": 0.9, "episode_acc_ci95": 0.02}, ways=5,
         **few)
    for seed, acc in enumerate([0.8, 0.9]):
        _run(tmp_path, f"m5-{seed}", "maml", seed, {"episode_acc": acc, "episode_acc_ci95": 0.03},
             ways=5, **few)
    _run(tmp_path, "m20", "maml", 0, {"episode_acc": 0.7}, ways=20, **few)
    md = lb.leaderboard_text(lb.load_runs(tmp_path / FEWSHOT))
    five, twenty = md.split(f"## {FEWSHOT}, ways=20")
    assert five.startswith(f"## {FEWSHOT}, ways=5: ranked by episode_acc (higher is better)")
    # maml (0.8, 0.9): mean 0.85, sd 0.0707107, ci95 = 12.706205 * 0.0707107 / sqrt(2) = 0.635;
    # protonet, one seed: its 600-episode CI 0.02, marked.
    assert five.splitlines()[4:] == [
        "| rank | learner | preset | seeds | episode_acc |",
        "| ---: | --- | --- | ---: | ---: |",
        f"| 1 | protonet | quick | 1 | 0.900 ± 0.020 {lb.EPISODE_MARK} |",
        "| 2 | maml | quick | 2 | 0.850 ± 0.635 |",
        "",
        f"{lb.EPISODE_MARK} one seed: the 95% CI over its test episodes (1.96 s/√n), not over "
        "seeds.",
        "",
    ]
    assert "| 1 | maml | quick | 1 | 0.700 |" in twenty and lb.EPISODE_MARK not in twenty


def _table(**metrics: list[float]) -> pd.DataFrame:
    """A leaderboard-table-shaped frame: ``<m>_mean`` and ``<m>_ci95`` (0.01) per metric."""
    cols = {}
    for m, means in metrics.items():
        cols[f"{m}_mean"], cols[f"{m}_ci95"] = means, [0.01] * len(means)
    return pd.DataFrame(cols)


def test_the_metrics_of_each_scenario_kind() -> None:
    exps = {f"mse_exp{j}": [float(j)] for j in range(12)}
    sine = _table(mse_final=[1.0], mse_increase=[0.5], online_mse=[2.0], wall_s=[3.0], **exps)
    assert lb.shown_metrics(sine, "mse_final") == [
        "mse_final", "mse_increase", "online_mse", "mse_exp0", "mse_exp11"]
    sets = {m: [i / 10] for i, m in enumerate(
        ["mse_10shot_1step", "mse_5shot_10step", "mse_5shot_1step", "mse_20shot_1step"])}
    sinusoid = _table(episode_mse=[0.9], mse_10shot_10step=[0.9], **sets)
    # mse_10shot_10step holds the numbers of episode_mse: left out.
    assert lb.shown_metrics(sinusoid, "episode_mse") == [
        "episode_mse", "mse_5shot_1step", "mse_5shot_10step", "mse_10shot_1step",
        "mse_20shot_1step"]
    fewshot = _table(episode_acc=[0.9], episode_acc_ci95=[0.01], episode_acc_5shot=[0.95])
    assert lb.shown_metrics(fewshot, "episode_acc") == ["episode_acc", "episode_acc_5shot"]
    video = _table(acc_final_macro=[0.9], meta_test_test_acc=[0.8], acc_final_micro=[0.8],
                   forgetting_max=[0.1], online_acc=[0.7], acc_sequence_majority=[1.0],
                   meta_test_train_acc=[0.95], bwt=[0.0])
    assert lb.shown_metrics(video, "acc_final_macro") == [
        "acc_final_macro", "meta_test_test_acc", "forgetting_max", "online_acc",
        "acc_sequence_majority", "meta_test_train_acc"]
    assert len(lb.shown_metrics(video, "wall_s")) == 1 + lb.MAX_OTHER_METRICS


def test_parameters_sort_as_numbers() -> None:
    cells = ['{"n_classes": 600}', '{"n_classes": 100}', '{"n_classes": 50}',
             '{"n_classes": 150}', '{"n_classes": 10}', '{"n_classes": 500}',
             '{"n_classes": 200}', "", None]
    ordered = sorted(cells, key=lb.params_sort_key)
    assert [lb.parse_params(c).get("n_classes") for c in ordered] == [
        None, None, 10, 50, 100, 150, 200, 500, 600]
    ways = sorted(['{"shots": 1, "ways": 20}', '{"shots": 5, "ways": 5}',
                   '{"shots": 1, "ways": 5}'], key=lb.params_sort_key)
    assert ways[0] == '{"shots": 1, "ways": 5}' and ways[1] == '{"shots": 1, "ways": 20}'
    video = [{"ordering": o, "variant": o, "gap": 2} for o in ("iid", "instance")]
    assert lb.varying_keys(video) == ["ordering"]  # `variant` only repeats it
    assert lb.variant_label(video[0], ["ordering"]) == "ordering=iid"
    assert lb.parse_params("not json") == {"params": "not json"}


# ---------------------------------------------------------------------------- published runs

KINDS = {
    "omniglot-stream": ["acc_final_macro", "forgetting_max", "online_acc"],
    "video-frames": ["acc_final_macro", "meta_test_test_acc", "forgetting_max", "online_acc"],
    "sine-incremental": ["mse_final", "mse_increase", "online_mse", "mse_exp0"],
    "omniglot-fewshot": ["episode_acc"],
    "sinusoid-fewshot": ["episode_mse", "mse_5shot_1step", "mse_5shot_5step"],
}


def _sections(md: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of each titled table of a leaderboard.md."""
    out = []
    for part in md.split("\n## "):
        lines = part.removeprefix("## ").splitlines()
        table = [ln for ln in lines if ln.startswith("| ")]
        if not table:
            continue
        cells = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in table]
        out.append((lines[0], cells[0], cells[2:]))
    return out


@pytest.mark.parametrize("name", sorted(KINDS))
def test_the_published_runs_in_the_compact_format(name: str, tmp_path: Path) -> None:
    copy = tmp_path / name  # published/ is written by sweeps: read a copy
    shutil.copytree(ROOT / "published" / name, copy,
                    ignore=shutil.ignore_patterns("leaderboard.*", "oracle_drop.csv", ".*"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lb.ResultFileWarning)  # a run caught mid-write
        runs = lb.load_runs(copy)
    table = lb.leaderboard_table(runs)
    md = lb.leaderboard_text(runs)
    ranked = [s for s in _sections(md) if ": ranked by " in s[0]]
    complete = table[table["status"] == "complete"]
    variants = list(dict.fromkeys(complete["scenario_params"]))
    assert len(ranked) == len(variants)
    assert variants == sorted(variants, key=lb.params_sort_key)
    for (title, header, rows), params in zip(ranked, variants, strict=True):
        assert title.startswith(name)
        assert header[:4] == ["rank", "learner", "preset", "seeds"]
        metrics = header[header.index("seeds") + 1 :]
        metrics = [m for m in metrics if m != "failed"]
        assert metrics[: len(KINDS[name])] == KINDS[name]
        assert 1 <= len(metrics) <= 1 + lb.MAX_OTHER_METRICS
        groups = complete[complete["scenario_params"] == params].reset_index(drop=True)
        assert [r[1] for r in rows] == groups["learner"].tolist()
        for row, (_, group) in zip(rows, groups.iterrows(), strict=True):
            assert len(row) == len(header)
            m = metrics[0]
            assert row[header.index(m)] == f"{group[f'{m}_mean']:.3f} ± {group[f'{m}_ci95']:.3f}"
    if name == "omniglot-stream":
        n = [int(t.split("n_classes=")[1].split(":")[0]) for t, _, _ in ranked]
        assert n == sorted(n) and len(n) >= 3
        drop = next(s for s in _sections(md) if s[0].startswith("Relative drop"))
        assert "n_classes" in drop[1] and "scenario_params" not in drop[1]
