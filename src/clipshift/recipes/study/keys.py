"""The study's configuration keys (one per trained configuration, shared by the plan and the verdicts)."""

from __future__ import annotations


def fraction_tag(fraction: float) -> str:
    return f"{round(100 * fraction):03d}"


def clip_key(fraction: float, size: int, without: str | None = None) -> str:
    """``clip_f<percent diverse>_n<size>[_no_<shift>]``: CLIP on a mixture, without a shift's domain if named."""
    return f"clip_f{fraction_tag(fraction)}_n{size}" + (f"_no_{without}" if without else "")


def supervised_key(distribution: str, labels: str, size: int) -> str:
    return f"sup_{distribution}_{'true' if labels == 'true' else 'tm'}_n{size}"


def simclr_key(size: int) -> str:
    return f"simclr_tm_n{size}"
