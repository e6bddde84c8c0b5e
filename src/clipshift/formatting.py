"""Numbers and tables as the reports write them (standard library only: no torch, no pandas import).

Fractions are shown as percentages (:func:`pct`) or as signed differences in percentage points
(:func:`pp`, e.g. an effective robustness); :func:`markdown_table` writes a table as a markdown pipe
table. A protocol stamp (how a result was obtained, the ``protocol`` column of a results table) is
written by :func:`format_protocol` and read back by :func:`parse_protocol`.
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


PROTOCOL_SEPARATOR = "; "


def format_protocol(fields: dict) -> str:
    """A protocol stamp: ``key=value`` pairs joined by ``"; "`` in the order given, fields that are None
    left out; a ``;`` inside a value becomes ``,`` so that the stamp reads back (:func:`parse_protocol`)."""
    return PROTOCOL_SEPARATOR.join(f"{key}={str(value).replace(';', ',').strip()}"
                                   for key, value in fields.items() if value is not None)


def parse_protocol(stamp) -> dict[str, str]:
    """The fields of a protocol stamp (:func:`format_protocol`); {} for an empty or missing stamp (None,
    NaN, "")."""
    if not isinstance(stamp, str) or not stamp.strip():
        return {}
    fields = {}
    for part in stamp.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            fields[key.strip()] = value.strip()
    return fields
