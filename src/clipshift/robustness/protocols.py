"""Protocol stamps of results rows: what the published tables document, and the check that rows of one
dataset were measured the same way before they are fitted or compared.

A stamp (the ``protocol`` column; written by :mod:`clipshift.evaluate.protocol` for this project's rows)
is ``key=value`` pairs joined by ``"; "``. Its dataset fields, :data:`COMPARED` (``classes``, ``images``,
``crop``, ``variant``), say what was measured; two rows of one dataset whose stamps both give such a
field with different values measure different things (ImageNet-A over its 200 classes or over all
1000; ObjectNet with or without its border, over ImageNet's mapped classes or its own names; 50,000
ObjectNet images or the 18,574 that map to ImageNet). A field only one of them gives, or a row without a
stamp, is not held against it.

:data:`PUBLISHED` is what each published source documents, and where (see docs/effective-robustness.md).
"""

from __future__ import annotations

import pandas as pd

from ..formatting import format_protocol, parse_protocol

PROTOCOL_COLUMN = "protocol"
COMPARED = ("classes", "images", "crop", "variant")
ALLOW_FLAG = "--allow-mixed-protocols"

_SIZES = {"imagenet": 50_000, "imagenet-v2": 10_000, "imagenet-sketch": 50_889, "imagenet-r": 30_000,
          "imagenet-a": 7_500, "objectnet": 18_574}
_IMAGENET = {"imagenet": {"classes": "1000"}, "imagenet-v2": {"classes": "1000", "variant": "matched-frequency"},
             "imagenet-sketch": {"classes": "1000"}, "imagenet-r": {"classes": "200 of 1000"},
             "imagenet-a": {"classes": "200 of 1000"}}
_MAPPED = {"classes": "113 folders mapped to 125 of 1000", "crop": "2px border"}
_NAMES = {"classes": "113 objectnet names"}

# source → (dataset fields, the fields every row shares, where the source says so)
PUBLISHED = {
    "timm": (_IMAGENET, {"prompts": "none (own head)"},
             "pytorch-image-models results/README.md (sets, sizes; -R and -A against clean runs on the same 200 "
             "classes) and validate.py --valid-labels; img_size, crop_pct, interpolation per row"),
    "open_clip": ({**_IMAGENET, "objectnet": _NAMES},
                  {"prompts": "DataComp/CLIP_benchmark templates", "preprocess": "open_clip's of each model"},
                  "open_clip docs/PRETRAINED.md (evaluation of Gadre et al. 2023, DataComp); DataComp tasklist.yml "
                  "(sizes, class counts: ObjectNet 113)"),
    "CLIP_benchmark": ({**_IMAGENET, "objectnet": {**_NAMES, "crop": "none"}},
                       {"prompts": "CLIP_benchmark templates", "preprocess": "open_clip's of each model"},
                       "CLIP_benchmark clip_benchmark/datasets/builder.py (-R/-A masked to their 200 class names, "
                       "V2 matched-frequency) and datasets/objectnet.py (113 ObjectNet names, no crop)"),
    "testbed": ({**_IMAGENET, "objectnet": _MAPPED}, {},
                "imagenet-testbed src/eval_settings (ObjectNet: 2-pixel border crop, the mapped classes), as WiSE-FT "
                "and model-soups evaluate (src/datasets: -R/-A projected to their 200 classes, ObjectNet cropped "
                "and projected to its 113 classes)"),
}


class MixedProtocolsError(ValueError):
    """Rows of one dataset measured under different protocols, to be fitted or compared together."""


def published_stamp(source: str, dataset: str, **extra) -> str | None:
    """The stamp `source` (a key of :data:`PUBLISHED`) documents for `dataset` (a canonical id), with
    `extra` fields (e.g. ``preprocess``) appended; None for a dataset it documents nothing about."""
    fields, shared, _ = PUBLISHED[source]
    if dataset not in fields:
        return None
    return format_protocol({**fields[dataset], "images": _SIZES[dataset], **shared, **extra, "source": source})


def stamp_published(frame: pd.DataFrame, source: str, extra: pd.Series | None = None) -> pd.DataFrame:
    """`frame` (a reader's long form) with the ``protocol`` column `source` documents; `extra`: a text
    per row appended as its ``preprocess`` field (timm's image size, crop and interpolation)."""
    stamps = [published_stamp(source, d, **({"preprocess": extra.iloc[i]} if extra is not None else {}))
              for i, d in enumerate(frame["dataset"])]
    return frame.assign(**{PROTOCOL_COLUMN: stamps})


def dataset_fields(stamp) -> dict[str, str]:
    """The :data:`COMPARED` fields of a stamp."""
    fields = parse_protocol(stamp)
    return {k: fields[k] for k in COMPARED if k in fields}


def differing(a: dict, b: dict) -> list[str]:
    """The compared fields two stamps both give, with different values."""
    return [k for k in COMPARED if k in a and k in b and a[k] != b[k]]


def _who(top1: pd.DataFrame, rows) -> str:
    part = top1.loc[rows]
    named = sorted(set(part["source"].dropna().astype(str))) if "source" in part else []
    sources = ", ".join(named) or "results"
    models = list(dict.fromkeys(part["model"]))
    return f"{sources}: {len(models)} model(s), e.g. {models[0]}"


def check_protocols(top1: pd.DataFrame, datasets, allow_mixed: bool = False) -> dict[str, str]:
    """Each of `datasets`' protocol (:func:`summarize_protocols` of its rows' stamps: the compared fields and
    the sources), after checking that no two rows of it differ in a compared field; MixedProtocolsError
    (one line naming both stamps) when they do, unless `allow_mixed` (then the summary says ``MIXED``)."""
    if PROTOCOL_COLUMN not in top1.columns:
        return {}
    top1, out = top1.reset_index(drop=True), {}  # a concatenated table may repeat index labels
    for dataset in dict.fromkeys(datasets):
        rows = top1[(top1["dataset"] == dataset) & top1[PROTOCOL_COLUMN].notna()]
        groups = {}
        for index, stamp in rows[PROTOCOL_COLUMN].items():
            key = tuple(dataset_fields(stamp).items())
            groups.setdefault(key, []).append(index)
        keys = list(groups)
        clash = next(((a, b) for i, a in enumerate(keys) for b in keys[i + 1:] if differing(dict(a), dict(b))), None)
        if clash and not allow_mixed:
            a, b = clash
            raise MixedProtocolsError(
                f"{dataset}: rows measured under different protocols ({', '.join(differing(dict(a), dict(b)))} "
                f"differ): '{format_protocol(dict(a))}' ({_who(top1, groups[a])}) vs '{format_protocol(dict(b))}' "
                f"({_who(top1, groups[b])}); fit and compare like with like, or pass {ALLOW_FLAG} "
                f"(allow_mixed_protocols=True)")
        if len(rows):
            out[dataset] = ("MIXED: " if clash else "") + summarize_protocols(rows[PROTOCOL_COLUMN],
                                                                              (*COMPARED, "source"))
    return out


def summarize_protocols(stamps, fields=None) -> str:
    """One line for the stamps of one dataset's rows: each field (of `fields`, default all) with its value
    when all rows that give it agree, else how many values it takes (``prompts=3 values (...)``)."""
    values: dict[str, list] = {}
    for stamp in dict.fromkeys(s for s in stamps if isinstance(s, str)):
        for key, value in parse_protocol(stamp).items():
            if fields is not None and key not in fields:
                continue
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    return format_protocol({k: v[0] if len(v) == 1 else f"{len(v)} values ({' | '.join(v[:3])}"
                            f"{' | ...' if len(v) > 3 else ''})" for k, v in values.items()})


def protocol_section(results: pd.DataFrame) -> str:
    """A report's section: each dataset's protocol once (:func:`summarize_protocols` of its rows' stamps),
    as markdown; "" when the results carry no stamps."""
    if PROTOCOL_COLUMN not in results.columns or results[PROTOCOL_COLUMN].isna().all():
        return ""
    lines = [f"- `{dataset}`: {summarize_protocols(part[PROTOCOL_COLUMN])}"
             for dataset, part in results.groupby("dataset", sort=False) if part[PROTOCOL_COLUMN].notna().any()]
    return ("## Evaluation protocol\n\nHow each dataset's rows were scored, once per dataset (every row's stamp is "
            "its `protocol` in `results.csv`; each image's prediction is in `predictions/`):\n\n"
            + "\n".join(lines) + "\n\n")
