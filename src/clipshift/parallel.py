"""Train several small models at once: one process per model, one thread per process.

The world's models are small (a 0.4M-parameter tower on 32×32 images): a single training run
cannot keep two cores busy, because each step's kernels are too short for intra-op threads to
pay off fully. Measured on a 2-core CPU (``benchmarks/bench_clip_convergence.py --throughput``):
two processes with one thread each train 1.14x as many CLIP images per second as one process
with two threads, and the quickstart's models train in 24% less wall-clock. Recipes that train
many models (the quickstart, the study) hand them to :func:`run_jobs`.

Tasks run in ``spawn``ed processes (never ``fork`` after OpenMP has started). Arguments travel
by pickling; tensors in them go through shared memory (``torch.multiprocessing``), so a large
training set is not copied per task. Results come back in the order of the tasks; an exception
in a task is raised in the caller.

A spawned process imports the caller's main script again: entry points that may start processes call
:func:`check_main_guard` first (from :mod:`clipshift.spawning`), so that a script without
``if __name__ == "__main__":`` fails at once with one line, and a pool whose worker that check stopped
raises ``RuntimeError`` with the same line instead of ``BrokenProcessPool``.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator

from .spawning import MAIN_GUARD, check_main_guard, explain_broken_pool

__all__ = ["MAIN_GUARD", "available_cpus", "check_main_guard", "resolve_jobs", "run_jobs", "run_largest_first"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_jobs(jobs: int) -> int:
    """`jobs` processes, or one per available CPU when `jobs` is 0."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise ValueError(f"jobs must be an integer >= 0 (0: one per CPU), got {jobs!r}")
    return jobs or available_cpus()


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def run_jobs(fn: Callable, tasks: Iterable[tuple], jobs: int, *, names: Iterable[str] | None = None) -> Iterator:
    """``fn(*task)`` for every task, `jobs` at a time (0: one per CPU); yields the results in task
    order as they become available (an exception in a task is raised here, with the task's
    name in a note). With one job, or one task, everything runs in this process
    with the caller's threads. `fn` must be importable (a module-level function)."""
    tasks = list(tasks)
    names = list(names) if names is not None else [str(i) for i in range(len(tasks))]
    jobs = min(resolve_jobs(jobs), max(len(tasks), 1))
    if jobs == 1:
        for task in tasks:
            yield fn(*task)
        return
    import torch.multiprocessing as tmp

    threads = max(1, available_cpus() // jobs)
    with explain_broken_pool(), ProcessPoolExecutor(jobs, mp_context=tmp.get_context("spawn"),
                                                    initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(fn, *task) for task in tasks]
        try:
            for name, future in zip(names, futures):
                try:
                    yield future.result()
                except Exception as error:
                    if hasattr(error, "add_note"):  # Python >= 3.11: the traceback names the task
                        error.add_note(f"(while running task {name} in a worker process)")
                    raise
        finally:
            for future in futures:
                future.cancel()


def run_largest_first(fn: Callable, tasks: list[tuple], jobs: int, *, sizes: list[float],
                      names: list[str] | None = None) -> Iterator[tuple[int, object]]:
    """:func:`run_jobs` with the tasks of largest `sizes` started first, so the processes finish
    together; yields ``(index of the task in tasks, result)`` in the order they were started."""
    order = sorted(range(len(tasks)), key=lambda i: sizes[i], reverse=True)
    names = list(names) if names is not None else [str(i) for i in range(len(tasks))]
    return zip(order, run_jobs(fn, [tasks[i] for i in order], jobs, names=[names[i] for i in order]))
