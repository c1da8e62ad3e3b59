"""Test-wide settings: one torch thread, as the CLI's default (batch-1 online steps are slower
with more threads, and much slower on a busy machine)."""

import torch

torch.set_num_threads(1)
