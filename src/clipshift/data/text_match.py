"""Labels from captions by text matching (Fang et al. 2022's YFCC procedure).

A caption gets class ``c`` when the name or a synonym of exactly one class occurs in it as
whole words, case-insensitively; captions naming no class, or several, are dropped (-1).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import yaml


def _pattern(terms: Iterable[str]) -> re.Pattern:
    # Whole words: not preceded or followed by a letter or digit. "_" and "-" in a term match
    # a space, "_" or "-" in the caption.
    parts = [r"[\s_\-]+".join(re.escape(w) for w in re.split(r"[\s_\-]+", t.strip()) if w) for t in terms]
    return re.compile(r"(?<![\w])(?:" + "|".join(sorted(parts, key=len, reverse=True)) + r")(?![\w])", re.IGNORECASE)


class TextMatcher:
    """Match captions to classes by their names and synonyms."""

    def __init__(self, class_names: Sequence[str], synonyms: dict[str, list[str]] | None = None):
        if not class_names:
            raise ValueError("class_names must not be empty")
        seen, owner = set(), {}
        for name in class_names:
            if name in seen:
                raise ValueError(f"duplicate class name {name!r}")
            seen.add(name)
        synonyms = synonyms or {}
        unknown = sorted(set(synonyms) - seen)
        if unknown:
            raise ValueError(f"synonyms given for unknown classes {unknown}")
        self.class_names = list(class_names)
        self.terms = []
        for name in class_names:
            terms = [name] + [s for s in synonyms.get(name, []) if s.strip()]
            for term in terms:
                key = " ".join(re.split(r"[\s_\-]+", term.lower().strip()))
                if owner.get(key, name) != name:
                    raise ValueError(f"term {term!r} is claimed by both {owner[key]!r} and {name!r}")
                owner[key] = name
            self.terms.append(terms)
        self._patterns = [_pattern(t) for t in self.terms]

    def match(self, caption: str) -> int | None:
        """The index of the one class named in `caption`, or None (no class, or several)."""
        hits = [i for i, p in enumerate(self._patterns) if p.search(caption)]
        return hits[0] if len(hits) == 1 else None

    def match_many(self, captions: Iterable[str]) -> np.ndarray:
        """(N,) int64 class indices, -1 where the caption was dropped."""
        return np.asarray([-1 if (m := self.match(c)) is None else m for c in captions], dtype=np.int64)

    @classmethod
    def from_file(cls, path: str | Path, class_names: Sequence[str] | None = None) -> "TextMatcher":
        """Synonyms from YAML/JSON (``{class: [synonyms]}``) or text lines ``name: syn1, syn2``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"synonyms file not found: {path}")
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml", ".json"):
            try:
                data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
            except (json.JSONDecodeError, yaml.YAMLError) as error:
                raise ValueError(f"{path}: not valid {path.suffix[1:].upper()}: {error}") from error
            if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
                raise ValueError(f"{path}: expected a mapping of class name to a list of synonyms")
            mapping = {str(k): [str(s) for s in v] for k, v in data.items()}
        else:
            mapping = {}
            for number, line in enumerate(text.splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                name, _, rest = line.partition(":")
                if not name.strip():
                    raise ValueError(f"{path}, line {number}: expected 'name: synonym, synonym', got {line!r}")
                mapping[name.strip()] = [s.strip() for s in rest.split(",") if s.strip()]
        names = list(class_names) if class_names is not None else list(mapping)
        return cls(names, {k: v for k, v in mapping.items() if k in names} if class_names is not None else mapping)


def match_report(predicted: np.ndarray, true_labels: np.ndarray | None = None) -> dict:
    """Match rate, and label precision against `true_labels` when given."""
    predicted = np.asarray(predicted)
    matched = predicted >= 0
    report = {"n": int(len(predicted)), "n_matched": int(matched.sum()),
              "match_rate": float(matched.mean()) if len(predicted) else 0.0}
    if true_labels is not None:
        true_labels = np.asarray(true_labels)
        if true_labels.shape != predicted.shape:
            raise ValueError(f"true_labels has shape {true_labels.shape}, predicted {predicted.shape}")
        correct = predicted[matched] == true_labels[matched]
        report["precision"] = float(correct.mean()) if matched.any() else float("nan")
        report["per_class_precision"] = {
            int(c): float((true_labels[matched & (predicted == c)] == c).mean()) for c in np.unique(predicted[matched])
        }
    return report
