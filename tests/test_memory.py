"""harness/memory.py: the malloc setting applies once per process, and can be turned off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = ("from harness.memory import keep_freed_memory as k; "
        "print(k(), k())")


def _run(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                          check=True, env={**os.environ, **env}).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
def test_applied_once_on_linux_and_off_when_asked():
    assert _run({"HARNESS_KEEP_MEMORY": "1"}) == "True True"
    assert _run({"HARNESS_KEEP_MEMORY": "0"}) == "False False"
