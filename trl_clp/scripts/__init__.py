"""Command-line entry points installed with the package (`trl-clp train`, `python -m trl_clp.scripts.train`)."""

from __future__ import annotations

import os

# Below this many cores, the threads of one process are not worth their cost: the tiny models this package
# trains on CPUs gain nothing from intra-op threads, and on a busy 2-core machine torch's default (one thread per
# core, spinning while they wait) made plain `python` 17-100× slower than `accelerate launch`, which sets
# OMP_NUM_THREADS=1.
SMALL_MACHINE_CORES = 4


def limit_cpu_threads() -> int | None:
    """Use one CPU thread per process on a small machine, as `accelerate launch` does, unless the user chose.

    Does nothing when `OMP_NUM_THREADS` is set (the user's choice, or Accelerate's) or the machine has more than
    `SMALL_MACHINE_CORES` cores (torch's default is kept there). Returns the thread count it set, else None.
    """
    if "OMP_NUM_THREADS" in os.environ or (os.cpu_count() or 1) > SMALL_MACHINE_CORES:
        return None
    import torch

    torch.set_num_threads(1)
    return 1
