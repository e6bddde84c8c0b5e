"""One colour per model across all the figures of a run.

The effective-robustness figures colour models by their ``group`` (baseline models in
:data:`BASELINE_COLOUR`); a figure left to itself numbers the groups it shows, so a model would
change colour between figures that show different sets of groups (the quickstart's average plot
and its two-ID plot, say). A run instead decides its colours once, here, from all it will draw,
and passes the mapping to every figure (the ``colours`` argument of
:func:`~clipshift.robustness.plots.plot_effective_robustness`, ``plot_multi_id_fit``, ``plot_all``)::

    colours = run_colours(er, er_multi)          # group → colour, for every figure of the run
    plot_all(er, fits, "figures", colours=colours)
    model_colours(er, colours)                   # model → colour (e.g. for an interactive page)

The assignment is deterministic: a function of the run's tables only, never of which subset one
figure shows.
"""

from __future__ import annotations

from typing import Hashable, Iterable, Mapping

import pandas as pd

__all__ = ["BASELINE_COLOUR", "COLOURS", "assign_colours", "group_of", "model_colours", "run_colours"]

COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
BASELINE_COLOUR = "#7f7f7f"
OTHER = "other"  # the group of a model without one


def assign_colours(figures: Iterable[Iterable[Hashable]], given: Mapping | None = None) -> dict:
    """Key → colour of :data:`COLOURS` for keys drawn together in figures.

    `figures`: for each figure (or set of figures) of a run, the keys it colours (groups, study
    configurations), in order. Keys are coloured in order of first appearance, each with the first
    palette colour that no key already coloured and sharing a figure with it has; so a figure's keys
    are distinct while it shows no more than ``len(COLOURS)`` of them, and a key that appears in
    several figures has one colour in all. With every neighbour's colour taken, the colour fewest
    neighbours have is reused. `given` (key → colour) is kept as it is and the other keys fitted
    around it. The result holds the keys of `given` and of `figures`."""
    colours = dict(given or {})
    figures = [list(dict.fromkeys(f)) for f in figures]
    neighbours: dict = {}
    for keys in figures:
        for key in keys:
            neighbours.setdefault(key, set()).update(k for k in keys if k != key)
    for keys in figures:
        for key in keys:
            if key in colours:
                continue
            taken = [colours[k] for k in neighbours[key] if k in colours]
            colours[key] = min(COLOURS, key=lambda c: (taken.count(c), COLOURS.index(c)))
    return colours


def group_of(table: pd.DataFrame) -> pd.Series:
    """Each row's ``group`` as a string; ``"other"`` where it is missing, and for every row of a table without one."""
    if "group" not in table:
        return pd.Series(OTHER, index=table.index, dtype=object)
    return table["group"].where(table["group"].notna(), OTHER).astype(str)


def _baseline(table: pd.DataFrame) -> pd.Series:
    if "is_baseline" not in table:
        return pd.Series(False, index=table.index)
    return table["is_baseline"].fillna(False).astype(bool)


def run_colours(*tables: pd.DataFrame, given: Mapping | None = None) -> dict[str, str]:
    """Group → colour for every figure of a run, from all its effective-robustness tables (``er``
    rows: ``group``, ``is_baseline``; a missing group is ``"other"``).

    The groups of each table's non-baseline models are taken in sorted order, the first table's
    first, and coloured by :func:`assign_colours` (one table with at most ``len(COLOURS)`` groups: the
    palette in sorted order, as a figure alone draws them). A group whose models are baseline models
    in every table maps to :data:`BASELINE_COLOUR`. `given` (group → colour, e.g. the run's mapping
when drawing one of its tables) is kept, but for its grey entries. Baseline models are drawn in that grey whatever
    their group's colour (a model can be a baseline model of one fit and not of another)."""
    given = {k: v for k, v in (given or {}).items() if v != BASELINE_COLOUR}
    figures, seen = [], {}
    for table in tables:
        groups, base = group_of(table), _baseline(table)
        figures.append(sorted(set(groups[~base])))
        seen.update(dict.fromkeys(groups))
    colours = assign_colours(figures, given)
    return {**{g: BASELINE_COLOUR for g in seen if g not in colours}, **colours}


def model_colours(er: pd.DataFrame, colours: Mapping | None = None) -> dict[str, str]:
    """Model → colour as the figures of `er` draw it: :data:`BASELINE_COLOUR` for baseline models,
    else its group's colour in `colours` (group → colour, e.g. :func:`run_colours` of the run's
    tables; default: ``run_colours(er)``). Groups missing from `colours` are fitted around it."""
    groups, base = group_of(er), _baseline(er)
    colours = run_colours(er, given=colours)
    return {str(m): BASELINE_COLOUR if b else colours[g] for m, g, b in zip(er["model"], groups, base)}
