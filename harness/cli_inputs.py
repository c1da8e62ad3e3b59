"""The CLI's input checks: every argument is checked, with a one-line message that says what
to write, before any work starts and before anything is written."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Any


def parse_sets(pairs: list[str] | None) -> dict[str, str]:
    from harness.errors import HarnessError

    result: dict[str, str] = {}
    expanded: list[str] = []
    for pair in pairs or []:
        parts = pair.split(",")
        # `--set ways=5,shots=1` sets two keys; `--set lr_grid=1e-3,1e-2` is one list value.
        expanded.extend(parts if len(parts) > 1 and all("=" in p for p in parts) else [pair])
    for pair in expanded:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"--set {pair!r}: write KEY=VALUE, e.g. --set n_classes=600")
        result[key.strip()] = value.strip()
    return result


def writable(text: str, flag: str) -> Path:
    """The folder `text` names, checked to take files before any work: its missing folders
    are made and an empty temp file is written there (`harness.fileio`), then both removed,
    so a run that stops on bad input leaves nothing behind."""
    from harness import fileio
    from harness.errors import HarnessError

    if not text.strip():
        raise HarnessError(f"{flag} is empty; name a folder, e.g. {flag} results")
    folder = Path(text)
    made: list[Path] = []  # the folders this check creates, deepest first
    tmp: Path | None = None
    try:
        p = folder
        while not p.exists() and p != p.parent:
            made.append(p)
            p = p.parent
        tmp = fileio.temp_path(folder / ".write-check")
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        why = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)) or "error"
        raise HarnessError(f"{flag} {text}: cannot write there ({why}); pass a folder you can "
                           "write to") from None
    finally:
        if tmp is not None:
            with suppress(OSError):
                tmp.unlink()
        for q in made:  # deepest first
            with suppress(OSError, ValueError):
                q.rmdir()
    return folder


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0..4]; '0,2,5' -> [0, 2, 5]; '3' -> [3]: sorted, each once, every seed in
    [0, SEED_MAX], at most MAX_SEEDS of them (checked before a range is expanded)."""
    from harness.config import MAX_SEEDS, SEED_MAX  # noqa: PLC0415
    from harness.errors import HarnessError  # noqa: PLC0415

    seeds: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise HarnessError(
                f"--seeds {text!r}: use a range like 0-4 or a list like 0,1,2") from None
        if not (0 <= first <= SEED_MAX and 0 <= last <= SEED_MAX):
            raise HarnessError(f"--seeds {text!r}: seeds must be integers from 0 to {SEED_MAX}")
        if last < first:
            raise HarnessError(f"--seeds {text!r}: a range runs low to high, e.g. {last}-{first}")
        if len(seeds) + (last - first + 1) > MAX_SEEDS:
            raise HarnessError(f"--seeds {text!r}: at most {MAX_SEEDS} seeds per command; "
                               "split the seeds over several commands")
        seeds.update(range(first, last + 1))
    return sorted(seeds)


def check_device(device: str) -> None:
    """Refuse a device torch cannot use here, before any work."""
    import re

    import torch

    from harness.errors import HarnessError

    m = re.fullmatch(r"cpu|mps|cuda(?::(\d{1,4}))?", device)
    if m is None:
        raise HarnessError(f"--device must be cpu, cuda, cuda:N or mps, got {device!r}")
    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise HarnessError(f"--device {device} asked for, but torch sees no GPU; use "
                               "--device cpu")
        if m.group(1) is not None and int(m.group(1)) >= n:
            raise HarnessError(f"--device {device}: torch sees {n} GPU(s), cuda:0 to "
                               f"cuda:{n - 1}")
    if device == "mps" and not torch.backends.mps.is_available():
        raise HarnessError("--device mps asked for, but torch sees no MPS (Apple GPU); use "
                           "--device cpu")


def run_config(scenario: str, learner: str, seed: int, preset: str, device: str, out_dir: str,
                cache_dir: str | None, data_dir: Path | None, sets: list[str] | None,
                eval_every: int, no_tune: bool, timeout: float) -> Any:
    """The RunConfig of the command line, every argument checked (the output and cache
    folders last: they are test-written)."""
    from harness.config import check_seed
    from harness.experiment import RunConfig

    check_seed(seed)
    check_device(device)
    cfg = RunConfig(scenario=scenario, learner=learner, seed=seed, preset=preset,
                    device=device, out_dir=Path(out_dir), data_dir=data_dir,
                    overrides=parse_sets(sets), eval_every=eval_every, tune_lr=not no_tune,
                    timeout_s=timeout)
    cfg.out_dir = writable(out_dir, "--out")
    cfg.cache_dir = writable(cache_dir, "--cache-dir") if cache_dir is not None else None
    return cfg


def names(text: str, flag: str) -> list[str]:
    """Comma-separated learner names, each once, in order; at least one."""
    from harness.errors import HarnessError

    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise HarnessError(f"{flag} {text!r} names no learner; write learner ids separated by "
                           "commas, e.g. finetune,replay (see harness list learners)")
    return names
