"""How a result was obtained: one protocol stamp per results row (the ``protocol`` column).

A stamp is ``key=value`` pairs joined by ``"; "`` (:func:`clipshift.formatting.format_protocol`):

- ``classes``: the class space scored. ``1000`` (all ImageNet classes), ``200 of 1000`` (ImageNet-R/-A:
  only the logits of the classes present compete), ``113 folders mapped to 125 of 1000`` (ObjectNet:
  its mapped folders, a prediction counting when it is any ImageNet class mapped to the folder),
  ``... all 1000`` (no mask, ``clipshift eval --class-space full``), ``world 12`` (the embedded world's
  classes), ``N classes #digest`` (any other label space, e.g. a wnid subset of N; the digest is of its
  class names);
- ``images``: the images of the evaluation set (decodable or not; ``num_examples`` counts those scored);
- ``crop``: ObjectNet's border crop before the transform (``2px border``; absent: no crop);
- ``variant``: ImageNet-V2's variant (``matched-frequency``, ``threshold0.7``, ``top-images``);
- ``prompts``: a zero-shot head's templates (``openai 80 #digest``, ``world 7 #digest``, ``custom 2
  #digest``), or ``none (own head)`` / ``none (linear probe)``;
- ``preprocess``: the image transform (``resize 224 bicubic, center-crop 224, openai mean/std #digest``),
  or ``uint8 32x32 as stored`` for in-memory images;
- ``clipshift``: the version that scored it.

``classes``, ``images``, ``crop`` and ``variant`` say what was measured (the dataset's protocol: rows
that differ there measure different things, and ``clipshift er`` refuses to fit or compare them);
``prompts`` and ``preprocess`` say how each model was run.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from .. import __version__
from ..data.imagenet import EvalSuite
from ..formatting import format_protocol

V2_VARIANTS = {"imagenet-v2": "matched-frequency", "imagenet-v2-threshold0.7": "threshold0.7",
               "imagenet-v2-top-images": "top-images"}
_MEANS = {(0.48145466, 0.4578275, 0.40821073): "openai mean/std", (0.485, 0.456, 0.406): "imagenet mean/std",
          (0.5, 0.5, 0.5): "0.5 mean/std"}


def digest(values) -> str:
    """8 hex digits identifying a list of strings (class names, templates) or a text."""
    text = values if isinstance(values, str) else "\n".join(map(str, values))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _base_space(suite: EvalSuite, class_names: Sequence[str] | None) -> str:
    from ..world.shapes import CLASS_NAMES

    n = suite.num_classes
    if class_names is not None and tuple(class_names) == tuple(CLASS_NAMES):
        return f"world {n}"
    if n == 1000:
        return "1000"
    return f"{n} classes" + (f" #{digest(class_names)}" if class_names is not None else "")


def class_space(suite: EvalSuite, class_names: Sequence[str] | None = None) -> str:
    """The ``classes`` field of `suite` scored over `class_names` (the label space's names, when known).
    A suite is ObjectNet-like (folders mapped to classes) when it crops a border or a target has several
    correct classes."""
    base = _base_space(suite, class_names)
    scored = suite.num_classes if suite.class_indices is None else len(suite.class_indices)
    if suite.crop_border or any(len(t) > 1 for t in suite.target_classes):
        folders = f"{len(suite.target_classes)} folders mapped"
        return f"{folders} to {scored} of {base}" if scored < suite.num_classes else f"{folders}, all {base}"
    return f"{scored} of {base}" if scored < suite.num_classes else base


def prompt_set(head) -> str:
    """The ``prompts`` field of a head: a zero-shot head's templates by name, count and digest."""
    templates = getattr(head, "templates", None)
    if type(head).__name__ == "ZeroShotHead":
        if templates is None:
            return "zero-shot (templates not recorded)"
        return f"{_template_name(list(templates))} {len(templates)} #{digest(templates)}"
    return {"LinearHead": "none (own head)", "ProbeHead": "none (linear probe)"}.get(
        type(head).__name__, f"none ({type(head).__name__})")


def _template_name(templates: list[str]) -> str:
    from ..world.captions import BARE_TEMPLATE, ZERO_SHOT_TEMPLATES
    from .heads import resolve_templates

    if templates == list(BARE_TEMPLATE):
        return "bare"
    if templates == list(ZERO_SHOT_TEMPLATES):
        return "world"
    for name in ("openai", "simple"):
        if templates == resolve_templates(name):
            return name
    return "custom"


def describe_transform(transform) -> str:
    """A short account of an image transform: its resize, crop and normalisation, and a digest of the
    whole (so two transforms that differ elsewhere still read differently)."""
    if transform is None:
        return "as decoded"
    parts = []
    for step in getattr(transform, "transforms", [transform]):
        kind = type(step).__name__
        if kind == "Resize":
            mode = getattr(getattr(step, "interpolation", None), "value", "")
            parts.append(f"resize {step.size} {mode}".strip())
        elif kind == "CenterCrop":
            size = step.size if isinstance(step.size, int) else "x".join(map(str, dict.fromkeys(step.size)))
            parts.append(f"center-crop {size}")
        elif kind == "Normalize":
            mean = tuple(round(float(m), 8) for m in step.mean)
            parts.append(_MEANS.get(mean, f"mean {'/'.join(f'{m:.3g}' for m in mean)}"))
    return f"{', '.join(parts)} #{digest(' '.join(repr(transform).split()))}".strip()


def preprocessing(model, data) -> str:
    """The ``preprocess`` field: the model's transform for image files, the stored size for in-memory images."""
    images = getattr(data, "images", None)
    if images is not None and not isinstance(data, EvalSuite):
        return f"uint8 {images.shape[-2]}x{images.shape[-1]} as stored"
    return describe_transform(model.preprocess)


def protocol_stamp(model, data, suite: EvalSuite, head, class_names: Sequence[str] | None = None,
                   num_images: int | None = None) -> str:
    """The stamp of `model` scored by `head` on `data` (an EvalSuite or ImageTensors, `suite` its
    scoring view) over `class_names`; `num_images`: the set's images (default ``len(data)``)."""
    v2 = isinstance(data, EvalSuite) and all(name.isdigit() for name in suite.target_names)  # V2's index folders
    fields = {"classes": class_space(suite, class_names), "images": num_images if num_images is not None else len(data),
              "crop": f"{suite.crop_border}px border" if suite.crop_border else None,
              "variant": V2_VARIANTS.get(suite.name) if v2 else None, "prompts": prompt_set(head),
              "preprocess": preprocessing(model, data), "clipshift": __version__}
    return format_protocol(fields)
