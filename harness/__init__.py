"""harness: a benchmark harness for continual and online learning."""

__version__ = "0.1.0"
