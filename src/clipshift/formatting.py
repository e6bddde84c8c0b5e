"""Formatting helpers for reports (no torch, no pandas at import)."""

from __future__ import annotations


def pp(x: float) -> str:
    """A fraction difference as signed percentage points: 0.031 → '+3.1 pp'."""
    return f"{100 * x:+.1f} pp"


def pct(x: float) -> str:
    """A fraction as a percentage: 0.912 → '91.2%'."""
    return f"{100 * x:.1f}%"


def markdown_table(table) -> str:
    """A pandas DataFrame as a Markdown table (floats with 3 decimals)."""
    cols = list(table.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
