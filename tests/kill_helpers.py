"""Start a clipshift command in another process and SIGKILL it once it has written a checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from clipshift.train.loop import latest_checkpoint


def kill_after_first_checkpoint(arguments: list[str], checkpoints: Path, timeout: float = 120) -> Path:
    """Run ``python -m clipshift.cli *arguments``, SIGKILL it as soon as `checkpoints` holds a
    checkpoint, and return that checkpoint (asserting the process died by the signal, with a
    checkpoint written)."""
    command = [sys.executable, "-m", "clipshift.cli", *arguments]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while latest_checkpoint(checkpoints) is None and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = latest_checkpoint(checkpoints)
    assert process.returncode == -signal.SIGKILL and killed_at is not None, process.stderr.read()[-2000:]
    return killed_at
