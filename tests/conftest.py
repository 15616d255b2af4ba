"""Shared test setup."""

import os

import torch

# One thread per test process: the suite runs on 2-core machines where the
# other core is often busy, and torch's OpenMP barriers stall badly then.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
