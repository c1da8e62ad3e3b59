"""Result files never hold the paths of the machine that made them (docs/design.md D6).

Absolute paths in a run's config, error message or traceback are made relative to the working
folder or the package root, or cut to their last part.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import harness


def portable(obj: Any) -> Any:
    """`obj` with every absolute path made relative to the working folder when inside it, and
    dropped (None) otherwise: result files never hold the paths of the machine that made them."""
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [portable(v) for v in obj]
    if isinstance(obj, Path) or (isinstance(obj, str) and obj.startswith("/")):
        p = Path(obj)
        if not p.is_absolute():
            return str(p)
        try:
            return str(p.resolve().relative_to(Path.cwd().resolve()))
        except (ValueError, OSError):
            return None
    return obj


_TRACE_FILE = re.compile(r'File "(/[^"]+)"')


def portable_trace(text: str) -> str:
    """A traceback with each file named relative to its package root (or site-packages), never
    by the machine's absolute path."""
    root = str(Path(harness.__file__).resolve().parent.parent) + "/"

    def short(m: re.Match[str]) -> str:
        path = m.group(1)
        if path.startswith(root):
            return f'File "{path[len(root):]}"'
        if "site-packages/" in path:
            return f'File "{path.rsplit("site-packages/", 1)[1]}"'
        return f'File "{Path(path).name}"'

    return _TRACE_FILE.sub(short, text)


_ABS_PATH = re.compile(r"(?<![\w.])/[^\s\"',;:()]+")


def portable_text(text: str) -> str:
    """Free text (an error message) with each absolute path shortened as `portable` does, or
    to its last part when outside the working folder."""

    def short(m: re.Match[str]) -> str:
        rel = portable(m.group(0))
        return rel if rel is not None else f".../{Path(m.group(0)).name}"

    return _ABS_PATH.sub(short, text)
