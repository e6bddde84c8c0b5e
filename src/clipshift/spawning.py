"""Worker processes and the script that started them: one check, so that a call from a script
without ``if __name__ == "__main__":`` fails at once with one line instead of starting again in
every worker.

A process started with ``spawn`` (or ``forkserver``) imports the parent's main script again before it
runs its task. A recipe called at the top level of that script, outside the guard, then starts again
in every worker (the world generated once per process) until the pool breaks with a long traceback.
:func:`check_main_guard`, called first by every entry point that may start processes, stops that:

- in the script itself, before any work, when the call would start processes that import it again
  and the call is not under the guard (the script's source is read to tell);
- in a worker that reaches the call while it imports the script (the check above cannot see every
  script: code run through ``exec``, say): the worker exits, and :func:`explain_broken_pool` around
  the pool that started it turns its ``BrokenProcessPool`` into ``RuntimeError(MAIN_GUARD)``.

Notebooks, ``python -c``, ``python -m package``, guarded scripts, the ``clipshift`` command and pytest
pass: their main module is not imported again, or the call is under the guard. Standard library only.
"""

from __future__ import annotations

import ast
import multiprocessing
import os
import sys
import tempfile
import uuid
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["MAIN_GUARD", "MAIN_GUARD_STDIN", "check_main_guard", "explain_broken_pool"]

MAIN_GUARD = ("clipshift: this call starts worker processes, which import your script again and would run "
              "it again: put the call under `if __name__ == \"__main__\":`, or pass jobs=1 (and workers=1)")
MAIN_GUARD_STDIN = ("clipshift: this call starts worker processes, which import the main script again, and "
                    "a script read from standard input cannot be: save it as a file with the call under "
                    "`if __name__ == \"__main__\":`, or pass jobs=1 (and workers=1)")
MARK = "CLIPSHIFT_GUARD_MARK"  # set for the workers of a pool: the file a stopped worker leaves


def _importing_main() -> bool:
    """Whether this process is a worker still importing its parent's main script (multiprocessing's
    own flag for that phase, set by spawn and forkserver)."""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def _reimported_main() -> str | None:
    """The file that a spawned worker runs again as its main module, as multiprocessing decides it
    (None: none, e.g. in a notebook, under ``python -c``, or for a package's ``__main__``)."""
    main = sys.modules.get("__main__")
    spec_name = getattr(getattr(main, "__spec__", None), "name", None)
    if spec_name is not None:  # python -m NAME: re-imported by name, except a package's __main__
        if spec_name == "__main__" or spec_name.endswith(".__main__"):
            return None
        return getattr(main.__spec__, "origin", None)
    path = getattr(main, "__file__", None)
    if path is None or os.path.splitext(os.path.basename(path))[0] == "ipython":
        return None
    return os.path.normpath(os.path.join(multiprocessing.process.ORIGINAL_DIR or os.getcwd(), path))


def _main_frame(path: str):
    """The frame running the main script's top-level code, when this call comes from it."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__":
            try:
                return frame if os.path.samefile(code.co_filename, path) else None
            except OSError:
                return None
        frame = frame.f_back
    return None


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round, possibly inside an ``and``)."""
    for node in ast.walk(test):
        if isinstance(node, ast.Compare) and all(isinstance(op, ast.Eq) for op in node.ops):
            operands = [node.left, *node.comparators]
            if (any(isinstance(o, ast.Name) and o.id == "__name__" for o in operands)
                    and any(isinstance(o, ast.Constant) and o.value == "__main__" for o in operands)):
                return True
    return False


def _guarded(path: str, line: int) -> bool:
    """Whether `line` of the script at `path` lies in the body of an ``if __name__ == "__main__":``
    (True when the source cannot be read or parsed: the check must never stop a script wrongly)."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return True
    return any(isinstance(node, ast.If) and _is_main_test(node.test)
               and node.body[0].lineno <= line <= node.body[-1].end_lineno for node in ast.walk(tree))


def _will_start(processes: int) -> bool:
    if processes == 1:
        return False
    if processes == 0:  # one per CPU
        try:
            return len(os.sched_getaffinity(0)) > 1
        except (AttributeError, OSError):
            return (os.cpu_count() or 1) > 1
    return True


def check_main_guard(processes: int = 2, start_method: str | None = None) -> None:
    """Stop a call that the worker processes it starts would start again (see the module's text).

    `processes`: how many worker processes the call may start (0: one per CPU; 1: none, it runs in
    this process); `start_method`: how they start (None: multiprocessing's default; ``fork`` imports
    nothing again). In the main script, outside the guard, when the call would start processes that
    import the script again: ``RuntimeError(MAIN_GUARD)`` (``MAIN_GUARD_STDIN`` for a script read from
    standard input, which no worker can import). In a worker importing the script: it exits, saying
    why on stderr unless the pool that started it says so (:func:`explain_broken_pool`)."""
    if _importing_main():
        mark = os.environ.get(MARK)
        if mark:
            Path(mark).touch()
            raise SystemExit(1)
        raise SystemExit(MAIN_GUARD)
    method = start_method or multiprocessing.get_start_method(allow_none=True) \
        or multiprocessing.get_all_start_methods()[0]
    if method == "fork" or not _will_start(processes):
        return
    script = _reimported_main()
    if script is None:
        return
    if not os.path.isfile(script):  # python - < script.py: __file__ is '<stdin>'
        raise RuntimeError(MAIN_GUARD_STDIN)
    frame = _main_frame(script)
    if frame is not None and not _guarded(script, frame.f_lineno):
        raise RuntimeError(MAIN_GUARD)


@contextmanager
def explain_broken_pool() -> Iterator[None]:
    """Around a process pool: its workers learn where to leave a mark when :func:`check_main_guard`
    stops them, and a ``BrokenProcessPool`` raised inside becomes ``RuntimeError(MAIN_GUARD)`` (its
    chain dropped) when one did; any other failure passes unchanged."""
    path = os.path.join(tempfile.gettempdir(), f"clipshift-guard-{os.getpid()}-{uuid.uuid4().hex}")
    previous = os.environ.get(MARK)
    os.environ[MARK] = path  # workers inherit the environment when they start
    try:
        yield
    except BrokenProcessPool:
        if os.path.exists(path):
            raise RuntimeError(MAIN_GUARD) from None
        raise
    finally:
        if previous is None:
            os.environ.pop(MARK, None)
        else:
            os.environ[MARK] = previous
        Path(path).unlink(missing_ok=True)
