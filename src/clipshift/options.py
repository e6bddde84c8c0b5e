"""Values of command-line options shared by the sub-commands (:mod:`clipshift.cli` and
:mod:`clipshift.cli_probe`); standard library only, so building the parser stays cheap."""

from __future__ import annotations

from pathlib import Path


def comma_list(text: str | None) -> list[str] | None:
    """A comma-separated option value as a list of names, blanks dropped (None when not given)."""
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def parse_pairs(pairs: list[str] | None, flag: str, form: str) -> dict[str, str]:
    """``NAME=VALUE`` command-line pairs (repeatable flags) as a dict, names stripped; ValueError
    naming `flag` and the expected `form` for a pair without ``=``."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"{flag}: expected {form}, got {pair!r}")
        name, value = pair.split("=", 1)
        out[name.strip()] = value
    return out


def dataset_roots(pairs: list[str] | None) -> dict[str, Path]:
    """``--dataset-root NAME=DIR`` pairs as {name: folder}."""
    return {name: Path(root) for name, root in parse_pairs(pairs, "--dataset-root", "NAME=DIR").items()}
