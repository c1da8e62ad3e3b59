"""Errors the CLI turns into a one-line message and an exit code (docs/design.md D9)."""


class HarnessError(Exception):
    """Bad input: the message says what is wrong and how to fix it (exit code 2)."""


class DataError(HarnessError):
    """A data file is missing or corrupt; the message names the file and the fix."""


class LearnerError(HarnessError):
    """A learner broke the protocol (wrong output shape or type)."""


class DivergedError(Exception):
    """A run produced a non-finite loss or output; it is recorded as diverged (exit code 1)."""


class RunTimeout(BaseException):
    """A run passed its `--timeout`; recorded as `timed_out`. A BaseException, so that a
    learner's own `except Exception` cannot swallow it."""
