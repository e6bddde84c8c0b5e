"""Where a resumed run started, from its metrics.jsonl: the training loop writes a
``{"run": ..., "event": "resume", "step": N}`` record when it continues from a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path


def where_resumed(metrics: Path, run: str) -> tuple[int, list[int], list[int]]:
    """(the step of `run`'s last resume, the steps it logged after it, the epochs it logged after it).
    Fails when the log has no resume record for `run`: the run started again from step 0."""
    records = [json.loads(line) for line in Path(metrics).read_text().splitlines() if line.strip()]
    records = [r for r in records if r.get("run") == run]
    starts = [i for i, r in enumerate(records) if r.get("event") == "resume"]
    assert starts, f"no resume record for {run!r} in {Path(metrics).name}: it did not resume from a checkpoint"
    after = records[starts[-1] + 1:]
    steps = [r["step"] for r in after if "loss" in r and "epoch" not in r]  # per-step records (log_every)
    return records[starts[-1]]["step"], steps, [r["epoch"] for r in after if "epoch" in r]
