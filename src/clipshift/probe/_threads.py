"""Small dense problems run single-threaded.

The probes make many tiny tensor operations (L-BFGS steps of the concept probes, one head pass
per pruning draw, Gram matrices of a few hundred images). For those, OpenMP's synchronisation
costs more than a second thread saves, and far more when another process holds a core (measured
on a 2-core machine: concept probes of 1200 × 64 features, 46 concepts: 0.03 s with 1 or 2 threads
when idle; 0.04 s with 1 thread and 0.3-0.6 s with 2 when the other core is busy).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

SMALL_WORK = 2e7  # multiply-adds per step below which one thread is used


@contextmanager
def threads_for(work: float):
    """One torch thread inside the block when `work` (multiply-adds per step) is small; the
    caller's setting is restored on exit."""
    previous = torch.get_num_threads()
    if work < SMALL_WORK and previous > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
