"""Test-wide settings: one torch thread, also for the CLI invoked in-process or in a
subprocess (HARNESS_THREADS), so the suite's timing does not depend on the machine's cores and
parallel test workers never oversubscribe them."""

import os

import pytest
import torch

os.environ["HARNESS_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """One torch thread for the test, whatever an earlier test in the process set (a CLI run
    in-process may set all cores); restored afterwards. Modules of small nets use it: extra
    intra-op threads only add contention there."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def need(module: str):
    """Import an optional extra's module; skip the test without it, except under CI=true, where
    a missing extra is a broken install and must fail, not skip."""
    import importlib

    import pytest

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.fixture
def usage_error():
    """Run `harness` arguments in-process and return the output, asserting a usage error: exit
    2, one line, no traceback."""
    from typer.testing import CliRunner

    from harness.cli import app

    def invoke(args: list[str]) -> str:
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "Traceback" not in res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
        return res.output

    return invoke
