"""Test-wide settings: one torch thread, also for the CLI invoked in-process or in a
subprocess (HARNESS_THREADS), so the suite's timing does not depend on the machine's cores and
parallel test workers never oversubscribe them."""

import os

import torch

os.environ["HARNESS_THREADS"] = "1"
torch.set_num_threads(1)
