"""Suite-wide settings."""

from __future__ import annotations

import os

# CI runs two xdist workers on two cores. Torch's default of one thread per core in each worker
# oversubscribes the CPUs, and OpenMP's spin-waiting then makes small convolutions up to 100x slower.
# Set before any test module imports torch (torch reads it once, at start-up); subprocesses inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("MKL_NUM_THREADS", "1")
