"""Fault injection, fast tier: nothing lost, nothing silently wrong.

A learner that alters its input, breaks or hangs; a damaged result file, checkpoint or cache
entry; a process killed between two writes; hostile files. Each case ends in a named error, a
`failed` / `timed_out` row or a left-out file, never in another learner's changed number, an
average over a broken file or an exit code 0. The kill campaigns are in test_faults_slow.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import re
import resource
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from harness import checkpoint, fileio, results
from harness.cli import app
from harness.errors import DataError
from harness.experiment import RunConfig, execute
from harness.portable import portable_text

sys.path.insert(0, str(Path(__file__).parent))
import faultkit as fk  # noqa: E402

TINY = {"n_classes": "4", "train_per_class": "10", "test_per_class": "5"}
SETS = ["--set", ",".join(f"{k}={v}" for k, v in TINY.items())]
FAULTY = "my_learners.faulty"
runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


def rows(csv_path: Path) -> dict[str, str]:
    with csv_path.open(newline="") as f:
        return {r["metric"]: r["value"] for r in csv.DictReader(f)}


def said(res, learner: str, seed: int, status: str) -> str:
    """The error on the one line the CLI prints about a run that did not finish (without the
    run id and the pointer to its traceback after it)."""
    prefix = f"{learner} seed {seed} {status}: "
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith(prefix)]
    return line.removeprefix(prefix).rsplit(" (run ", 1)[0]


def column(csv_path: Path, name: str) -> set[str]:
    with csv_path.open(newline="") as f:
        return {r[name] for r in csv.DictReader(f)}


def runs_of(folder: Path, learner: str) -> list[Path]:
    return [p for p in fk.run_csvs(folder) if column(p, "learner") == {learner}]


def compare(out: Path, cache: Path, learners: str, seeds: str = "0", *extra: str):
    return cli("compare", "--scenario", "synthetic-stream", "--learners", learners, "--seeds",
               seeds, "--no-tune", "--quiet", "--out", str(out), "--cache-dir", str(cache),
               *SETS, *extra)


# -- 1a: a learner that alters its input ---------------------------------------------------------


def test_predict_in_place_changes_no_other_learners_number(tmp_path: Path) -> None:
    both = compare(tmp_path / "both", tmp_path / "c", f"{FAULTY}:PredictInPlace,finetune")
    alone = compare(tmp_path / "alone", tmp_path / "c", "finetune")
    assert both.exit_code == 0 and alone.exit_code == 0, both.output + alone.output
    (with_faulty,) = runs_of(tmp_path / "both" / "synthetic-stream", "finetune")
    (by_itself,) = runs_of(tmp_path / "alone" / "synthetic-stream", "finetune")
    # Without copies of the test inputs, finetune scores 0.25 here instead of 0.5.
    assert rows(with_faulty)["acc_final_macro"] == rows(by_itself)["acc_final_macro"] == "0.5"
    assert rows(with_faulty)["online_acc"] == rows(by_itself)["online_acc"]


def test_check_names_a_predict_that_modifies_its_input() -> None:
    res = cli("check", f"{FAULTY}:PredictInPlace")
    assert res.exit_code == 1
    assert ("error: 1 check(s) failed; first: predict does not learn: predict modified its "
            "input in place; compute on a copy (x = x.clone())") in res.output


# -- 1b: damaged result CSVs -----------------------------------------------------------------------


def test_damaged_result_csvs_are_named_and_never_averaged(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = compare(out, tmp_path / "c", "my_learners.toy:Linear", "0-4")
    assert res.exit_code == 0, res.output
    folder = out / "synthetic-stream"
    paths = sorted(fk.run_csvs(folder), key=lambda p: column(p, "seed").pop())
    intact = paths[0]
    for path, (kind, damage) in zip(paths[1:], fk.CSV_DAMAGES.items(), strict=True):
        old = rows(path)["wall_s"]
        damage(path)
        why = results.verify_run(path)
        assert why.startswith("the CSV does not match its manifest ("), (kind, why)
        assert why.endswith("written): truncated, edited or half-replaced"), (kind, why)
        if kind == "cut_in_last_value":  # a plain CSV reader would take a shorter number
            assert rows(path)["peak_rss_mb"] != old
    res = cli("leaderboard", str(folder), "--format", "csv")
    assert res.exit_code == 0, res.output
    warned = sorted(ln.split(": ")[1] for ln in res.stderr.splitlines()
                    if ln.startswith("warning:"))
    assert warned == sorted(str(p) for p in paths[1:])
    assert all(ln.endswith("; left out") for ln in res.stderr.splitlines()
               if ln.startswith("warning:"))
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    (row,) = [r for r in table if r["learner"] == "my_learners.toy:Linear"]
    assert row["n_seeds"] == "1"
    assert float(row["acc_final_macro_mean"]) == float(rows(intact)["acc_final_macro"])


# -- 1c: a bit-flipped checkpoint ------------------------------------------------------------------


def test_bit_flipped_checkpoint_is_a_failed_row_naming_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    res = compare(tmp_path / "first", cache, "ncm,finetune")
    assert res.exit_code == 0, res.output
    (ckpt,) = (cache / "checkpoints").glob("pretrained-backbone-*.safetensors")
    assert fk.flip_mantissa_bits(ckpt, every=7) > 100
    res = compare(tmp_path / "second", cache, "ncm,slda,finetune")
    assert res.exit_code == 1
    want = (f"checkpoint {ckpt.name} is unreadable (its tensors do not match their checksum "
            f"(corrupt)); delete {ckpt.name} and its .json in {ckpt.parent} to retrain")
    for learner in ("ncm", "slda"):
        assert said(res, learner, 0, "failed") == want
        (run,) = runs_of(tmp_path / "second" / "synthetic-stream", learner)
        assert column(run, "status") == {"failed"} and rows(run)["failed"] == "1.0"
        meta = json.loads(run.with_suffix(".json").read_text())
        # The file keeps the message without the machine's absolute cache path.
        assert "DataError" in meta["traceback"]
        assert meta["error"] == want.replace(str(ckpt.parent), ".../checkpoints")
    # The compare went on: finetune after them ran, with the number it has alone.
    (ft,) = runs_of(tmp_path / "second" / "synthetic-stream", "finetune")
    (ft0,) = runs_of(tmp_path / "first" / "synthetic-stream", "finetune")
    assert column(ft, "status") == {"ok"}
    assert rows(ft)["acc_final_macro"] == rows(ft0)["acc_final_macro"]


def test_a_failed_runs_line_is_its_error_verbatim_on_one_line(
        tmp_path: Path, address_space_limit: None) -> None:
    """Long errors stay on one line in a log, and brackets in them are text, not markup."""
    res = cli("run", "--scenario", "synthetic-stream", "--learner", f"{FAULTY}:MemoryHog",
              "--baselines", "none", "--no-tune", "--quiet", "--out", str(tmp_path), *SETS)
    assert res.exit_code == 1
    (run,) = fk.run_csvs(tmp_path / "synthetic-stream")
    error = json.loads(run.with_suffix(".json").read_text())["error"]
    assert error.startswith("RuntimeError: [enforce fail at ") and len(error) > 160
    assert said(res, f"{FAULTY}:MemoryHog", 0, "failed") == error


# -- 2: buggy learners -----------------------------------------------------------------------------


BUGS = {
    "ObserveKeyError": ("KeyError: 1", "self.counts[int(y[0])] += 1"),
    "ObserveZeroDivision": ("ZeroDivisionError: float division by zero",
                            "self.rate = 1.0 / self.seen"),
    "ObserveAssertion": ("AssertionError: expected batches of at least 8 samples, got 1",
                         "assert len(x) >= 8"),
    "InitOSError": ("FileNotFoundError: [Errno 2] No such file or directory: "
                    "'/nonexistent/faulty-learner-weights.bin'", 'with open("'),
    "ObserveExit": ("SystemExit(0) raised by the learner's code", "sys.exit(0)"),
    "PredictLabels": ("learner.predict returned shape [10], expected [10, 4] (batch, classes)",
                      "in _check_output"),  # the harness's check, not the learner, raised
    "MemoryHog": ("RuntimeError: [enforce fail at", "torch.empty(1 << 40"),
}


@pytest.fixture
def address_space_limit():
    """At most 16 GiB more address space: the 1 TiB request fails whatever the system's
    overcommit policy (nothing is touched either way)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    vsize = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[20])
    limit = vsize + (16 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (min(limit, hard) if hard > 0 else limit, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_each_learner_bug_is_a_failed_row_with_its_traceback(
        tmp_path: Path, bug: str, address_space_limit: None) -> None:
    error, line = BUGS[bug]
    res = execute(RunConfig(scenario="synthetic-stream", learner=f"{FAULTY}:{bug}",
                            out_dir=tmp_path, tune_lr=False, overrides=dict(TINY)))
    assert res.status == "failed" and res.error.startswith(error), res.error
    assert results.verify_run(res.csv_path, check_npz=True) == ""
    assert column(res.csv_path, "status") == {"failed"}
    assert set(rows(res.csv_path)) == {"failed", "wall_s", "peak_rss_mb"}
    meta = json.loads(res.csv_path.with_suffix(".json").read_text())
    assert meta["status"] == "failed" and meta["error"] == portable_text(res.error)
    assert meta["traceback"].startswith("Traceback (most recent call last):")
    assert not re.search(r'File "/', meta["traceback"]), "no absolute path in the file"
    assert line in meta["traceback"]


def test_sys_exit_in_observe_does_not_end_the_harness_with_0(tmp_path: Path) -> None:
    res = cli("run", "--scenario", "synthetic-stream", "--learner", f"{FAULTY}:ObserveExit",
              "--baselines", "none", "--no-tune", "--quiet", "--out", str(tmp_path), *SETS)
    assert res.exit_code == 1
    assert said(res, f"{FAULTY}:ObserveExit", 0, "failed") == \
        "SystemExit(0) raised by the learner's code"
    res = cli("check", f"{FAULTY}:ObserveExit")
    assert res.exit_code == 1
    assert "first: observe: the learner called sys.exit(0)" in res.output


def test_check_reports_a_constructor_error_in_one_line() -> None:
    res = cli("check", f"{FAULTY}:InitOSError")
    assert res.exit_code == 1
    assert ("error: 1 check(s) failed; first: build: FileNotFoundError: [Errno 2] No such file "
            "or directory: '/nonexistent/faulty-learner-weights.bin'") in res.output
    assert "Traceback" not in res.output


def test_compare_finishes_every_other_run_after_a_failing_learner(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = compare(out, tmp_path / "c", f"finetune,{FAULTY}:ObserveKeyError", "0-1")
    assert res.exit_code == 1
    assert [said(res, f"{FAULTY}:ObserveKeyError", s, "failed") for s in (0, 1)] == [
        "KeyError: 1"] * 2
    assert sum(" failed: " in ln for ln in res.stderr.splitlines()) == 2
    folder = out / "synthetic-stream"
    ft = runs_of(folder, "finetune")
    assert len(ft) == 2 and all(column(p, "status") == {"ok"} for p in ft)
    assert all(results.verify_run(p, check_npz=True) == "" for p in fk.run_csvs(folder))
    alone = compare(tmp_path / "alone", tmp_path / "c", "finetune", "0-1")
    assert alone.exit_code == 0
    assert sorted(rows(p)["acc_final_macro"] for p in ft) == sorted(
        rows(p)["acc_final_macro"] for p in runs_of(tmp_path / "alone" / "synthetic-stream",
                                                      "finetune"))


def test_ctrl_c_in_a_learner_stops_the_compare_and_keeps_finished_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = compare(out, tmp_path / "c", f"finetune,{FAULTY}:Interrupted,slda")
    assert res.exit_code == 130
    assert res.stderr.strip().splitlines() == [
        "error: interrupted; finished runs and checkpoints are kept, re-run to resume"]
    (ft,) = fk.run_csvs(out / "synthetic-stream")  # the interrupted run and slda: no files
    assert column(ft, "learner") == {"finetune"} and results.verify_run(ft) == ""


def test_timeout_turns_a_slow_learner_into_a_timed_out_row(tmp_path: Path) -> None:
    old = signal.getsignal(signal.SIGALRM)
    res = cli("run", "--scenario", "synthetic-stream", "--learner", f"{FAULTY}:SlowObserve",
              "--baselines", "none", "--no-tune", "--quiet", "--timeout", "1", "--out",
              str(tmp_path), *SETS)
    assert res.exit_code == 1, res.output
    assert said(res, f"{FAULTY}:SlowObserve", 0, "timed_out") == \
        "the run passed its time limit of 1 s (--timeout)"
    (run,) = fk.run_csvs(tmp_path / "synthetic-stream")
    assert column(run, "status") == {"timed_out"} and rows(run)["timed_out"] == "1.0"
    assert 1.0 <= float(rows(run)["wall_s"]) < 5.0
    assert "RunTimeout" in json.loads(run.with_suffix(".json").read_text())["traceback"]
    # The alarm is off and its handler restored: nothing fires later.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) == old


# -- 3: files --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_files_get_0666_less_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        res = compare(tmp_path / "out", tmp_path / "cache", "ncm")
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    made = [p for p in tmp_path.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in made}
    assert {".csv", ".json", ".npz", ".md", ".safetensors"} <= kinds
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in made} == {
        p.name: oct(mode) for p in made}
    dirs = [p for p in tmp_path.rglob("*") if p.is_dir()]
    assert {oct(p.stat().st_mode & 0o777) for p in dirs} == {oct(0o777 & ~umask)}


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_of_dead_writers_go_live_ones_stay(tmp_path: Path) -> None:
    host = fileio._HOST
    dead = tmp_path / f".r.csv.{host}.{_dead_pid()}.0a1b2c.tmp"
    live_proc = subprocess.Popen(["sleep", "60"])
    try:
        live = tmp_path / f".r.csv.{host}.{live_proc.pid}.0a1b2c.tmp"
        other_host = tmp_path / f".r.csv.elsewhere.{_dead_pid()}.0a1b2c.tmp"
        mine = tmp_path / f".r.csv.{host}.{os.getpid()}.0a1b2c.tmp"
        for p in (dead, live, other_host, mine):
            p.write_bytes(b"half a file")
        fileio.atomic_write_bytes(tmp_path / "r.csv", b"a,b\n")
        assert not dead.exists()
        # A live writer's, this process's own, and one written on another machine sharing the
        # folder (whose pid says nothing here) stay.
        assert live.exists() and mine.exists() and other_host.exists()
        assert (tmp_path / "r.csv").read_bytes() == b"a,b\n"
    finally:
        live_proc.kill()
        live_proc.wait()


def _write(folder: Path, run_id: str, value: float) -> Path:
    base = {"scenario": "s", "learner": "l", "seed": 0, "status": "ok"}
    return results.write_run(folder, "s", run_id, base, {"acc": (value, 10)}, {}, {},
                             {"R": np.full((2, 2), value)})[0]


class Killed(BaseException):
    """The process dies here: nothing after this point is written."""


@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_a_run_killed_between_its_writes_is_the_old_run_or_absent(
        tmp_path: Path, kill_at: int, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[str] = []
    real = results.atomic_write_bytes

    def dying(path: Path, data: bytes) -> None:
        writes.append(path.suffix)
        if len(writes) == kill_at:
            raise Killed
        real(path, data)

    old = _write(tmp_path, "r", 0.25)
    monkeypatch.setattr(results, "atomic_write_bytes", dying)
    with pytest.raises(Killed):
        _write(tmp_path, "r", 0.75)  # the same run again, with another number
    writes.clear()
    with pytest.raises(Killed):
        _write(tmp_path, "new", 0.75)  # a run that was not there before
    monkeypatch.undo()
    # Replaced: the old run, whole and valid, until the new CSV is in place.
    assert results.verify_run(old) == "" and rows(old)["acc"] == "0.25"
    if kill_at < 3:  # its arrays too, until the new .npz is written
        assert results.load_arrays(old)["R"][0, 0] == 0.25
    else:
        with pytest.raises(DataError, match="the .npz does not match its manifest"):
            results.load_arrays(old)
    # New: no CSV, so nothing for a reader to find.
    assert not (tmp_path / "s" / "new.csv").exists()
    assert fk.run_csvs(tmp_path) == [old]


def test_two_writers_of_one_run_at_once_leave_one_whole_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes finishing the same run together (two compares into one folder): writer
    a is held after its JSON until writer b has written its three files, if b can get in.
    Unserialised, b's JSON ends beside a's CSV (invalid for good); write_run lets one writer
    at a time into a folder, so b waits, a's hold times out, and b replaces a's whole run."""
    real = results.atomic_write_bytes
    a_json, b_done = threading.Event(), threading.Event()

    def held(path: Path, data: bytes) -> None:
        real(path, data)
        if threading.current_thread().name == "a" and path.suffix == ".json":
            a_json.set()
            b_done.wait(timeout=1.0)

    monkeypatch.setattr(results, "atomic_write_bytes", held)
    errors: list[BaseException] = []

    def writer(value: float, done: threading.Event | None) -> None:
        try:
            _write(tmp_path, "r", value)
        except BaseException as e:  # noqa: BLE001  (reported by the assertion below)
            errors.append(e)
        if done is not None:
            done.set()

    a = threading.Thread(target=writer, args=(0.25, None), name="a")
    a.start()
    assert a_json.wait(timeout=10)
    b = threading.Thread(target=writer, args=(0.75, b_done), name="b")
    b.start()
    a.join(timeout=30)
    b.join(timeout=30)
    assert errors == []
    path = tmp_path / "s" / "r.csv"
    assert results.verify_run(path, check_npz=True) == ""
    assert rows(path)["acc"] == "0.75" and results.load_arrays(path)["R"][0, 0] == 0.75
    assert [p.name for p in (tmp_path / "s").glob("*.tmp")] == []


def test_a_new_csv_over_an_old_run_without_its_json_is_reported(tmp_path: Path) -> None:
    """What a kill between writes left with harness versions that wrote the JSON last: the
    new NPZ and CSV with the old JSON."""
    old = _write(tmp_path / "a", "r", 0.25)
    new = _write(tmp_path / "b", "r", 0.75)
    for suffix in (".npz", ".csv"):
        old.with_suffix(suffix).write_bytes(new.with_suffix(suffix).read_bytes())
    assert results.verify_run(old) == ("the CSV does not match its manifest (1 data lines, 1 "
                                       "written): truncated, edited or half-replaced")
    with pytest.raises(DataError, match="the CSV does not match its manifest"):
        results.load_arrays(old)
    res = cli("leaderboard", str(tmp_path / "a"))
    assert res.exit_code == 2
    assert f"warning: {old}: the CSV does not match its manifest" in res.stderr


def test_a_checkpoint_killed_between_its_writes_loads_the_last_complete_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.partial.safetensors"
    checkpoint.save(path, {"w": torch.full((3,), 1.0)}, {"step": 1})
    checkpoint.save(path, {"w": torch.full((3,), 2.0)}, {"step": 2})
    real = checkpoint.atomic_write_bytes
    writes: list[Path] = []

    def dying(p: Path, data: bytes) -> None:  # the process dies between the two writes
        writes.append(p)
        if len(writes) == 2:
            raise Killed
        real(p, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", dying)
    with pytest.raises(Killed):
        checkpoint.save(path, {"w": torch.full((3,), 3.0)}, {"step": 3})
    monkeypatch.undo()
    tensors, meta = checkpoint.load(path)
    assert meta["step"] == 2 and torch.equal(tensors["w"], torch.full((3,), 2.0))
    checkpoint.save(path, {"w": torch.full((3,), 4.0)}, {"step": 4})
    tensors, meta = checkpoint.load(path)
    assert meta["step"] == 4 and tensors["w"][0] == 4.0


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # unpickling would create the marker


def test_a_pickle_in_a_run_npz_is_refused_never_unpickled(tmp_path: Path) -> None:
    csv_path = _write(tmp_path, "r", 0.5)
    marker = tmp_path / "unpickled"
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    buf = io.BytesIO()
    np.savez(buf, R=evil)
    npz = csv_path.with_suffix(".npz")
    npz.write_bytes(buf.getvalue())
    meta = json.loads(csv_path.with_suffix(".json").read_text())
    meta["files"]["npz"]["sha256"] = fileio.sha256_bytes(buf.getvalue())  # a matching manifest
    csv_path.with_suffix(".json").write_text(json.dumps(meta))
    assert results.verify_run(csv_path, check_npz=True) == ""
    with pytest.raises(DataError, match="cannot be read without unpickling") as exc:
        results.load_arrays(csv_path)
    assert str(csv_path) in str(exc.value) and "\n" not in str(exc.value)
    assert not marker.exists()
    pickle.loads(pickle.dumps(evil[0])).close()
    assert marker.exists()  # the payload was live


def _with_checksum(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.with_suffix(".json").write_text(json.dumps({"sha256": fileio.sha256_bytes(data)}))


@pytest.mark.parametrize("kind", ["huge_header_length", "header_longer_than_file",
                                  "not_json", "truncated", "bit_flipped", "json_without_sum"])
def test_hostile_or_damaged_checkpoints_are_refused_naming_the_file(
        tmp_path: Path, kind: str) -> None:
    path = tmp_path / "model.safetensors"
    checkpoint.save(path, {"w": torch.linspace(0, 1, 64)}, {"step": 1})
    good = path.read_bytes()
    if kind == "huge_header_length":  # a checksum that matches: only the parser can refuse
        _with_checksum(path, struct.pack("<Q", 1 << 62) + b"{}")
    elif kind == "header_longer_than_file":
        _with_checksum(path, struct.pack("<Q", 10_000) + good[8:200])
    elif kind == "not_json":
        _with_checksum(path, struct.pack("<Q", 8) + b"\x80\x04K\x01.  " + b"\0" * 16)
    elif kind == "truncated":
        path.write_bytes(good[:-100])
    elif kind == "bit_flipped":
        fk.flip_mantissa_bits(path, every=9)
    elif kind == "json_without_sum":
        path.with_suffix(".json").write_text(json.dumps({"step": 1}))
    with pytest.raises(DataError) as exc:
        checkpoint.load(path)
    msg = str(exc.value)
    assert msg.startswith("checkpoint model.safetensors is unreadable (") and "\n" not in msg
    assert msg.endswith(f"delete model.safetensors and its .json in {tmp_path} to retrain")


def test_a_corrupt_partial_checkpoint_fails_the_run_naming_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    sets = ["--set", "meta_steps=100000,time_limit_s=0.5,checkpoint_every_s=0,"
            "test_episodes=5,val_episodes=2"]

    def run() -> object:
        return cli("run", "--scenario", "sinusoid-fewshot", "--learner", "maml", "--baselines",
                   "none", "--no-tune", "--quiet", "--out", str(tmp_path / "out"),
                   "--cache-dir", str(cache), *sets)

    res = run()
    assert res.exit_code == 0, res.output  # stopped by its time limit: a partial run
    (partial,) = (cache / "checkpoints").glob("*.partial.safetensors")
    fk.flip_mantissa_bits(partial, every=5)
    res = run()
    assert res.exit_code == 1
    assert said(res, "maml", 0, "failed") == (
        f"checkpoint {partial.name} is unreadable (its tensors do not match their checksum "
        f"(corrupt)); delete {partial.name} and its .json in {partial.parent} to retrain")


def test_foreign_files_in_a_results_folder_are_named_or_ignored(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert compare(out, tmp_path / "c", "my_learners.toy:Linear", "0-1").exit_code == 0
    folder = out / "synthetic-stream"
    good = fk.run_csvs(folder)
    (folder / "notes.csv").write_bytes(os.urandom(300))
    (folder / "x.csv").mkdir()
    (folder / "x.csv" / "y.txt").write_text("not a run")
    copy = folder / "copy.csv"
    copy.write_bytes(good[0].read_bytes())  # a run's CSV copied without its JSON
    res = cli("leaderboard", str(folder), "--format", "csv")
    assert res.exit_code == 0, res.output
    warned = sorted(ln.split(": ")[1] for ln in res.stderr.splitlines()
                    if ln.startswith("warning:"))
    assert warned == sorted([str(folder / "notes.csv"), str(copy)])
    (row,) = list(csv.DictReader(io.StringIO(res.stdout)))
    assert row["n_seeds"] == "2"
    want = np.mean([float(rows(p)["acc_final_macro"]) for p in good])
    assert float(row["acc_final_macro_mean"]) == pytest.approx(want, abs=1e-12)


def test_a_corrupt_or_hostile_video_frame_cache_is_decoded_again(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    import scenarios.video as video

    tree = video.write_frame_tree(tmp_path / "frames", n_classes=2, seqs_per_class=1)
    cache = tmp_path / "cache"
    cfg = video.VideoFramesConfig(ordering="instance", image_size=8, gap=1,
                                  pretrain_pool="none")
    first = cfg.build(0, tree, cache_dir=cache)
    entries = sorted((cache / "video").glob("*.npz"))
    assert len(entries) == 2
    marker = tmp_path / "unpickled"
    # One entry: frame bytes changed, its zip and checksum fields intact.
    blob = bytearray(entries[0].read_bytes())
    start = blob.index(b"frames.npy") + 200
    blob[start : start + 50] = bytes(b ^ 0x55 for b in blob[start : start + 50])
    entries[0].write_bytes(bytes(blob))
    # The other: a pickle where the metadata belongs.
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(marker)
    with np.load(entries[1]) as z:
        frames, times = z["frames"], z["times"]
    buf = io.BytesIO()
    np.savez(buf, frames=frames, times=times, meta=evil)
    entries[1].write_bytes(buf.getvalue())
    again = cfg.build(0, tree, cache_dir=cache)
    assert again.stream_hash == first.stream_hash and not marker.exists()
    for e in entries:  # decoded again and rewritten
        assert video._read_cache(e) is not None
