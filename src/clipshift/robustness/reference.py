"""Roles of the models in an effective-robustness table, and the reference models put beside a user's.

``role`` (a column of ``er.csv``): ``baseline`` (in the fit), ``user`` (the models of the results table)
or ``reference`` (published models shown for comparison: ``--compare`` tables, and the models of a
baseline table that its filter left out). Reference models are never in the fit.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .tables import read_results

ROLE_COLUMN = "role"
ROLES = ("baseline", "user", "reference")
HOVER_COLUMNS = ("source", "training_data", "pretrained")  # present in every er.csv of effective_robustness


def is_published_name(table) -> bool:
    """Whether `table` is the string ``"published"`` (the shipped tables; a folder of that name is
    ``Path("published")`` or ``./published``)."""
    return isinstance(table, str) and table.strip().lower() == "published"


def _reference(item, datasets) -> pd.DataFrame:
    from .published import COMPARE_NAMES, published_models

    if isinstance(item, pd.DataFrame):
        return item.copy()
    if isinstance(item, str) and item.strip().lower().replace("_", "") in COMPARE_NAMES:
        return published_models(item)
    if isinstance(item, (str, Path)) and Path(item).exists():
        return read_results(item, datasets=datasets)
    if isinstance(item, str):
        return published_models(item)  # neither a shipped table's name nor a file: the error lists the names
    raise TypeError(f"compare: expected a name, a path or a DataFrame, got {type(item).__name__}")


def load_references(compare, datasets=()) -> pd.DataFrame | None:
    """The reference models of `compare`: one or several names of shipped tables (``published``,
    ``openclip``, ``timm``), results files or long DataFrames (a comma-separated string is split);
    None for None or an empty list."""
    if compare is None:
        return None
    items = [compare] if isinstance(compare, (str, Path, pd.DataFrame)) else list(compare)
    if any(isinstance(i, str) and "," in i and not Path(i).exists() for i in items):
        items = [part.strip() for i in items for part in (i.split(",") if isinstance(i, str) else [i])
                 if not isinstance(part, str) or part.strip()]
    if not items:
        return None
    frames = [_reference(item, datasets) for item in items]
    frame = pd.concat(frames, ignore_index=True).drop_duplicates(["model", "dataset", "metric"])
    frame.attrs["notes"] = [n for f in frames for n in f.attrs.get("notes", [])]
    return frame


def new_references(references: pd.DataFrame, table: pd.DataFrame, user_models) -> tuple[pd.DataFrame, list[str]]:
    """The rows of `references` whose models are not in `table` (the results and the baseline, which keep
    their roles), and a note naming those of `user_models` (the results' models) that were left out for that
    (the baseline's are left out silently: ``published`` holds the baseline's timm models too)."""
    clash = references["model"].isin(set(table["model"]))
    mine = list(dict.fromkeys(references.loc[clash & references["model"].isin(set(user_models)), "model"]))
    notes = [f"compare: {len(mine)} reference model(s) also in the results stay the results' models, e.g. "
             f"{mine[0]}"] if mine else []
    return references[~clash], notes


def check_overlap(results: pd.DataFrame, where: str, id_names, shifts) -> None:
    """A one-line error naming `where` (the results file) when none of its models has an accuracy on one of
    the id datasets and on one of the `shifts` the baseline is fitted on."""
    top1 = results[results["metric"] == "top1"] if "metric" in results else results
    has = top1.groupby("model")["dataset"].agg(set)
    ok = has.map(lambda d: bool(d & set(id_names)) and bool(d & set(shifts)))
    if not ok.any():
        present = sorted({d for s in has for d in s})
        raise ValueError(f"{where}: no model with results on the baseline's datasets: expected accuracies on "
                         f"{' or '.join(id_names)} and on at least one of {', '.join(shifts)}; the "
                         f"{len(has)} model(s) of {where} have {', '.join(map(str, present)) or 'no results'}")


def assign_roles(er: pd.DataFrame, user_models) -> pd.DataFrame:
    """`er` with ``role`` after ``is_baseline`` (``baseline`` in the fit, ``user`` for the other
    `user_models`, ``reference`` for every other model) and the :data:`HOVER_COLUMNS` present (empty where
    unknown)."""
    user = set(user_models)
    role = er["model"].map(lambda m: "user" if m in user else "reference")
    role = role.where(~er["is_baseline"].astype(bool), "baseline")
    er = er.drop(columns=[ROLE_COLUMN], errors="ignore")
    er.insert(er.columns.get_loc("is_baseline") + 1, ROLE_COLUMN, role.to_numpy())
    for column in HOVER_COLUMNS:
        if column not in er.columns:
            er[column] = pd.NA
    return er
