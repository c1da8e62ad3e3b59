"""How the scripts of docs/scripts save what they print (`--out FILE`, by convention
`docs/scripts/results/<script>-<case>.json`): through `harness.fileio.atomic_write_text`, with
what is needed to read the figures: harness version, git sha of the harness source, torch
version, torch threads, date and the exact command. docs/maml.md quotes these files by name.
Without `--out` a script only prints.
"""

from __future__ import annotations

import json
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import harness
from harness.fileio import atomic_write_text
from harness.results import source_state


def write(path: str | None, records: list[dict[str, Any]]) -> None:
    """Write `records` (the JSON lines the script printed) with their provenance to `path`;
    nothing when `path` is None."""
    if path is None:
        return
    sha, diff = source_state()
    data = {
        "script": Path(sys.argv[0]).name,
        "command": shlex.join(["python", *sys.argv]),
        "provenance": {
            "harness_version": harness.__version__, "git_sha": sha, "source_diff": diff,
            "torch_version": torch.__version__, "python_version": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "records": records,
    }
    atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")
