"""One place that builds progress bars, and the one rule for when they draw.

``CLIPSHIFT_PROGRESS`` chooses: ``auto`` (the default) draws a redrawing tqdm bar when stderr is a
terminal (or a Jupyter kernel) and otherwise writes plain lines, with no carriage returns: one when
the work starts, one per 10% done (at most one every 30 s) and one when it ends, so logs written to
files or pipes (CI, ``nohup``) stay readable; ``always`` draws the tqdm bar wherever stderr goes;
``never`` draws nothing. ``enabled=False`` (``--quiet``) draws nothing whatever the setting.
"""

from __future__ import annotations

import os
import sys
import time
import warnings

from tqdm.auto import tqdm

ENV = "CLIPSHIFT_PROGRESS"
MODES = ("auto", "always", "never")


def progress_mode() -> str:
    """``auto``, ``always`` or ``never``, from ``CLIPSHIFT_PROGRESS`` (``auto`` when unset; an unknown
    value warns and counts as ``auto``)."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in MODES:
        warnings.warn(f"{ENV}={value!r} is not one of {', '.join(MODES)}; using auto", stacklevel=3)
        return "auto"
    return value


def interactive(stream=None) -> bool:
    """Whether `stream` (stderr by default) is a terminal, or a Jupyter kernel's output (tqdm's widgets)."""
    stream = sys.stderr if stream is None else stream
    if type(stream).__module__.split(".")[0] == "ipykernel":
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(*, total: int, desc: str, unit: str, enabled: bool = True, **kwargs):
    """A tqdm bar, a :class:`PlainProgress` or a disabled bar, by the rule above. Every kind has
    ``update``, ``set_postfix``, ``close`` and works as a context manager."""
    mode = progress_mode() if enabled else "never"
    kwargs.setdefault("leave", False)
    if mode == "never":
        return tqdm(total=total, desc=desc, unit=unit, disable=True, **kwargs)
    stream = kwargs.get("file") or sys.stderr
    if mode == "always" or interactive(stream):
        kwargs.setdefault("mininterval", 0.1)
        return tqdm(total=total, desc=desc, unit=unit, **kwargs)
    return PlainProgress(total=total, desc=desc, unit=unit, file=stream, initial=kwargs.get("initial", 0),
                         mininterval=kwargs.get("mininterval", 30.0))


class PlainProgress:
    """Progress as whole lines (no carriage returns) for a stderr that is not a terminal: a line at the
    start, one each time another tenth is done (no sooner than `mininterval` seconds after the last
    line) and one at :meth:`close`."""

    def __init__(self, *, total: int, desc: str, unit: str, file=None, initial: int = 0, mininterval: float = 30.0):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.file, self.mininterval = file, mininterval
        self.postfix = ""
        self.start = self.last_time = time.monotonic()
        self.initial = initial
        self.last_tenth = self._tenth()
        self.closed = False
        self._line(f"{self.n}/{self.total} {self.unit}" + (" (resumed)" if initial else ""))

    def _tenth(self) -> int:
        return 10 * self.n // self.total if self.total else 0

    def _line(self, text: str) -> None:
        stream = self.file if self.file is not None else sys.stderr
        stream.write(f"{self.desc}: {text}{self.postfix}\n")
        stream.flush()

    def _rate(self) -> str:
        seconds = time.monotonic() - self.start
        rate = (self.n - self.initial) / seconds if seconds > 0 else 0.0
        return f"{seconds:.0f} s, {rate:.3g} {self.unit}/s"

    def update(self, n: int = 1) -> None:
        self.n += n
        now, tenth = time.monotonic(), self._tenth()
        if tenth > self.last_tenth and now - self.last_time >= self.mininterval and self.n < (self.total or 0):
            self.last_tenth, self.last_time = tenth, now
            self._line(f"{self.n}/{self.total} {self.unit} ({10 * tenth}%, {self._rate()})")

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = "".join(f", {k}={v}" for k, v in values.items())

    def set_description(self, desc=None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._line(f"{'done' if self.n >= (self.total or 0) else 'stopped at'} {self.n}/{self.total} {self.unit} "
                   f"({self._rate()})")

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
