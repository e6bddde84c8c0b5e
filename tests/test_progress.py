"""Progress bars redraw only on a terminal: into a file or a pipe they write a few plain lines and no
carriage returns (``CLIPSHIFT_PROGRESS`` overrides), for every bar, the training loop's included."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch

from clipshift.models.factory import ModelSpec, build_model
from clipshift.progress import PlainProgress, progress_bar
from clipshift.train.loop import TrainConfig, TrainData, train

COUNT = """
from clipshift.progress import progress_bar
with progress_bar(total=50, desc="count", unit="img") as bar:
    for _ in range(50):
        bar.update(1)
"""


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def auto(monkeypatch):
    monkeypatch.delenv("CLIPSHIFT_PROGRESS", raising=False)


def _count(total: int = 50, **kwargs) -> None:
    with progress_bar(total=total, desc="count", unit="img", **kwargs) as bar:
        for _ in range(total):
            bar.update(1)


def test_a_pipe_gets_plain_lines_without_carriage_returns():
    env = {k: v for k, v in os.environ.items() if k != "CLIPSHIFT_PROGRESS"}
    run = subprocess.run([sys.executable, "-c", COUNT], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr
    lines = run.stderr.splitlines()
    assert lines[0] == "count: 0/50 img" and lines[-1].startswith("count: done 50/50 img (")
    assert len(lines) == 2  # a run shorter than 30 s: its start and its end


def test_the_training_loop_writes_plain_lines_into_a_log_file(tmp_path, monkeypatch):
    spec = ModelSpec("classifier", "clipshift-tiny", ["a", "b"])
    data = TrainData(torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8), labels=torch.arange(16) % 2)
    with open(tmp_path / "train.log", "w") as log:
        monkeypatch.setattr(sys, "stderr", log)
        train(build_model(spec, seed=0), data, TrainConfig("supervised", epochs=2, batch_size=8), desc="tiny")
    text = (tmp_path / "train.log").read_text()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0] == "tiny: 0/4 step" and lines[-1].startswith("tiny: done 4/4 step (")
    assert "epoch=2, loss=" in lines[-1]  # the bar's last postfix


def test_plain_lines_every_tenth_no_sooner_than_mininterval():
    out = io.StringIO()
    with PlainProgress(total=100, desc="count", unit="img", file=out, mininterval=0) as bar:
        for _ in range(100):
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == \
        ["count: 0/100 img", *(f"count: {n}/100 img" for n in range(10, 100, 10)), "count: done 100/100 img"]
    out = io.StringIO()
    with PlainProgress(total=100, desc="count", unit="img", file=out, mininterval=3600) as bar:
        bar.update(60)
    assert out.getvalue().splitlines()[1].startswith("count: stopped at 60/100 img")


def test_a_terminal_gets_the_redrawing_bar(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _count()
    assert "\r" in terminal.getvalue() and "count" in terminal.getvalue()


@pytest.mark.parametrize("setting, tty, expected", [("never", True, ""), ("always", False, "\r"),
                                                    ("auto", False, "count: 0/50 img\n"), ("", True, "\r")])
def test_clipshift_progress_overrides_the_rule(monkeypatch, setting, tty, expected):
    monkeypatch.setenv("CLIPSHIFT_PROGRESS", setting)
    stream = FakeTerminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    _count()
    assert expected in stream.getvalue() and bool(stream.getvalue()) == bool(expected)
    quiet = FakeTerminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", quiet)
    _count(enabled=False)  # --quiet: nothing, whatever the setting
    assert quiet.getvalue() == ""


def test_an_unknown_setting_warns_and_counts_as_auto(monkeypatch):
    monkeypatch.setenv("CLIPSHIFT_PROGRESS", "sometimes")
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with pytest.warns(UserWarning, match="CLIPSHIFT_PROGRESS='sometimes'"):
        _count()
    assert "\r" not in stream.getvalue() and "count: done 50/50 img" in stream.getvalue()
