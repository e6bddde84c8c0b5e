"""One opener of evaluation sets for every command: :func:`open_eval_set`.

``clipshift eval``, ``clipshift probe``, the quickstart, the study and fine-tuning all open their
evaluation sets here, by one rule for names and folders:

- **Where.** A set's folder is the one given for it (``{name: folder}`` settings, ``--dataset-root
  NAME=DIR``); else, for an ImageNet-family name (:data:`~clipshift.data.imagenet.IMAGENET_SUITES`)
  read in an ImageNet class space, its distributed folder under the root
  (:data:`~clipshift.data.imagenet.DEFAULT_FOLDERS`, e.g. ``objectnet-1.0``), or a folder named as
  the set when only that one exists; else ``root/<name>``.
- **How.** An ImageNet-family name in an ImageNet class space (all 1000 classes, or a wnid subset
  it is then scored in) is read as distributed (V2's folder order, ObjectNet's mapping and border,
  -R/-A's masking: :func:`~clipshift.data.imagenet.open_suite`). Any other set is an ImageFolder tree
  ``<folder>/<class name>/<image>`` over the class names; a tree holding only some classes is scored
  over those only (as -R and -A are), except the world's sets, which are always scored over its
  classes.

:func:`open_suites` and :func:`open_world_sets` are the command-line forms (their errors name the
flags); :func:`suite_tensors` decodes a small set into memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..progress import progress_bar
from ._images import decode_many, stack_into
from .imagenet import DEFAULT_FOLDERS, IMAGENET_SUITES, EvalSuite, folder_suite, open_suite
from .sources import ClassSpace, class_space

__all__ = ["WORLD_EVAL_SETS", "eval_set_entries", "eval_set_folder", "open_eval_set", "open_suites", "open_world_sets", "suite_tensors"]

WORLD_EVAL_SETS = ("test", "v2", "sketch", "rendition", "objectnet", "adversarial")


def _space(classes) -> ClassSpace:
    """A class space from a ``classes`` setting (``world``, ``imagenet``, a file), a list of class
    names, or a :class:`ClassSpace`."""
    if isinstance(classes, ClassSpace):
        return classes
    if isinstance(classes, (str, Path)):
        return class_space(str(classes))
    return ClassSpace("names", list(classes))


def _read_as_distributed(name: str, space: ClassSpace) -> bool:
    return name in IMAGENET_SUITES and space.wnids is not None


def eval_set_entries(eval_sets) -> dict[str, str | None]:
    """Set name → its own folder (None: found by the rule) of an ``eval_sets`` setting: a mapping
    ``{name: folder}``, or a list of names (``imagenet-r``) and folders (``world/test``: named by
    the last part)."""
    if isinstance(eval_sets, Mapping):
        return {str(name): str(folder) for name, folder in eval_sets.items()}
    entries = {}
    for entry in eval_sets:
        path = Path(str(entry))
        entries[path.name] = None if len(path.parts) == 1 else str(path)
    return entries


def eval_set_folder(name: str, root=None, folder=None, classes="imagenet") -> Path:
    """The folder of the set `name` by the module's rule (not checked to exist)."""
    if folder is not None:
        return Path(root) / folder if root is not None and not Path(folder).is_absolute() else Path(folder)
    if root is None:
        raise ValueError(f"evaluation set {name!r}: give its folder or the root folder holding it")
    root = Path(root)
    if _read_as_distributed(name, _space(classes)):
        distributed = root / DEFAULT_FOLDERS[name]
        return root / name if not distributed.is_dir() and (root / name).is_dir() else distributed
    return root / name


def open_eval_set(name: str, root=None, *, folder=None, classes="imagenet") -> EvalSuite:
    """The evaluation set `name` as an :class:`~clipshift.data.imagenet.EvalSuite` (nothing decoded).

    `root`: the folder holding the sets; `folder`: this set's own folder (relative to `root` unless
    absolute); `classes`: the label space (``imagenet``, ``world``, a file of class names or wnids, a
    list of class names, or a :class:`~clipshift.data.sources.ClassSpace`)."""
    space = _space(classes)
    path = eval_set_folder(name, root, folder, space)
    if _read_as_distributed(name, space):
        return open_suite(name, path, classes=space.wnids if space.subset else None)
    return folder_suite(name, path, space.names, mask_partial=space.spec != "world")


def open_suites(datasets: str, data_root=None, roots: Mapping[str, Path] | None = None) -> list[EvalSuite]:
    """The ImageNet-family suites named in `datasets` (comma-separated), each at its own folder in
    `roots` ({name: folder}) or else under `data_root`. For ``clipshift eval`` and ``clipshift probe``:
    errors name their flags (``--datasets``, ``--data-root``, ``--dataset-root``)."""
    names = [d.strip() for d in datasets.split(",") if d.strip()]
    unknown = [d for d in names if d not in IMAGENET_SUITES]
    if unknown:
        raise ValueError(f"--datasets: unknown {unknown}; known: {', '.join(IMAGENET_SUITES)}")
    roots = dict(roots or {})
    if data_root is None and any(d not in roots for d in names):
        raise ValueError("give --data-root DIR (the folder where the datasets are unpacked) or "
                         "--dataset-root NAME=DIR for every dataset")
    suites = []
    for name in names:
        if name not in roots and not (Path(data_root) / DEFAULT_FOLDERS[name]).is_dir():
            open_suite(name, data_root=data_root)  # the error naming the expected folder and layout
        suites.append(open_eval_set(name, None if name in roots else data_root, folder=roots.get(name)))
    return suites


def open_world_sets(world_dir, names: Sequence[str] | None = None, classes="world") -> list[EvalSuite]:
    """The embedded world's exported evaluation sets under `world_dir` (``<set>/<class name>/*.png``),
    scored over the world's classes. `names`: the sets to open (default: those of
    :data:`WORLD_EVAL_SETS` present). For ``clipshift eval --world``: errors name the flag."""
    root = Path(world_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--world {root}: not a folder (expected an exported world, e.g. "
                                f"runs/quickstart/world, holding {', '.join(WORLD_EVAL_SETS)} folders)")
    names = list(names) if names else [n for n in WORLD_EVAL_SETS if (root / n).is_dir()]
    if not names:
        raise FileNotFoundError(f"--world {root}: none of the evaluation sets {list(WORLD_EVAL_SETS)} is there")
    missing = [n for n in names if not (root / n).is_dir()]
    if missing:
        raise FileNotFoundError(f"--world {root}: no evaluation set {missing[0]!r} ({root / missing[0]} is not a folder)")
    return [open_eval_set(name, root, classes=classes) for name in names]


def suite_tensors(suite: EvalSuite, *, progress: bool = True, with_ids: bool = False) -> tuple:
    """A whole ImageFolder-tree set decoded into memory: (uint8 images (N, 3, H, W), int64 labels (N,)),
    and with `with_ids` each image's path relative to the set's folder (N,).
    Undecodable images are left out (ValueError when none decodes); every image must share the first
    one's size (ValueError naming the first that does not)."""
    if suite.crop_border or any(len(t) != 1 for t in suite.target_classes):
        raise ValueError(f"{suite.name}: read as distributed (cropped or mapped targets); decode it through "
                         f"SuiteDataset instead")
    paths = [path for path, _ in suite.samples]
    with progress_bar(total=len(paths), desc=Path(suite.root).name, unit="img", enabled=progress) as bar:
        images, kept = stack_into(decode_many(paths, None, 0, skip_errors=True), paths, bar)
    if not kept:
        raise ValueError(f"{suite.root}: none of the {len(paths)} images could be decoded")
    labels = torch.tensor([suite.samples[i][1] for i in kept], dtype=torch.int64)
    if not with_ids:
        return images, labels
    return images, labels, [Path(paths[i]).relative_to(suite.root).as_posix() for i in kept]
