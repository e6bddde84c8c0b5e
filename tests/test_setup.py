"""The set-up the tests rely on: `make install` provides Chromium for the browser tests and Slurm for
the plan.slurm test (idempotent, only as root with apt-get, a one-line note otherwise), CI runs `make test`
then `make test-slow`, the dev extras hold the test dependencies. Only the Makefile's browser and slurm
steps run here, with paths that never install anything."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _browser_step(**variables) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(ROOT), "browser", *(f"{k}={v}" for k, v in variables.items())],
                          capture_output=True, text=True, timeout=60)


@needs_make
def test_browser_step_does_nothing_when_chromium_is_there():
    run = _browser_step(CHROMIUM=sys.executable, APT_GET="false")  # any executable stands for Chromium
    assert run.returncode == 0 and run.stdout == "" and run.stderr == ""


@needs_make
def test_browser_step_without_chromium_or_apt_get_notes_it_and_continues(tmp_path):
    run = _browser_step(CHROMIUM=tmp_path / "chromium", APT_GET=tmp_path / "apt-get")
    assert run.returncode == 0 and run.stdout.count("\n") == 1
    assert run.stdout.startswith(f"note: {tmp_path / 'chromium'} is missing (as root: apt-get install chromium)")


@needs_make
@pytest.mark.skipif(os.geteuid() != 0, reason="the install branch runs only as root")
def test_browser_step_whose_install_fails_notes_it_and_continues(tmp_path):
    run = _browser_step(CHROMIUM=tmp_path / "chromium", APT_GET="false")  # `false update` fails: nothing installed
    assert run.returncode == 0
    assert run.stdout.splitlines()[-1] == ("note: false install chromium failed; the tests that open report.html "
                                           "in a browser will be skipped")


def _slurm_step(**variables) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(ROOT), "slurm", *(f"{k}={v}" for k, v in variables.items())],
                          capture_output=True, text=True, timeout=60)


@needs_make
def test_slurm_step_does_nothing_when_slurm_and_munge_are_there():
    run = _slurm_step(SLURM_BINARIES=sys.executable, APT_GET="false")  # any executable stands for each binary
    assert run.returncode == 0 and run.stdout == "" and run.stderr == ""


@needs_make
def test_slurm_step_without_them_or_apt_get_notes_it_and_continues(tmp_path):
    run = _slurm_step(SLURM_BINARIES=f"{sys.executable} {tmp_path / 'sbatch'}", APT_GET=tmp_path / "apt-get")
    assert run.returncode == 0 and run.stdout.count("\n") == 1
    assert run.stdout == (f"note: {tmp_path / 'sbatch'} missing (as root: apt-get install slurm-wlm munge); "
                          "the Slurm test will be skipped\n")


def test_ci_runs_make_test_then_the_slow_tests_and_make_test_installs_first():
    script = (ROOT / ".ci" / "run").read_text()
    lines = [line.strip() for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert script.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in lines
    assert [line for line in lines if line.startswith("make")] == ["make test", "make test-slow"]  # the README's first
    assert "\nmake test " in (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "\ntest: install\n" in makefile and "\ninstall: $(STAMP) browser slurm\n" in makefile
    assert "\ntest-slow: install\n" in makefile and "-m slow" in makefile


def test_dev_extras_hold_what_the_tests_import():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    names = {e.split(">")[0].split("=")[0].split("[")[0].strip() for e in extras}
    assert {"pytest", "playwright", "hypothesis"} <= names
