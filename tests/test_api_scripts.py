"""The documented Python API works from a plain script: every ```python block of README.md and
docs/*.md runs as written, saved as a script in a fresh folder and run by a fresh interpreter; and
a script that calls a recipe without ``if __name__ == "__main__":`` fails at once with one line
(clipshift.spawning) instead of starting the recipe again in every worker process.

Examples that read a tiny quickstart run (``runs/tiny/...``) without making one get the run of the
README's example (made once per session); those that read published tables get miniature ones."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from clipshift.spawning import MAIN_GUARD, MAIN_GUARD_STDIN
from test_docs import code_blocks, doc_files
from test_tables import write_openclip_table, write_timm_folder

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = "run_quickstart(load_config(\"tiny\"), \"runs/tiny\")"  # the README's example makes runs/tiny
TINY_RUN = "runs/tiny"
RECIPE_SECONDS = 1200  # a ceiling for a tiny recipe on a busy 2-core CPU (about a minute on a quiet one)
FAIL_FAST_SECONDS = 60  # an unguarded script must have failed by then (imports included)

# What each example must leave behind, by a piece of its code: every example is listed here.
EXPECTED = {
    QUICKSTART: dict(files=["runs/tiny/report.md", "runs/tiny/results.csv", "runs/tiny/er.csv"],
                     stdout=["runs/tiny/report.md", "effective_robustness"]),
    "run_study(": dict(files=["runs/study-quick/report.md", "runs/study-quick/summary.csv",
                              "runs/study-quick/verdicts.json"], stdout=["report.md"], slow=True),
    "run_finetune(": dict(files=["runs/finetune-tiny/report.md", "runs/finetune-tiny/wise.csv"],
                          stdout=["report.md"]),
    "openclip_results.csv": dict(files=[], stdout=["imagenet-v2", "ViT-B-32/openai"]),
    "plot_multi_id_fit(": dict(files=["er_multi_average.png"], stdout=["weight_test_diverse"]),
    "model_colours(": dict(files=["figures/er_average.png"], stdout=["#"]),
    "agreement_on_the_line(": dict(files=["preds.npz"], stdout=["er_aline_d", "holds"]),
}


@dataclass(frozen=True)
class Example:
    code: str
    where: tuple[str, ...]  # FILE:LINE of every copy in the docs

    @property
    def key(self) -> str:
        keys = [k for k in EXPECTED if k in self.code]
        assert len(keys) == 1, f"{self.where[0]}: say in EXPECTED what this example leaves behind ({keys})"
        return keys[0]


def examples() -> list[Example]:
    """The docs' Python examples, each once (the README's is also in python-api.md)."""
    found: dict[str, list[str]] = {}
    for path in doc_files():
        for block in code_blocks(path):
            if block.lang == "python":
                code = "\n".join(block.lines) + "\n"
                found.setdefault(code, []).append(f"{path.relative_to(ROOT)}:{block.line}")
    return [Example(code, tuple(where)) for code, where in found.items()]


def run_script(folder: Path, code: str, *, timeout: float, stdin: bool = False,
               name: str = "example.py") -> subprocess.CompletedProcess:
    """`code` saved as folder/`name` and run there by a fresh interpreter (or fed on its stdin)."""
    script = folder / name
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, CLIPSHIFT_PROGRESS="never")
    command = [sys.executable, "-"] if stdin else [sys.executable, name]
    with open(script, encoding="utf-8") if stdin else open(os.devnull) as feed:
        return subprocess.run(command, cwd=folder, stdin=feed, capture_output=True, text=True,
                              timeout=timeout, env=env)


def check_outputs(example: Example, folder: Path, done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, f"{example.where[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    expected = EXPECTED[example.key]
    missing = [f for f in expected["files"] if not (folder / f).is_file()]
    assert not missing, f"{example.where[0]}: not written: {missing}"
    for text in expected["stdout"]:
        assert text in done.stdout, f"{example.where[0]}: {text!r} not printed:\n{done.stdout[-2000:]}"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, Example]:
    """The README's example run once: the folder it ran in, its process, the example."""
    [example] = [e for e in examples() if e.key == QUICKSTART]
    assert any(w.startswith("README.md:") for w in example.where), example.where
    folder = tmp_path_factory.mktemp("readme-example")
    return folder, run_script(folder, example.code, timeout=RECIPE_SECONDS), example


def prepare(folder: Path, example: Example, tiny: Path | None) -> None:
    """The inputs an example reads without making them."""
    if "openclip_results.csv" in example.code:
        write_openclip_table(folder / "openclip_results.csv")
        write_timm_folder(folder / "timm_results")
    if TINY_RUN in example.code and QUICKSTART not in example.code:
        assert tiny is not None
        (folder / "runs").mkdir()
        (folder / TINY_RUN).symlink_to(tiny / TINY_RUN, target_is_directory=True)


def example_params():
    out = []
    for example in examples():
        marks = [pytest.mark.slow] if EXPECTED[example.key].get("slow") else []
        out.append(pytest.param(example, id=example.where[0], marks=marks))
    return out


def test_the_docs_hold_python_examples():
    found = examples()
    assert len(found) >= 5, [e.where for e in found]
    assert {e.key for e in found} == set(EXPECTED), "an entry of EXPECTED matches no example"
    for example in found:  # every example that runs a recipe keeps it under the guard
        if re.search(r"run_(quickstart|study|finetune)\(", example.code):
            assert 'if __name__ == "__main__":' in example.code, example.where


@pytest.mark.parametrize("example", example_params())
def test_example_runs_as_a_script(example, request, tmp_path):
    tiny = None
    if TINY_RUN in example.code:  # the README's example, or one that reads its run
        tiny, done, readme = request.getfixturevalue("tiny_run")
        check_outputs(readme, tiny, done)
        if example == readme:
            return
    prepare(tmp_path, example, tiny)
    check_outputs(example, tmp_path, run_script(tmp_path, example.code, timeout=RECIPE_SECONDS))


# --- a script without the guard ----------------------------------------------------------------------------------

UNGUARDED = """\
from clipshift.recipes.quickstart import load_config, run_quickstart

report = run_quickstart(load_config("tiny"), "runs/tiny")
print("finished", report)
"""


def assert_stopped_at_once(done: subprocess.CompletedProcess, seconds: float, folder: Path, message: str) -> None:
    assert done.returncode != 0, done.stdout
    assert seconds < FAIL_FAST_SECONDS, f"took {seconds:.0f} s to fail"
    assert done.stderr.strip().splitlines()[-1] == f"RuntimeError: {message}", done.stderr[-3000:]
    assert done.stderr.count(message) == 1, done.stderr[-3000:]  # no worker repeats it
    assert done.stdout.count("images generated") == 0 and not (folder / TINY_RUN / "world").exists()
    assert "BrokenProcessPool" not in done.stderr


def test_an_unguarded_script_fails_at_once_with_one_line(tmp_path):
    start = time.perf_counter()
    done = run_script(tmp_path, UNGUARDED, timeout=300)
    assert_stopped_at_once(done, time.perf_counter() - start, tmp_path, MAIN_GUARD)


def test_a_script_read_from_stdin_fails_at_once(tmp_path):
    start = time.perf_counter()
    done = run_script(tmp_path, UNGUARDED, timeout=300, stdin=True)
    assert_stopped_at_once(done, time.perf_counter() - start, tmp_path, MAIN_GUARD_STDIN)


def test_one_job_needs_no_guard(tmp_path):
    """jobs=1 and workers=1: nothing is started, nothing imports the script again (checked without
    running the recipe: the check passes, and the bad setting after it is what stops the call)."""
    code = UNGUARDED.replace("import load_config, run_quickstart", "import QuickstartConfig, run_quickstart").replace(
        'load_config("tiny")', "QuickstartConfig(jobs=1, workers=1, train_size=-5)")
    done = run_script(tmp_path, code, timeout=300)
    assert done.returncode != 0 and "clipshift:" not in done.stderr, done.stderr[-2000:]
    assert "train_size" in done.stderr.strip().splitlines()[-1], done.stderr[-2000:]


def test_a_worker_that_reaches_the_check_stops_the_pool_with_the_same_line(tmp_path):
    """A call the script's own check cannot see (here: one that starts nothing in the script) is
    stopped in the workers that import the script; the pool says why, once, with no chain."""
    code = textwrap.dedent("""\
        import operator
        from clipshift.parallel import check_main_guard, run_jobs

        check_main_guard(1)  # starts nothing here; in a worker importing this script, it stops the worker
        print(list(run_jobs(operator.add, [(1, 2), (3, 4)], jobs=2)))
        """)
    done = run_script(tmp_path, code, timeout=300)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == f"RuntimeError: {MAIN_GUARD}", done.stderr[-3000:]
    assert done.stderr.count(MAIN_GUARD) == 1 and done.stderr.count("Traceback") == 1, done.stderr
    assert "BrokenProcessPool" not in done.stderr and "During handling" not in done.stderr


GUARDED_POOLS = """\
import multiprocessing
import operator

from clipshift.parallel import check_main_guard, run_jobs
from clipshift.world.distributions import get_distribution
from clipshift.world.generate import generate_split


def main():
    check_main_guard(2, "spawn")
    print(list(run_jobs(operator.add, [(1, 2), (3, 4)], jobs=2)))
    split = generate_split(get_distribution("narrow"), 200, split="x", workers=2, progress=False)
    print(len(split))


if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")  # world generation too: its workers import this script
    main()
"""


def test_a_guarded_script_starts_workers_with_spawn(tmp_path):
    done = run_script(tmp_path, GUARDED_POOLS, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["[3,", "7]", "200"]


def test_unguarded_world_generation_with_spawn_fails_at_once(tmp_path):
    code = textwrap.dedent("""\
        import multiprocessing
        from clipshift.world.distributions import get_distribution
        from clipshift.world.generate import generate_split

        multiprocessing.set_start_method("spawn")  # as on macOS: the workers import this script again
        print(len(generate_split(get_distribution("narrow"), 200, split="x", workers=2, progress=False)))
        """)
    start = time.perf_counter()
    done = run_script(tmp_path, code, timeout=300)
    assert done.returncode != 0
    assert time.perf_counter() - start < FAIL_FAST_SECONDS
    assert done.stderr.strip().splitlines()[-1] == f"RuntimeError: {MAIN_GUARD}", done.stderr[-3000:]


def test_notebook_cells_and_python_c_need_no_guard(tmp_path):
    """A notebook runs cells in ``__main__`` with no script file to import again: spawn works."""
    cell = ("import operator\nfrom clipshift.parallel import check_main_guard, run_jobs\n"
            "check_main_guard(2, 'spawn')\nprint(list(run_jobs(operator.add, [(1, 2), (3, 4)], jobs=2)))\n")
    code = (f"import __main__\nexec(compile({cell!r}, '/tmp/ipykernel_1/2041.py', 'exec'), __main__.__dict__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[3, 7]"


def test_the_check_passes_under_pytest():
    from clipshift.parallel import check_main_guard

    check_main_guard(0, "spawn")
    check_main_guard(4)
