"""Training sources read into rows (image, caption, true label) before any image is decoded.

- :class:`ClassSpace` (:func:`class_space`): the run's classes: ``world``, ``imagenet``, a file
  of class names, or a file of ImageNet wnids (a class subset, :mod:`.imagenet_classes`).
- :func:`read_imagenet_captions`: ImageNet-Captions JSON joined to an ImageNet train tree.
- :func:`csv_rows`, :func:`imagenet_captions_rows`, :func:`world_rows`: one source's rows, with
  true labels in the class space where the source has them (-1: a class outside a subset).
- :func:`subset_indices`: the rows a ``size``/``subset_seed`` keeps (nested for one seed).
- :func:`excluded`: the rows a source's ``exclude_files`` / ``exclude_captions`` take out (a
  domain removed from the training data, as the study's ``exposure`` hypothesis does).
- :func:`labelled_samples`: (image path, class index) of a file-backed source's labelled samples.
- :data:`SOURCE_TYPES` (:class:`SourceType`, :func:`register_source`, :func:`source_type`): the
  registry of training source types (name → keys, required keys, files named, reader, whether it
  streams) that ``clipshift train``, the study and fine-tuning read instead of choosing by name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

import numpy as np
import torch

from .csv_source import label_index, read_caption_table
from .imagenet_labels import wnid_index
from .imagenet_classes import WNID, imagenet_class_names, is_wnid_file, read_wnids

CAPTION_FIELDS = ("title", "description", "tags")


@dataclass
class ClassSpace:
    """The classes labels index: ``names``; ``wnids`` for ImageNet classes (all 1000 or a subset)."""

    spec: str
    names: list[str]
    wnids: list[str] | None = None

    @property
    def subset(self) -> bool:
        """True for a wnid file: sources keep only samples of its classes."""
        return self.wnids is not None and self.spec != "imagenet"


def class_space(spec: str) -> ClassSpace:
    """The :class:`ClassSpace` of a ``classes`` setting (``world``, ``imagenet``, or a file)."""
    if spec == "world":
        from ..world.shapes import CLASS_NAMES

        return ClassSpace(spec, list(CLASS_NAMES))
    if spec == "imagenet":
        from .imagenet import imagenet_wnids

        return ClassSpace(spec, imagenet_class_names(), imagenet_wnids())
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"classes: not 'world' or 'imagenet', and no file {path} (expected a text file "
                                f"with one class name or one ImageNet wnid per line)")
    if is_wnid_file(path):
        wnids = read_wnids(path)
        return ClassSpace(spec, imagenet_class_names(wnids), wnids)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"classes: cannot read {path} as UTF-8 text: {error}") from error
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: class names must be unique")
    if not names:
        raise ValueError(f"classes: {path} lists no class names")
    return ClassSpace(spec, names)


def subset_indices(length: int, size: int | None, subset_seed, where: str) -> np.ndarray:
    """Sorted rows kept of `length`: ``np.sort(default_rng(subset_seed).permutation(length)[:size])``
    (all rows without `size`), so a smaller size with the same seed is a subset of a larger one."""
    if size is None:
        return np.arange(length)
    if size > length:
        raise ValueError(f"{where}: size {size} exceeds the {length} samples of the source")
    return np.sort(np.random.default_rng(subset_seed).permutation(length)[:size])


def _caption(entry: dict, fields_used) -> str:
    parts = []
    for name in fields_used:
        value = entry.get(name) or ""
        value = " ".join(str(t) for t in value) if isinstance(value, list) else str(value)
        if value.strip():
            parts.append(value.strip())
    return ". ".join(parts)


def _json_entries(json_path: Path) -> list:
    if not json_path.is_file():
        raise FileNotFoundError(f"ImageNet-Captions file not found: {json_path}")
    try:
        entries = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{json_path}: not valid JSON: {error}") from error
    if not isinstance(entries, list):
        raise ValueError(f"{json_path}: expected a JSON list of entries {{filename, wnid, title, description, tags}}, "
                         f"got {type(entries).__name__}")
    return entries


def read_imagenet_captions(json_path, root, fields_used=CAPTION_FIELDS,
                           limit: int | None = None) -> tuple[list[str], list[str], list[str]]:
    """ImageNet-Captions entries ``{"filename", "wnid", "title", "description", "tags"}`` joined to an
    ImageNet train tree ``root/<wnid>/<filename>``: (image paths, captions, wnids). A caption joins
    the configured fields (tags joined by spaces), skipping empty ones; an entry with none is dropped."""
    json_path, root = Path(json_path), Path(root)
    bad = sorted(set(fields_used) - set(CAPTION_FIELDS))
    if bad:
        raise ValueError(f"imagenet_captions fields: unknown {bad}; known: title, description, tags")
    entries = _json_entries(json_path)
    known = wnid_index()
    paths, captions, wnids, missing = [], [], [], []
    for i, entry in enumerate(entries[:limit] if limit else entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{json_path}: entry {i} is a {type(entry).__name__}, expected an object "
                             f"{{filename, wnid, title, description, tags}}")
        for key in ("filename", "wnid"):
            if key not in entry:
                raise ValueError(f"{json_path}: entry {i} has no {key!r}")
        if entry["wnid"] not in known:
            raise ValueError(f"{json_path}: entry {i} has wnid {entry['wnid']!r}, which is not an ImageNet-1k wnid "
                             f"(expected one of the 1000 ILSVRC-2012 wnids, like 'n01440764')")
        caption = _caption(entry, fields_used)
        if not caption:
            continue
        path = root / entry["wnid"] / entry["filename"]
        if not path.is_file():
            missing.append(str(path))
            continue
        paths.append(str(path))
        captions.append(caption)
        wnids.append(entry["wnid"])
    if missing:
        raise FileNotFoundError(f"{len(missing)} ImageNet-Captions images are not under {root}, e.g. {missing[:3]} "
                                f"(expected the ImageNet train tree: <root>/<wnid>/<filename>)")
    if not paths:
        raise ValueError(f"{json_path}: no entry has any of the fields {list(fields_used)}")
    return paths, captions, wnids


def _wnid_labels(wnids: list[str], space: ClassSpace, where: str) -> np.ndarray | None:
    """Positions of `wnids` in the space's wnids (-1 outside a subset); None without ImageNet classes.
    ValueError naming the first row whose wnid is not an ImageNet-1k wnid."""
    known = wnid_index()
    for i, wnid in enumerate(wnids):
        if wnid not in known:
            raise ValueError(f"{where} row {i + 1}: {wnid!r} is not an ImageNet-1k wnid (expected one of the 1000 "
                             f"ILSVRC-2012 wnids, like 'n01440764')")
    if space.wnids is None:
        return None
    position = {w: p for p, w in enumerate(space.wnids)}
    return np.array([position.get(w, -1) for w in wnids], dtype=np.int64)


def imagenet_captions_rows(source: dict, space: ClassSpace) -> tuple[list[str], list[str], np.ndarray | None]:
    """(paths, captions, labels) of an ``imagenet_captions`` source; labels by wnid in an ImageNet space.
    Rows named by ``exclude_files`` or matching ``exclude_captions`` are left out (:func:`excluded`)."""
    paths, captions, wnids = read_imagenet_captions(source["json"], source["root"],
                                                    tuple(source.get("fields", CAPTION_FIELDS)), source.get("limit"))
    return _exclude(source, paths, captions, _wnid_labels(wnids, space, f"{source['json']}:"))


def excluded(source: dict, paths: list[str], captions: list[str]) -> np.ndarray:
    """Boolean mask of the rows a source leaves out: images listed in ``exclude_files`` (a text
    file, one image path a line, relative to that file's folder or absolute; blank lines and lines
    starting with # skipped) and captions matching ``exclude_captions`` (a regular expression,
    case-insensitive, searched anywhere in the caption)."""
    out = np.zeros(len(paths), dtype=bool)
    listed = source.get("exclude_files")
    if listed:
        listed = Path(listed).expanduser()
        if not listed.is_file():
            raise FileNotFoundError(f"exclude_files: {listed} not found (expected a text file of image paths, "
                                    f"one a line)")
        names = {str((listed.parent / line.strip()).absolute()) for line in listed.read_text().splitlines()
                 if line.strip() and not line.lstrip().startswith("#")}
        out |= np.array([str(Path(p).absolute()) in names for p in paths], dtype=bool)
    pattern = source.get("exclude_captions")
    if pattern:
        try:
            regex = re.compile(str(pattern), re.IGNORECASE)
        except re.error as error:
            raise ValueError(f"exclude_captions: {pattern!r} is not a regular expression: {error}") from None
        out |= np.array([regex.search(c) is not None for c in captions], dtype=bool)
    return out


def _exclude(source: dict, paths: list[str], captions: list[str], labels):
    drop = excluded(source, paths, captions)
    if not drop.any():
        return paths, captions, labels
    if drop.all():
        raise ValueError("exclude_files/exclude_captions leave out every row of the source")
    keep = np.flatnonzero(~drop)
    return [paths[i] for i in keep], [captions[i] for i in keep], None if labels is None else labels[keep]


def _table_labels(values: list, space: ClassSpace, where: str) -> np.ndarray:
    """Class indices of a table's labels: wnids (in an ImageNet space; -1 outside a subset), ints or names."""
    if values and all(isinstance(v, str) and WNID.fullmatch(v) for v in values):
        if space.wnids is None:
            raise ValueError(f"{where}: the labels are wnids (e.g. {values[0]!r}), but classes is {space.spec!r}; "
                             f"set classes to 'imagenet' or a file of wnids")
        return _wnid_labels(values, space, f"{where}: label column,")
    try:
        labels = [label_index(value, space.names, i + 1) for i, value in enumerate(values)]
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    unlabelled = [i + 1 for i, label in enumerate(labels) if label < 0]
    if unlabelled:
        raise ValueError(f"{where}: label -1 of row {unlabelled[0]} is out of range for {len(space.names)} classes")
    return np.asarray(labels, dtype=np.int64)


def csv_rows(source: dict, space: ClassSpace) -> tuple[list[str], list[str], np.ndarray | None]:
    """(paths, captions, labels or None) of a ``csv`` source (every image file checked to exist)."""
    label_column = source.get("label_column")
    table = read_caption_table(source["path"], sep=source.get("sep"),
                               filepath_column=source.get("filepath_column", "filepath"),
                               caption_column=source.get("caption_column", ("caption", "title")),
                               label_column=label_column or "label")
    if label_column and "label" not in table:
        raise ValueError(f"{source['path']}: no label column {label_column!r} (label_column of the source)")
    labels = _table_labels(list(table["label"]), space, source["path"]) if "label" in table else None
    return _exclude(source, list(table["filepath"]), list(table["caption"]), labels)


def world_rows(source: dict, space: ClassSpace, image_size: int, seed: int,
               progress: bool) -> tuple[torch.Tensor, list[str], np.ndarray | None]:
    """(uint8 images (N, 3, H, W), captions, labels) of a ``world`` source: ``pool`` images (default
    ``size``) generated; labels are the world's classes, by name in a space of world class names."""
    from ..world.distributions import get_distribution
    from ..world.generate import generate_split
    from ..world.shapes import CLASS_NAMES

    count = int(source.get("pool", source.get("size", 4000)))
    split = generate_split(get_distribution(source.get("distribution", "narrow")), count, split="train",
                           seed=int(source.get("seed", seed)), size=image_size, progress=progress)
    images = torch.from_numpy(split.images).permute(0, 3, 1, 2).contiguous()
    labels = np.asarray(split.labels, dtype=np.int64)
    if space.spec != "world":
        if not set(space.names) <= set(CLASS_NAMES):
            return images, list(split.captions), None
        position = {name: p for p, name in enumerate(space.names)}
        labels = np.array([position.get(CLASS_NAMES[c], -1) for c in labels], dtype=np.int64)
    return images, list(split.captions), labels


# --- the registry of training source types --------------------------------------------------------------------------

SUBSET_KEYS = frozenset({"size", "subset_seed", "exclude_files", "exclude_captions"})  # exclude_*: :func:`excluded`


@dataclass(frozen=True)
class SourceType:
    """A kind of training source: the keys it takes (``type`` and ``weight`` included), those it
    requires, those naming files, and how it is read. ``storage``: ``files`` (rows of image files,
    read by ``rows(source, space) -> (paths, captions, labels or None)`` and decoded per batch or once),
    ``generated`` (images made in memory by ``generate(source, space, image_size, seed, progress)``)
    or ``stream`` (shards read in order, never held; ``check(source, need_caption, need_label)``; a
    seeded take of the stream with ``size``, :mod:`.streamed`)."""

    name: str
    keys: frozenset
    required: tuple[str, ...]
    storage: str
    file_keys: tuple[str, ...] = ()
    rows: Callable | None = None
    generate: Callable | None = None
    check: Callable | None = None

    @property
    def streams(self) -> bool:
        """True for a stream: read in shard order, never held in memory (a ``size`` takes its first samples)."""
        return self.storage == "stream"

    @property
    def file_backed(self) -> bool:
        return self.storage == "files"

    def require(self, source: dict) -> None:
        """ValueError naming the missing required keys; the source's own check of its inputs."""
        missing = [k for k in self.required if not source.get(k)]
        if missing:
            raise ValueError(f"missing {missing} (a {self.name} source needs {list(self.required)})")


def _check_world(source: dict, **_) -> None:
    from ..world.distributions import get_distribution

    get_distribution(source.get("distribution", "narrow"))


def _check_captions_root(source: dict, **_) -> None:
    if not Path(source["root"]).is_dir():
        raise FileNotFoundError(f"root {source['root']} is not a folder (expected the ImageNet train tree "
                                f"<root>/<wnid>/<filename>)")


def _check_shards(source: dict, *, need_caption: bool, need_label: bool) -> None:
    from .shards import check_shards

    check_shards(source["urls"], need_caption=need_caption, need_label=need_label)


SOURCE_TYPES: dict[str, SourceType] = {}


def register_source(kind: SourceType) -> SourceType:
    """Add a source type to :data:`SOURCE_TYPES` (``clipshift train``, the study and fine-tuning read it)."""
    if kind.storage not in ("files", "generated", "stream"):
        raise ValueError(f"source type {kind.name}: storage must be files, generated or stream, got {kind.storage!r}")
    SOURCE_TYPES[kind.name] = kind
    return kind


register_source(SourceType("world", frozenset({"type", "weight", "distribution", "size", "pool", "subset_seed", "seed"}),
                           (), "generated", generate=world_rows, check=_check_world))
register_source(SourceType("csv", frozenset({"type", "weight", "path", "sep", "filepath_column", "caption_column",
                                             "label_column"}) | SUBSET_KEYS,
                           ("path",), "files", file_keys=("path",), rows=csv_rows))
register_source(SourceType("imagenet_captions", frozenset({"type", "weight", "json", "root", "fields", "limit"}) | SUBSET_KEYS,
                           ("json", "root"), "files", file_keys=("json", "root"), rows=imagenet_captions_rows,
                           check=_check_captions_root))
register_source(SourceType("webdataset", frozenset({"type", "weight", "urls", "buffer"}) | SUBSET_KEYS, ("urls",),
                           "stream", check=_check_shards))  # size, subset_seed, exclude_captions: data.streamed


def source_type(source: dict, where: str = "source") -> SourceType:
    """The :class:`SourceType` of a source mapping; ValueError naming the known types otherwise."""
    kind = source.get("type") if isinstance(source, dict) else None
    if not isinstance(kind, str) or kind not in SOURCE_TYPES:
        raise ValueError(f"{where}: unknown type {kind!r}; known: {sorted(SOURCE_TYPES)}")
    return SOURCE_TYPES[kind]


def file_rows(source: dict, space: ClassSpace) -> tuple[list[str], list[str], np.ndarray | None]:
    """(paths, captions, labels or None) of a file-backed source; ValueError for other kinds."""
    kind = source_type(source)
    if not kind.file_backed:
        raise ValueError(f"a {kind.name} source is not file-backed (its rows are {kind.storage})")
    return kind.rows(source, space)


def _space_of_names(class_names: list[str]) -> ClassSpace:
    """The class space of a list of class names: ImageNet's (all 1000, or the classes of a subset
    whose open_clip names each name one wnid) or plain names."""
    from .imagenet import imagenet_wnids

    names = imagenet_class_names()
    if list(class_names) == names:
        return class_space("imagenet")
    wnid_of: dict[str, list[str]] = {}
    for wnid, name in zip(imagenet_wnids(), names):
        wnid_of.setdefault(name, []).append(wnid)
    if all(len(wnid_of.get(name, ())) == 1 for name in class_names):
        return ClassSpace("names", list(class_names), [wnid_of[name][0] for name in class_names])
    return ClassSpace("names", list(class_names))


def labelled_samples(source: dict, class_names: list[str]) -> list[tuple[str, int]]:
    """(image path, class index) of every sample of `source` whose label is one of `class_names`
    (ImageNet-Captions: its wnid; a CSV: its label column of class indices, names or wnids); [] for
    sources without labels."""
    if not source_type(source).file_backed:
        return []
    paths, _, labels = file_rows(source, _space_of_names(class_names))
    if labels is None:
        return []
    return [(path, int(label)) for path, label in zip(paths, labels) if label >= 0]
