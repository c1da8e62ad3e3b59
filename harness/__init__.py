"""harness: a benchmark harness for continual and online learning."""

__version__ = "0.2.0"
