"""Numbers and tables as the reports write them (standard library only: no torch, no pandas import).

Fractions are shown as percentages (:func:`pct`) or as signed differences in percentage points
(:func:`pp`, e.g. an effective robustness); :func:`markdown_table` writes a table as a markdown pipe
table.
"""

from __future__ import annotations


def pct(x: float) -> str:
    """A fraction as a percentage with one decimal: 0.4423 → ``44.2%``."""
    return f"{100 * x:.1f}%"


def pp(x: float) -> str:
    """A fraction as signed percentage points with one decimal: 0.034 → ``+3.4 pp``."""
    return f"{100 * x:+.1f} pp"


def markdown_table(table) -> str:
    """A table (a pandas DataFrame, or anything with ``columns`` and ``iterrows()``) as a markdown
    pipe table; floats with three decimals, everything else as ``str``."""
    cols = list(table.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
