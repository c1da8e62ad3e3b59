"""The one way the harness writes a file: atomically, with the user's umask (docs/design.md
D6, D9).

Every file is first written to a temp file in the target folder, flushed to disk and renamed
over the target, so a reader sees the old file or the new one, never half of one. Temp files
are named `.<name>.<host>.<pid>.<random>.tmp`; one left behind by a killed process is removed by
the next write into the same folder, only when it was written on this host by a process that
is gone: a concurrent writer's temp file is never touched, also not one of a writer on another
machine sharing the folder (where its pid means nothing).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_TEMP = re.compile(r"^\..+\.([A-Za-z0-9_-]+)\.(\d+)\.[0-9a-f]+\.tmp$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove temp files of writers that no longer run; return what was removed."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.match(p.name)
        if m and m.group(1) == _HOST and not _alive(int(m.group(2))):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


def temp_path(path: Path) -> Path:
    """A fresh temp file beside `path`, created empty with mode 0666: the kernel applies the
    umask (reading the umask means setting it, which races with other threads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def commit(tmp: Path, path: Path) -> None:
    """fsync `tmp` and rename it over `path` (atomic on POSIX)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically; the file gets mode 0666 less the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data)
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if missing, never removed) for the
    block: processes that share a cache train one checkpoint once, the others wait for it.
    The lock goes with the process, so a killed holder never leaves it held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
