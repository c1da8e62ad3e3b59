"""Fault injection, slow tier: kill campaigns, two writers into one folder, memory over a long
stream (`pytest -m slow tests/test_faults_slow.py`; the campaigns are in tests/faultkit.py, and
benchmarks/reliability.py runs them too and records their counts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import faultkit as fk  # noqa: E402

pytestmark = pytest.mark.slow

KILLS_PER_SIGNAL = 20
"""Each campaign sends each of SIGKILL, SIGTERM and SIGINT this many times."""


@pytest.fixture(scope="module")
def server():
    with fk.ForkServer() as s:
        yield s


@pytest.mark.parametrize("target", [fk.COMPARE, fk.META], ids=["compare", "meta-training"])
def test_kill_campaign_loses_nothing_and_resumes_bit_identical(
        server: fk.ForkServer, tmp_path: Path, target: fk.Target) -> None:
    res = fk.campaign(server, target, tmp_path, KILLS_PER_SIGNAL, seed=2024)
    sent = {s: res.kills[s] + res.finished_first[s] for s in fk.SIGNALS}
    assert sent == dict.fromkeys(fk.SIGNALS, KILLS_PER_SIGNAL)
    # Most signals land while the command runs (delays are uniform over the reference's time;
    # the others find it finished, which the campaign checks as well).
    assert sum(res.kills.values()) >= 3 * KILLS_PER_SIGNAL // 2, res.kills
    assert all(res.kills[s] >= KILLS_PER_SIGNAL // 4 for s in fk.SIGNALS), res.kills
    assert res.problems() == {}
    assert res.rounds_completed >= 1


def test_two_compares_into_one_folder_at_once_lose_nothing(
        server: fk.ForkServer, tmp_path: Path) -> None:
    got = fk.concurrent(server, tmp_path)
    assert got["exit_codes"] == [0, 0, 0, 0]
    # finetune, ncm, slda, Linear x 2 seeds; ncm and slda ran in both at the same time
    assert got["runs"] == got["expected_runs"] == 8
    assert got["invalid"] == {} and got["lost"] == [] and got["extra"] == []
    assert got["changed"] == [] and got["stale_temps_left"] == []


def test_a_real_process_interrupted_mid_compare_keeps_its_finished_runs(tmp_path: Path) -> None:
    """The fork server's children behave as `harness` does: checked once on a real process."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from harness.cli import app; app(prog_name='harness')",
           *fk.COMPARE.command(out, tmp_path / "cache")]
    proc = subprocess.Popen(cmd, cwd=fk.ROOT, env=fk.child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    folder = out / fk.COMPARE.scenario_folder
    deadline = time.monotonic() + 300
    while not (folder.exists() and fk.run_csvs(folder)) and proc.poll() is None:
        assert time.monotonic() < deadline, "no run finished in 300 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [f"error: {fk.INTERRUPTED}"]
    snap = fk.snapshot(folder)
    assert snap.invalid == {} and 1 <= len(snap.valid) < 6
    assert fk.temp_files(out) == []


def test_peak_rss_does_not_grow_with_the_stream_beyond_its_log(tmp_path: Path) -> None:
    small, _ = fk.peak_rss_of_stream(20_000, tmp_path)
    big, _ = fk.peak_rss_of_stream(100_000, tmp_path)
    # What 80,000 more samples must cost: their inputs and labels in the scenario and their
    # prequential log entries (24 bytes each, 1.83 MiB); half again for allocator rounding,
    # and 1 MiB for what two processes differ by anyway. A run that kept anything per batch
    # (a tensor is ~400 bytes of objects) would add 3 MiB or more.
    bound = 1.5 * fk.log_bytes_per_sample() * 80_000 / 2**20 + 1.0
    assert big - small < bound, (small, big, bound)


def test_memory_hog_under_an_address_space_limit_is_a_failed_run(tmp_path: Path) -> None:
    """A real process with an address space limit (as a batch system sets): the 1 TiB request
    fails, the run is a failed row, the harness exits 1."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (24 << 30, resource.RLIM_INFINITY))

    cmd = [sys.executable, "-c", "from harness.cli import app; app(prog_name='harness')",
           "run", "--scenario", "synthetic-stream", "--learner", "my_learners.faulty:MemoryHog",
           "--baselines", "none", "--no-tune", "--quiet", "--out", str(tmp_path), *fk.CHEAP]
    proc = subprocess.run(cmd, cwd=fk.ROOT, env=fk.child_env(), capture_output=True,
                          text=True, timeout=300, preexec_fn=limit)
    assert proc.returncode == 1, proc.stderr
    assert "my_learners.faulty:MemoryHog seed 0 failed: RuntimeError:" in proc.stderr
    assert "can't allocate memory" in " ".join(proc.stderr.split())
    (run,) = fk.run_csvs(tmp_path / "synthetic-stream")
    assert fk.snapshot(tmp_path / "synthetic-stream").valid[run.stem] == {"failed": ("1.0", "1")}
    assert os.path.getsize(run) > 0
