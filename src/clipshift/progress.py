"""One place that builds progress bars.

On a terminal the bars refresh as usual; when stderr is a file or a pipe (CI logs,
``nohup``), they refresh at most every 30 s so logs stay readable.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(*, total: int, desc: str, unit: str, enabled: bool = True, **kwargs) -> tqdm:
    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.1 if interactive else 30.0)
    kwargs.setdefault("leave", False)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, **kwargs)
