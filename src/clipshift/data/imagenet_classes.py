"""ImageNet class subsets (ImageNet-100 style) and ImageNet class names and synonyms.

A class subset is a list of ILSVRC-2012 wnids, usually a text file with one wnid per line
(``n01440764``; blank lines and lines starting with ``#`` ignored). Its label space is the
subset in the file's order: label ``i`` is the ``i``-th wnid.

- :func:`read_wnids` reads such a file (every wnid must be one of the 1000, none twice);
  :func:`is_wnid_file` tells a wnid file from a file of class names.
- :func:`imagenet_class_names`: open_clip's short names (``IMAGENET_CLASSNAMES``, for prompts)
  of the 1000 classes or of a subset, in its order.
- :func:`imagenet_lemmas` / :func:`imagenet_synonyms`: the WordNet lemmas of each class (timm's
  ``imagenet_synset_to_lemma.txt``, read through ``timm.data.ImageNetInfo``: ``tabby, tabby
  cat``), the synonyms Fang et al. matched captions against.
- :func:`restrict_suite`: an evaluation suite (:class:`~clipshift.data.imagenet.EvalSuite`)
  scored in the subset's label space: images of classes outside the subset are left out, a
  200-class set (ImageNet-R/-A) and ObjectNet keep their intersection with the subset.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .imagenet_labels import EvalSuite, label_tuple, wnid_index, wnid_tuple

WNID = re.compile(r"n\d{8}")


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-blank, non-comment lines of a text file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"classes: cannot read {path} as UTF-8 text: {error}") from error
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]


def is_wnid_file(path) -> bool:
    """True when some line of the text file at `path` is a wnid (``n`` and 8 digits)."""
    return any(WNID.fullmatch(line) for _, line in _lines(Path(path)))


def check_wnids(wnids: Sequence[str], where: str = "classes") -> list[str]:
    """`wnids` as a list, or ValueError naming `where` and the first wnid that is not one of the
    ImageNet-1k wnids or is listed twice."""
    if isinstance(wnids, str) or not wnids:
        raise ValueError(f"{where}: expected a non-empty list of ImageNet-1k wnids, got {wnids!r}")
    index, seen = wnid_index(), set()
    for i, wnid in enumerate(wnids):
        if wnid not in index:
            raise ValueError(f"{where}: {wnid!r} (entry {i + 1}) is not an ImageNet-1k wnid (expected one of the "
                             f"1000 ILSVRC-2012 wnids, like 'n01440764')")
        if wnid in seen:
            raise ValueError(f"{where}: wnid {wnid!r} is listed twice")
        seen.add(wnid)
    return list(wnids)


def read_wnids(path) -> list[str]:
    """The wnids of a class-subset file, in file order (ValueError naming the file and line of a
    wnid that is not in ImageNet-1k or is repeated)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classes: wnid file not found: {path}")
    index, seen, wnids = wnid_index(), {}, []
    for number, line in _lines(path):
        if line not in index:
            kind = "not an ImageNet-1k wnid" if WNID.fullmatch(line) else "not a wnid"
            raise ValueError(f"classes: {path}, line {number}: {line!r} is {kind} (expected one ImageNet-1k wnid "
                             f"per line, like 'n01440764')")
        if line in seen:
            raise ValueError(f"classes: {path}, line {number}: wnid {line!r} already on line {seen[line]}")
        seen[line] = number
        wnids.append(line)
    if not wnids:
        raise ValueError(f"classes: {path} lists no wnids")
    return wnids


def resolve_wnids(classes) -> tuple[list[str], str]:
    """(wnids, a description for messages) of a subset given as a wnid file or a list of wnids."""
    if isinstance(classes, (str, Path)):
        return read_wnids(classes), str(classes)
    wnids = check_wnids(list(classes))
    shown = ", ".join(wnids[:3]) + (", ..." if len(wnids) > 3 else "")
    return wnids, f"the {len(wnids)} wnids [{shown}]"


def imagenet_class_names(wnids: Sequence[str] | None = None) -> list[str]:
    """open_clip's ImageNet class names (for prompts) of `wnids` in their order (default: all 1000
    in class-index order). Two pairs of classes share a name there ('missile', 'sunglasses')."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    if wnids is None:
        return list(IMAGENET_CLASSNAMES)
    index = wnid_index()
    return [IMAGENET_CLASSNAMES[index[w]] for w in check_wnids(wnids)]


def imagenet_lemmas(wnids: Sequence[str] | None = None) -> list[list[str]]:
    """The WordNet lemmas of each class of `wnids` (default: all 1000), from the ILSVRC label
    strings (``"tabby, tabby cat"`` -> ``["tabby", "tabby cat"]``)."""
    labels, index = label_tuple(), wnid_index()
    chosen = range(1000) if wnids is None else [index[w] for w in check_wnids(wnids)]
    return [[part.strip() for part in labels[i].split(", ") if part.strip()] for i in chosen]


def _key(term: str) -> str:
    return " ".join(re.split(r"[\s_\-]+", term.strip().lower()))


def imagenet_synonyms(wnids: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Class name (:func:`imagenet_class_names`) -> its WordNet lemmas other than the name itself,
    for `wnids` (default: all 1000). Where two classes share a name, their lemmas are merged
    (the matcher in training takes the per-class lists of :func:`imagenet_lemmas` instead)."""
    chosen = list(wnid_tuple()) if wnids is None else check_wnids(wnids)
    synonyms: dict[str, list[str]] = {}
    for name, lemmas in zip(imagenet_class_names(chosen), imagenet_lemmas(chosen)):
        terms = synonyms.setdefault(name, [])
        known = {_key(name), *map(_key, terms)}
        for lemma in lemmas:
            if _key(lemma) not in known:
                terms.append(lemma)
                known.add(_key(lemma))
    return synonyms


def restrict_suite(suite: EvalSuite, classes) -> EvalSuite:
    """`suite` (in the 1000-class label space) restricted to a class subset (a wnid file or a list
    of wnids): label ``i`` becomes the subset's ``i``-th wnid, ``num_classes`` its size. Targets
    none of whose classes are in the subset are dropped with their images; a target keeps its
    classes inside the subset (ObjectNet's alarm clock keeps 'analog clock' alone when 'digital
    clock' is not in it); ``class_indices`` (the scored classes of ImageNet-R/-A and ObjectNet)
    become their intersection with the subset. ValueError when nothing is left."""
    if suite.num_classes != 1000:
        raise ValueError(f"{suite.name}: restricting to ImageNet wnids needs a suite in the 1000-class "
                         f"ImageNet label space, got one with {suite.num_classes} classes")
    wnids, where = resolve_wnids(classes)
    index = wnid_index()
    position = {index[w]: p for p, w in enumerate(wnids)}
    kept, target_classes = [], []
    for t, classes_of_target in enumerate(suite.target_classes):
        inside = tuple(sorted(position[c] for c in classes_of_target if c in position))
        if inside:
            kept.append(t)
            target_classes.append(inside)
    if not kept:
        scored = "its" if suite.class_indices is None else f"its {len(suite.class_indices)} scored"
        raise ValueError(f"{suite.name} ({suite.root}): none of {scored} classes is in the class subset "
                         f"{where}: nothing to evaluate (expected the subset and the set to share classes)")
    new_target = {old: new for new, old in enumerate(kept)}
    samples = [(path, new_target[t]) for path, t in suite.samples if t in new_target]
    class_indices = None
    if suite.class_indices is not None:
        class_indices = sorted(position[c] for c in suite.class_indices if c in position)
    return EvalSuite(name=suite.name, root=suite.root, samples=samples, target_classes=target_classes,
                     target_names=[suite.target_names[t] for t in kept], class_indices=class_indices,
                     crop_border=suite.crop_border, num_classes=len(wnids))
