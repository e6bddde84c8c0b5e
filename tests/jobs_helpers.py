"""Tasks for the parallel-jobs tests, in a module that imports nothing heavy: a spawned worker
imports the module of its task, and importing a test module (torch, open_clip, ...) costs seconds."""

import os


def pid_and_square(x):
    return os.getpid(), x * x


def fails(x):
    raise ValueError(f"bad task {x}")
