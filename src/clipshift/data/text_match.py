"""Labels from captions by text matching (Fang et al. 2022's YFCC procedure).

A caption gets class ``c`` when the name or a synonym of exactly one class occurs in it;
captions naming no class, or several, are dropped (``None`` / ``-1``).

Matching rules (one compiled regex per class):

- case-insensitive, whole words: a term must not be preceded or followed by a letter, digit
  or ``_`` ("Starfish" does not match ``star``; "STAR." and "#star" do);
- the words of a multi-word term may be separated by any run of spaces, ``_`` or ``-``, and
  ``_`` or ``-`` inside a class name or synonym count as such a separator too: ``hot_dog``
  matches "hot dog", "hot-dog" and "hot_dog";
- classes are matched independently, so a caption containing "hot dog" names both ``hot dog``
  and ``dog`` (if both are classes) and is dropped, as in the original procedure.

Synonym files (:meth:`TextMatcher.from_file`): YAML (``.yaml``/``.yml``) or JSON (``.json``)
mapping each class name to a list of synonyms, or plain text (any other suffix) with one class
per line, ``name: synonym, synonym`` (blank lines and lines starting with ``#`` are ignored).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import yaml

_SEPARATOR = r"[\s_\-]+"


def _words(term: str) -> list[str]:
    """The words of `term`, split on spaces, ``_`` and ``-``."""
    return [w for w in re.split(_SEPARATOR, term.strip().lower()) if w]


def _pattern(terms: Iterable[str]) -> re.Pattern:
    """One case-insensitive whole-word regex matching any of `terms`."""
    parts = sorted({_SEPARATOR.join(re.escape(w) for w in _words(t)) for t in terms}, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


def _check_names(class_names: Sequence[str], allow_duplicates: bool = False) -> list[str]:
    """`class_names` as a list, or ValueError for an empty list, a non-string or a duplicate."""
    if isinstance(class_names, str) or not class_names:
        raise ValueError(f"class_names must be a non-empty list of strings, got {class_names!r}")
    seen = set()
    for i, name in enumerate(class_names):
        if not isinstance(name, str) or not _words(name):
            raise ValueError(f"class_names[{i}] must be a non-blank string, got {name!r}")
        if name in seen and not allow_duplicates:
            raise ValueError(f"duplicate class name {name!r} (class_names[{i}])")
        seen.add(name)
    return list(class_names)


def _check_terms(name: str, terms) -> list[str]:
    if isinstance(terms, str) or not isinstance(terms, (list, tuple)):
        raise ValueError(f"synonyms of {name!r} must be a list of strings, got {terms!r}")
    for term in terms:
        if not isinstance(term, str) or not _words(term):
            raise ValueError(f"synonym of {name!r} must be a non-blank string, got {term!r}")
    return list(terms)


def _check_synonyms(synonyms, class_names: list[str]) -> list[list[str]]:
    """`synonyms` validated, as one list per class: a dict (class name -> synonyms; known classes
    only) or a sequence with one list per class, in class order."""
    if synonyms is None:
        return [[] for _ in class_names]
    if isinstance(synonyms, (list, tuple)):
        if len(synonyms) != len(class_names):
            raise ValueError(f"synonyms as a list must hold one list per class: got {len(synonyms)} lists "
                             f"for {len(class_names)} classes")
        return [_check_terms(name, terms) for name, terms in zip(class_names, synonyms)]
    if not isinstance(synonyms, dict):
        raise ValueError(f"synonyms must be a dict of class name -> list of synonyms, got {type(synonyms).__name__}")
    unknown = sorted(set(synonyms) - set(class_names), key=str)
    if unknown:
        raise ValueError(f"synonyms given for unknown class(es) {unknown[:10]}; "
                         f"known classes include {class_names[:5]}")
    checked = {name: _check_terms(name, terms) for name, terms in synonyms.items()}
    return [checked.get(name, []) for name in class_names]


def _first_token(term: str) -> str | None:
    """The leading ASCII letters/digits of a term's first word (lower case), or None when the term
    does not start with one (then the class is always a candidate)."""
    first = _words(term)[0]
    found = re.match(r"[a-z0-9]+", first)
    return found.group(0) if found and first.isascii() else None


class TextMatcher:
    """Match captions to classes by their names and synonyms (see the module docstring).

    `synonyms`: a dict class name -> list of synonyms, or one list per class (in class order).
    `shared_terms`: ``"error"`` (a term, or a class name, claimed by two classes is a ValueError)
    or ``"ambiguous"`` (it stays with every class claiming it, so a caption using it names several
    classes and is dropped; duplicate class names are allowed, as in open_clip's ImageNet names)."""

    def __init__(self, class_names: Sequence[str], synonyms=None, *, shared_terms: str = "error"):
        if shared_terms not in ("error", "ambiguous"):
            raise ValueError(f"shared_terms must be 'error' or 'ambiguous', got {shared_terms!r}")
        self.class_names = _check_names(class_names, allow_duplicates=shared_terms == "ambiguous")
        per_class = _check_synonyms(synonyms, self.class_names)
        owner: dict[str, str] = {}
        self.terms: list[list[str]] = []
        for name, extra in zip(self.class_names, per_class):
            terms = [name] + extra
            for term in terms:
                key = " ".join(_words(term))
                if owner.setdefault(key, name) != name and shared_terms == "error":
                    raise ValueError(f"term {term!r} is claimed by both {owner[key]!r} and {name!r}")
            self.terms.append(terms)
        self._patterns = [_pattern(t) for t in self.terms]
        # Prefilter (exact): a term can only occur in an ASCII caption whose letter/digit runs include
        # the leading run of the term's first word; only those classes' regexes are run.
        self._by_token: dict[str, set[int]] = {}
        self._always: set[int] = set()
        for i, terms in enumerate(self.terms):
            for term in terms:
                token = _first_token(term)
                if token is None:
                    self._always.add(i)
                else:
                    self._by_token.setdefault(token, set()).add(i)

    def __repr__(self) -> str:
        return f"TextMatcher({len(self.class_names)} classes, {sum(map(len, self.terms))} terms)"

    def matching_classes(self, caption: str) -> list[int]:
        """Indices of every class whose name or a synonym occurs in `caption`."""
        if not isinstance(caption, str):
            raise TypeError(f"caption must be a string, got {type(caption).__name__}: {caption!r}")
        if caption.isascii():
            candidates = set(self._always)
            for token in set(re.findall(r"[a-z0-9]+", caption.lower())):
                candidates |= self._by_token.get(token, set())
        else:
            candidates = range(len(self._patterns))
        return [i for i in sorted(candidates) if self._patterns[i].search(caption)]

    def match(self, caption: str) -> int | None:
        """The index of the one class named in `caption`, or None (no class, or several)."""
        hits = self.matching_classes(caption)
        return hits[0] if len(hits) == 1 else None

    def match_many(self, captions: Iterable[str]) -> np.ndarray:
        """(N,) int64 class indices, -1 where the caption was dropped."""
        out = []
        for i, caption in enumerate(captions):
            if not isinstance(caption, str):
                raise TypeError(f"caption {i} must be a string, got {type(caption).__name__}: {caption!r}")
            m = self.match(caption)
            out.append(-1 if m is None else m)
        return np.asarray(out, dtype=np.int64)

    @classmethod
    def from_file(cls, path: str | Path, class_names: Sequence[str] | None = None, *,
                  shared_terms: str = "error") -> "TextMatcher":
        """A matcher from a synonyms file (YAML, JSON or ``name: syn1, syn2`` lines).

        Without `class_names` the classes are the file's, in file order. With them, the file
        may give synonyms for some of the classes, but must not name any other class."""
        mapping = read_synonyms(path)
        if class_names is None:
            return cls(list(mapping), mapping, shared_terms=shared_terms)
        known = set(class_names)
        unknown = [k for k in mapping if k not in known]
        if unknown:
            raise ValueError(f"{path}: synonyms for class(es) not in class_names: {unknown[:10]}")
        return cls(class_names, mapping, shared_terms=shared_terms)


def read_synonyms(path: str | Path) -> dict[str, list[str]]:
    """Class name -> synonyms from a YAML, JSON or plain-text synonyms file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"synonyms file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read synonyms file as UTF-8 text: {error}") from error
    suffix = path.suffix.lower()
    mapping = _parse_structured(path, text) if suffix in (".yaml", ".yml", ".json") else _parse_lines(path, text)
    if not mapping:
        raise ValueError(f"{path}: no classes in synonyms file")
    return mapping


def _parse_structured(path: Path, text: str) -> dict[str, list[str]]:
    """YAML or JSON ``{class: [synonyms]}`` (a null or missing list means no synonyms)."""
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    try:
        data = json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: not valid {kind}: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of class name to a list of synonyms, got {type(data).__name__}")
    mapping = {}
    for name, terms in data.items():
        terms = [] if terms is None else terms
        if not isinstance(terms, list) or not all(isinstance(t, (str, int, float)) for t in terms):
            raise ValueError(f"{path}: class {name!r}: expected a list of synonyms, got {terms!r}")
        mapping[str(name)] = [str(t) for t in terms]
    return mapping


def _parse_lines(path: Path, text: str) -> dict[str, list[str]]:
    """Plain-text ``name: syn1, syn2`` lines (``name`` alone: a class without synonyms)."""
    mapping: dict[str, list[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        name = name.strip()
        if not name:
            raise ValueError(f"{path}, line {number}: expected 'name: synonym, synonym', got {line!r}")
        if name in mapping:
            raise ValueError(f"{path}, line {number}: class {name!r} listed twice")
        mapping[name] = [s.strip() for s in rest.split(",") if s.strip()]
    return mapping


def match_report(predicted: np.ndarray, true_labels: np.ndarray | None = None) -> dict:
    """How many captions were matched and, against `true_labels`, how precisely.

    Keys: ``n``, ``n_matched``, ``match_rate`` (0.0 for no captions) and, with `true_labels`,
    ``precision`` (fraction of matched captions whose label is the true one; NaN when none was
    matched) and ``per_class_precision`` ({class index: precision} over the classes that were
    predicted at least once)."""
    predicted = np.asarray(predicted)
    if predicted.ndim != 1 or (predicted.size and not np.issubdtype(predicted.dtype, np.integer)):
        raise ValueError(f"predicted must be a 1-D integer array, got shape {predicted.shape} dtype {predicted.dtype}")
    if predicted.size and predicted.min() < -1:
        raise ValueError(f"predicted holds {predicted.min()}; expected class indices or -1 for dropped")
    matched = predicted >= 0
    n = len(predicted)
    report = {"n": n, "n_matched": int(matched.sum()), "match_rate": float(matched.mean()) if n else 0.0}
    if true_labels is None:
        return report
    true_labels = np.asarray(true_labels)
    if true_labels.shape != predicted.shape:
        raise ValueError(f"true_labels has shape {true_labels.shape}, predicted has shape {predicted.shape}")
    correct = predicted[matched] == true_labels[matched]
    report["precision"] = float(correct.mean()) if matched.any() else float("nan")
    report["per_class_precision"] = {
        int(c): float(correct[predicted[matched] == c].mean()) for c in np.unique(predicted[matched])
    }
    return report
