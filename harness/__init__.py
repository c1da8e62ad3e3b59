"""harness: a benchmark harness for continual and online learning.

The Python API (`harness.api`; heavy modules are imported only when a function is called):
`harness.run`, `harness.compare`, `harness.load_runs`, `harness.leaderboard_table`. The
leaderboard functions on run rows are in the subpackage `harness.leaderboard`.
"""

__version__ = "0.3.0"

from harness.api import compare, leaderboard_table, load_runs, run  # noqa: E402

__all__ = ["__version__", "compare", "leaderboard_table", "load_runs", "run"]
