"""The torch-free helpers: clipshift.io (atomic writes: a reader sees the old file or the new one,
readable by everyone) and clipshift.formatting (numbers and tables as the reports write them)."""

import stat

import pandas as pd
import pytest

from clipshift.formatting import markdown_table, pct, pp
from clipshift.io import atomic_path, atomic_write, atomic_write_text


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    assert atomic_write_text(path, "new ü\n") == path
    assert path.read_text(encoding="utf-8") == "new ü\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert atomic_write(tmp_path / "b.bin", lambda f: f.write(b"\x00\x01"), binary=True).read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]


def test_an_error_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def fail(f):
        f.write("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail)
    with pytest.raises(KeyError):
        with atomic_path(path) as tmp:
            tmp.write_text("partial")
            raise KeyError("x")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_percentages_points_and_markdown_tables():
    assert (pct(0.4423), pct(1.0), pp(0.034), pp(-0.1251), pp(0.0)) == ("44.2%", "100.0%", "+3.4 pp", "-12.5 pp",
                                                                          "+0.0 pp")
    table = pd.DataFrame({"model": ["a", "b"], "r2": [0.98765, 0.5], "n": [3, 4]})
    assert markdown_table(table) == "| model | r2 | n |\n|---|---|---|\n| a | 0.988 | 3 |\n| b | 0.500 | 4 |"
