"""What every recipe's run records: its steps with their timings (:class:`Log`), the versions it ran
with (:func:`versions`), and the rough cost of a training run (:func:`training_cost`)."""

from __future__ import annotations

import platform
import time

from ... import __version__

__all__ = ["Log", "training_cost", "versions"]


class Log:
    """Prints a step with its elapsed time and keeps the timings for the report."""

    def __init__(self, quiet: bool):
        self.quiet, self.start, self.timings = quiet, time.perf_counter(), {}

    def step(self, name: str, seconds: float) -> None:
        self.timings[name] = round(seconds, 1)
        if not self.quiet:
            print(f"[{time.perf_counter() - self.start:6.1f}s] {name} ({seconds:.1f}s)", flush=True)

    def elapsed(self) -> float:
        """Seconds since the log started, rounded to 0.1 s (the run's wall-clock time)."""
        return round(time.perf_counter() - self.start, 1)


def versions() -> dict[str, str]:
    """The versions a run's facts record: clipshift, torch and Python."""
    import torch

    return {"clipshift": __version__, "torch": torch.__version__, "python": platform.python_version()}


def training_cost(entry: dict) -> float:
    """Rough training cost of a planned model: images × epochs (a CLIP step costs about as much)."""
    return entry["train_size"] * entry["epochs"]
