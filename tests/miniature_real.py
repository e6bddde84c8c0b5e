"""Miniatures of the real data layouts (docs REAL_DATA.md), written from generated images.

Plain functions; each writes under the folder it is given and returns what it wrote. Four real
ImageNet classes (:data:`WNIDS`: candle, sandal, wine bottle, banana: in ImageNet-1k, -R, -A
and ObjectNet's mapping) each get one shape of the embedded world (:data:`SHAPE_OF`), drawn by the
world's renderer in the style of the layout (photos for train and val, sketches for Sketch,
renditions for -R, ...) in one colour per class, so a tiny model learns the classes from a few
dozen images. Captions name the classes by
name or WordNet synonym, or not at all, or two of them (:func:`caption`), with known answers.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from clipshift.data.imagenet import imagenet_wnids
from clipshift.world.distributions import get_distribution
from clipshift.world.render import render
from clipshift.world.shapes import CLASS_NAMES

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OBJECTNET_MAPPINGS = SHARED_DATA / "objectnet"

CANDLE, SANDAL, WINE_BOTTLE, BANANA = "n02948072", "n04133789", "n04591713", "n07753592"
WNIDS = [CANDLE, SANDAL, WINE_BOTTLE, BANANA]  # sorted, as the ImageNet label space orders them
NAMES = {CANDLE: "candle", SANDAL: "sandal", WINE_BOTTLE: "wine bottle", BANANA: "banana"}
# another way of naming each class that text matching accepts (a WordNet lemma, case, a hyphen)
SYNONYM = {CANDLE: "taper", SANDAL: "Sandal", WINE_BOTTLE: "Wine-Bottle", BANANA: "BANANA"}
SHAPE_OF = {CANDLE: "triangle", SANDAL: "cross", WINE_BOTTLE: "square", BANANA: "crescent"}
COLOUR_OF = {CANDLE: "red", SANDAL: "blue", WINE_BOTTLE: "green", BANANA: "yellow"}
OBJECTNET_FOLDER = {CANDLE: "candle", SANDAL: "sandal", WINE_BOTTLE: "wine_bottle", BANANA: "banana"}
OBJECTNET_UNMAPPED = "scissors"  # an ObjectNet folder whose label maps to no ImageNet class

# What a caption of kind k (image index % 8) says, and what text matching gives: the class itself
# (name or synonym), nothing, two classes (dropped), or the next class (a wrong label).
CAPTION_KINDS = ("name", "synonym", "none", "two", "name", "synonym", "none", "other")
EXPECTED_MATCH = {"name": "self", "synonym": "self", "none": None, "two": None, "other": "next"}


def caption(wnid: str, i: int) -> str:
    """The caption of image `i` of class `wnid` (kind ``CAPTION_KINDS[i % 8]``)."""
    kind = CAPTION_KINDS[i % len(CAPTION_KINDS)]
    other = NAMES[WNIDS[(WNIDS.index(wnid) + 1) % len(WNIDS)]]
    return {"name": f"a {NAMES[wnid]} in the kitchen", "synonym": f"my {SYNONYM[wnid]}, photo {i}",
            "none": f"IMG_{1000 + i} holiday snapshot", "two": f"the {NAMES[wnid]} and the {other}",
            "other": f"{other} in the evening"}[kind]


def expected_label(wnid: str, i: int) -> int:
    """Position in :data:`WNIDS` that text matching gives `caption(wnid, i)`, or -1 (dropped)."""
    answer = EXPECTED_MATCH[CAPTION_KINDS[i % len(CAPTION_KINDS)]]
    k = WNIDS.index(wnid)
    return -1 if answer is None else k if answer == "self" else (k + 1) % len(WNIDS)


def draw(wnid: str, distribution: str, seed: int, size: int = 32) -> np.ndarray:
    """(size, size, 3) uint8: the world's shape for `wnid` in its colour, drawn from `distribution`."""
    rng = np.random.default_rng([seed, imagenet_wnids().index(wnid)])
    scene = get_distribution(distribution).sample(rng, CLASS_NAMES.index(SHAPE_OF[wnid]))
    scene.colour = COLOUR_OF[wnid]
    return render(scene, rng, size)


def write_image(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    Image.fromarray(pixels).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def noise_image(path: Path, size: tuple[int, int] = (8, 8), seed: int = 0, fmt: str | None = None) -> Path:
    """A random-pixel image (width, height) = `size` (format from the suffix unless `fmt`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt or ("JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None))
    return path


def noise_tree(root: Path, folders: list[str], ext: str, per_class: int = 2) -> Path:
    """``root/<folder>/img_<j><ext>`` random images, `per_class` per folder."""
    for k, folder in enumerate(folders):
        for j in range(per_class):
            noise_image(root / folder / f"img_{j}{ext}", seed=10 * k + j)
    return root


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def write_wnid_file(path: Path, wnids: list[str], comment: str = "# class subset") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([comment, *wnids, ""]))
    return path


# ---- training data ----------------------------------------------------------------------------

def write_imagenet_train(root: Path, per_class: int = 8, seed: int = 0) -> dict[str, list[Path]]:
    """``root/<wnid>/<wnid>_<n>.JPEG`` (the ImageNet train tree) photos; {wnid: files}."""
    return {w: [write_image(root / w / f"{w}_{10 + i}.JPEG", draw(w, "narrow", seed * 10_000 + i))
                for i in range(per_class)] for w in WNIDS}


def write_imagenet_captions(folder: Path, per_class: int = 8, seed: int = 0) -> dict[str, Path]:
    """An ImageNet train tree ``folder/train`` and ``folder/imagenet_captions.json`` beside it, one
    entry per image ``{filename, wnid, title, description, tags}`` (caption = :func:`caption`,
    split over title, description and tags), plus an entry with all fields empty (dropped)."""
    files = write_imagenet_train(folder / "train", per_class, seed)
    entries = []
    for wnid, paths in files.items():
        for i, path in enumerate(paths):
            text = caption(wnid, i)
            title, _, rest = text.partition(" ") if i % 3 == 2 else (text, "", "")
            entries.append({"filename": path.name, "wnid": wnid, "title": title, "description": rest,
                            "tags": ["2009"] if i % 2 else []})
    entries.append({"filename": files[BANANA][0].name, "wnid": BANANA, "title": "", "description": "", "tags": []})
    return {"json": write_json(folder / "imagenet_captions.json", entries), "root": folder / "train"}


def write_caption_csv(folder: Path, per_class: int = 8, seed: int = 1) -> dict[str, Path]:
    """A YFCC-style table ``folder/train.tsv`` (open_clip's: tab-separated, ``filepath``, ``title``)
    of web-like images (relative paths into ``folder/images``) and a copy with a ``label`` column
    of wnids, ``folder/train_wnids.tsv``."""
    rows, labelled = ["filepath\ttitle"], ["filepath\ttitle\tlabel"]
    for wnid in WNIDS:
        for i in range(per_class):
            path = write_image(folder / "images" / f"{wnid}_{i}.jpg", draw(wnid, "diverse", seed * 10_000 + i))
            rows.append(f"images/{path.name}\t{caption(wnid, i)}")
            labelled.append(f"{rows[-1]}\t{wnid}")
    (folder / "train.tsv").write_text("\n".join(rows) + "\n")
    (folder / "train_wnids.tsv").write_text("\n".join(labelled) + "\n")
    return {"path": folder / "train.tsv", "labelled": folder / "train_wnids.tsv", "images": folder / "images"}


def write_shards(folder: Path, per_class: int = 8, per_shard: int = 12, seed: int = 2) -> dict:
    """webdataset shards ``folder/00000.tar``, ...: ``KEY.jpg`` (every third one ``KEY.png``),
    ``KEY.txt`` (:func:`caption`) and ``KEY.json``; {"urls": brace pattern, "shards": paths}."""
    samples = [(wnid, i) for i in range(per_class) for wnid in WNIDS]
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for s in range(0, len(samples), per_shard):
        path = folder / f"{s // per_shard:05d}.tar"
        with tarfile.open(path, "w") as archive:
            for n, (wnid, i) in enumerate(samples[s : s + per_shard], start=s):
                buffer, ext = io.BytesIO(), "png" if n % 3 == 0 else "jpg"
                Image.fromarray(draw(wnid, "diverse", seed * 10_000 + i)).save(buffer, format="PNG" if ext == "png"
                                                                                 else "JPEG")
                members = {ext: buffer.getvalue(), "txt": caption(wnid, i).encode(),
                           "json": json.dumps({"wnid": wnid, "key": f"{n:06d}"}).encode()}
                for suffix, payload in members.items():
                    info = tarfile.TarInfo(f"{n:06d}.{suffix}")
                    info.size = len(payload)
                    archive.addfile(info, io.BytesIO(payload))
        shards.append(path)
    return {"urls": str(folder / f"{{00000..{len(shards) - 1:05d}}}.tar"), "shards": shards}


# ---- evaluation suites ------------------------------------------------------------------------

def _wnid_tree(root: Path, distribution: str, name_of, per_class: int, seed: int,
               wnids: list[str] = WNIDS) -> Path:
    for k, wnid in enumerate(wnids):
        for i in range(per_class):
            write_image(root / name_of(wnid, k, i), draw(wnid, distribution, seed * 10_000 + i))
    return root


def write_imagenet_val(data_root: Path, per_class: int = 4) -> Path:
    """``imagenet/val/<wnid>/ILSVRC2012_val_000xxxxx.JPEG`` (val sorted into wnid folders)."""
    return _wnid_tree(data_root / "imagenet" / "val", "narrow",
                      lambda w, k, i: f"{w}/ILSVRC2012_val_{k * per_class + i + 1:08d}.JPEG", per_class, 100)


def write_imagenet_v2(data_root: Path, per_class: int = 3) -> Path:
    """``imagenetv2-matched-frequency-format-val/<class index>/<hash>.jpeg``: no wnids anywhere."""
    index = imagenet_wnids()
    return _wnid_tree(data_root / "imagenetv2-matched-frequency-format-val", "v2",
                      lambda w, k, i: f"{index.index(w)}/{k:02x}{i:038x}.jpeg", per_class, 200)


def write_imagenet_sketch(data_root: Path, per_class: int = 3) -> Path:
    """``sketch/<wnid>/sketch_<n>.JPEG``."""
    return _wnid_tree(data_root / "sketch", "sketch", lambda w, k, i: f"{w}/sketch_{i}.JPEG", per_class, 300)


def write_imagenet_r(data_root: Path, per_class: int = 3) -> Path:
    """``imagenet-r/<wnid>/<style>_<n>.jpg`` plus ``README.txt``."""
    root = _wnid_tree(data_root / "imagenet-r", "rendition", lambda w, k, i: f"{w}/art_{i}.jpg", per_class, 400)
    (root / "README.txt").write_text("ImageNet-R (miniature)\n" + "\n".join(f"{w} {NAMES[w]}" for w in WNIDS))
    return root


def write_imagenet_a(data_root: Path, per_class: int = 3) -> Path:
    """``imagenet-a/<wnid>/0.000<n>_<label> _ <label>_0.9.jpg`` plus ``README.txt``."""
    root = _wnid_tree(data_root / "imagenet-a", "adversarial_pool",
                      lambda w, k, i: f"{w}/0.{k:03d}{i:03d}_{NAMES[w]} _ {NAMES[w]}_0.9.jpg", per_class, 500)
    (root / "README.txt").write_text("ImageNet-A (miniature)\n")
    return root


def objectnet_mappings() -> tuple[dict, dict]:
    """ObjectNet's two mapping files: the real ones when the shared copies are there, else the
    entries this miniature uses."""
    if (OBJECTNET_MAPPINGS / "objectnet_to_imagenet_1k.json").is_file():
        return (json.loads((OBJECTNET_MAPPINGS / "folder_to_objectnet_label.json").read_text()),
                json.loads((OBJECTNET_MAPPINGS / "objectnet_to_imagenet_1k.json").read_text()))
    labels = {"sandal": "Sandal", "candle": "Candle", "wine_bottle": "Wine bottle", "banana": "Banana",
              OBJECTNET_UNMAPPED: "Scissors"}
    return labels, {"Sandal": "sandal", "Candle": "candle, taper, wax light",
                    "Wine bottle": "wine bottle", "Banana": "banana"}


def write_objectnet_tree(root: Path, folder_map: dict, imagenet_map: dict, folders: list[str],
                         size: tuple[int, int] = (10, 8)) -> Path:
    """``root/mappings/*.json`` and one random ``root/images/<folder>/a.png`` per folder."""
    write_json(root / "mappings" / "folder_to_objectnet_label.json", folder_map)
    write_json(root / "mappings" / "objectnet_to_imagenet_1k.json", imagenet_map)
    for k, folder in enumerate(folders):
        noise_image(root / "images" / folder / "a.png", size=size, seed=k)
    return root


def write_objectnet(data_root: Path, per_class: int = 3, border: int = 2) -> Path:
    """``objectnet-1.0/images/<folder>/<hash>.png`` (a red `border` around each image) for the four
    classes' folders and one unmapped folder, with ``mappings/`` (:func:`objectnet_mappings`)."""
    root = data_root / "objectnet-1.0"
    folder_map, imagenet_map = objectnet_mappings()
    write_json(root / "mappings" / "folder_to_objectnet_label.json", folder_map)
    write_json(root / "mappings" / "objectnet_to_imagenet_1k.json", imagenet_map)
    folders = {**{OBJECTNET_FOLDER[w]: w for w in WNIDS}, OBJECTNET_UNMAPPED: BANANA}
    for k, (folder, wnid) in enumerate(folders.items()):
        for i in range(per_class):
            pixels = np.empty((32 + 2 * border, 32 + 2 * border, 3), dtype=np.uint8)
            pixels[...] = (200, 0, 0)
            pixels[border:-border, border:-border] = draw(wnid, "objectnet", 600 * 10_000 + k * 100 + i)
            write_image(root / "images" / folder / f"{k:02x}{i:030x}.png", pixels)
    return root


SUITE_WRITERS = {"imagenet": write_imagenet_val, "imagenet-v2": write_imagenet_v2,
                 "imagenet-sketch": write_imagenet_sketch, "imagenet-r": write_imagenet_r,
                 "imagenet-a": write_imagenet_a, "objectnet": write_objectnet}


def write_data_root(data_root: Path) -> dict[str, Path]:
    """Every evaluation suite under `data_root` in its default folder: {suite name: its root}."""
    return {name: writer(data_root) for name, writer in SUITE_WRITERS.items()}
