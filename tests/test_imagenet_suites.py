"""ImageNet suites read in their distributed layouts: small trees with real folder names."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.functional import pil_to_tensor

from clipshift.data._images import ImageDecodeError
from clipshift.data.imagenet import (DEFAULT_FOLDERS, IMAGENET_SUITES, EvalSuite, SuiteDataset,
                                     imagenet_label_strings, imagenet_wnids, open_suite, score, suite_collate)
from clipshift.data.eval_sets import open_suites
from miniature_real import OBJECTNET_MAPPINGS
from miniature_real import noise_image as _image
from miniature_real import noise_tree as _tree
from miniature_real import write_objectnet_tree as _objectnet

TIMM_INFO = Path(__import__("timm.data", fromlist=["x"]).__file__).parent / "_info"

# Real wnids at known positions of the sorted 1000 (tench 0, goldfish 1, ..., toilet tissue 999).
TENCH, GOLDFISH, GREAT_WHITE = "n01440764", "n01443537", "n01484850"
ANALOG_CLOCK, DIGITAL_CLOCK, TOILET_TISSUE = "n02708093", "n03196217", "n15075141"


def _suite(target_classes, class_indices, name="test") -> EvalSuite:
    return EvalSuite(name=name, root=Path("."), samples=[], target_classes=[tuple(c) for c in target_classes],
                     target_names=[f"t{i}" for i in range(len(target_classes))], class_indices=class_indices)


# ---- label space ------------------------------------------------------------------------------

def test_label_space_is_sorted_ilsvrc_order():
    wnids, labels = imagenet_wnids(), imagenet_label_strings()
    assert len(wnids) == len(labels) == 1000 == len(set(wnids))
    assert wnids == sorted(wnids)
    assert wnids[0] == TENCH and labels[0] == "tench, Tinca tinca"
    assert wnids[1] == GOLDFISH and labels[1].startswith("goldfish")
    assert wnids[999] == TOILET_TISSUE
    assert labels[wnids.index(ANALOG_CLOCK)] == "analog clock"
    wnids.append("x")  # callers get copies, not the cache
    assert len(imagenet_wnids()) == 1000


def test_suite_names_and_default_folders():
    assert set(IMAGENET_SUITES) == set(DEFAULT_FOLDERS)
    assert DEFAULT_FOLDERS["imagenet"] == "imagenet/val"
    assert DEFAULT_FOLDERS["imagenet-v2"] == "imagenetv2-matched-frequency-format-val"
    assert DEFAULT_FOLDERS["imagenet-sketch"] == "sketch"
    assert DEFAULT_FOLDERS["objectnet"] == "objectnet-1.0"


# ---- wnid layouts -----------------------------------------------------------------------------

def test_imagenet_val_by_data_root(tmp_path):
    folders = [GREAT_WHITE, TENCH, TOILET_TISSUE]
    _tree(tmp_path / "imagenet" / "val", folders, ".JPEG")
    (tmp_path / "imagenet" / "val" / TENCH / ".hidden.JPEG").write_bytes(b"x")
    (tmp_path / "imagenet" / "val" / ".cache").mkdir()
    suite = open_suite("imagenet", data_root=tmp_path)
    assert suite.root == tmp_path / "imagenet" / "val"
    assert suite.class_indices is None and suite.crop_border == 0 and suite.num_classes == 1000
    wnids = imagenet_wnids()
    # targets follow ImageNet class order; each target is its wnid's class
    assert suite.target_names == sorted(folders, key=wnids.index)
    assert suite.target_classes == [(wnids.index(w),) for w in suite.target_names]
    assert len(suite) == 6
    for path, target in suite.samples:
        assert Path(path).parent.name == suite.target_names[target] and not Path(path).name.startswith(".")


def test_sketch_extension_any_case_and_readme_ignored(tmp_path):
    root = tmp_path / "sketch"
    _tree(root, [GOLDFISH], ".JPEG")
    _image(root / TENCH / "a.jpeg")
    _image(root / TENCH / "b.PNG", fmt="PNG")
    (root / TENCH / "notes.txt").write_text("not an image")
    (root / "README.txt").write_text("readme")
    suite = open_suite("imagenet-sketch", root)
    assert suite.target_names == [TENCH, GOLDFISH]
    assert sorted(Path(p).name for p, t in suite.samples if t == 0) == ["a.jpeg", "b.PNG"]
    assert suite.class_indices is None


def test_open_suites_under_a_data_root_or_at_their_own_roots(tmp_path):
    _tree(tmp_path / "data" / "sketch", [TENCH], ".JPEG", per_class=1)
    own = _tree(tmp_path / "elsewhere", [GOLDFISH], ".jpg", per_class=1)
    suites = open_suites("imagenet-sketch, imagenet-r", tmp_path / "data", {"imagenet-r": own})
    assert [(s.name, s.target_names) for s in suites] == [("imagenet-sketch", [TENCH]), ("imagenet-r", [GOLDFISH])]
    assert [s.name for s in open_suites("imagenet-r", roots={"imagenet-r": own})] == ["imagenet-r"]
    with pytest.raises(ValueError, match=r"--datasets: unknown \['imagenet-x'\]"):
        open_suites("imagenet-x", tmp_path / "data")
    with pytest.raises(ValueError, match="give --data-root DIR"):
        open_suites("imagenet-sketch,imagenet-r", roots={"imagenet-r": own})


@pytest.mark.parametrize("name", ["imagenet-r", "imagenet-a"])
def test_200_class_subsets_derived_from_folders(tmp_path, name):
    folders = [TOILET_TISSUE, DIGITAL_CLOCK, GOLDFISH, ANALOG_CLOCK]
    root = _tree(tmp_path / name, folders, ".jpg")
    (root / "README.txt").write_text("n01443537 goldfish\n...")
    suite = open_suite(name, data_root=tmp_path)
    wnids = imagenet_wnids()
    assert suite.class_indices == sorted(wnids.index(w) for w in folders)
    assert suite.target_classes == [(c,) for c in suite.class_indices]
    assert suite.target_names == [wnids[c] for c in suite.class_indices]
    assert len(suite) == 8


def test_imagenet_r_full_subset_matches_timm_indices(tmp_path):
    """All 200 ImageNet-R folders give the subset timm ships (computed independently)."""
    synsets = (TIMM_INFO / "imagenet_r_synsets.txt").read_text().split()
    indices = [int(i) for i in (TIMM_INFO / "imagenet_r_indices.txt").read_text().split()]
    root = tmp_path / "imagenet-r"
    for w in synsets:
        (root / w).mkdir(parents=True)
        (root / w / "x.jpg").write_bytes(b"")  # not decoded when opening
    suite = open_suite("imagenet-r", root)
    assert len(suite.class_indices) == 200 and suite.class_indices == sorted(indices)


# ---- ImageNet-V2 --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["imagenet-v2", "imagenet-v2-threshold0.7", "imagenet-v2-top-images"])
def test_v2_numeric_folders(tmp_path, name):
    root = _tree(tmp_path / DEFAULT_FOLDERS[name], ["10", "2", "999", "0"], ".jpeg")
    suite = open_suite(name, data_root=tmp_path)
    assert suite.target_names == ["0", "2", "10", "999"]  # numeric, not "0", "10", "2", "999"
    assert suite.target_classes == [(0,), (2,), (10,), (999,)]
    assert suite.class_indices is None
    by_folder = {Path(p).parent.name: suite.target_classes[t][0] for p, t in suite.samples}
    assert by_folder == {"0": 0, "2": 2, "10": 10, "999": 999}


def test_v2_bad_folders(tmp_path):
    root = _tree(tmp_path / "v2", ["1", "1000", "n01440764"], ".jpeg", per_class=1)
    with pytest.raises(ValueError, match=r"2 folder\(s\) .* not class indices 0\.\.999.*'1000'.*'n01440764'"):
        open_suite("imagenet-v2", root)
    root = _tree(tmp_path / "v2b", ["1", "01"], ".jpeg", per_class=1)
    with pytest.raises(ValueError, match=r"folders '01' and '1' .* both name class index 1"):
        open_suite("imagenet-v2", root)


# ---- ObjectNet ----------------------------------------------------------------------------------

TINY_FOLDERS = {"alarm_clock": "Alarm clock", "banana": "Banana", "toilet_tissue": "Toilet paper",
                "wheelbarrow_x": "Wheelbarrow X", "unmapped_thing": "Unmapped thing"}
TINY_IMAGENET = {"Alarm clock": "analog clock; digital clock", "Banana": "banana",
                 "Toilet paper": "toilet tissue, toilet paper, bathroom tissue"}


def test_objectnet_tiny_mapping(tmp_path):
    root = _objectnet(tmp_path / "objectnet-1.0", TINY_FOLDERS, TINY_IMAGENET,
                      ["banana", "alarm_clock", "unmapped_thing"])
    suite = open_suite("objectnet", data_root=tmp_path)
    labels = imagenet_label_strings()
    clocks = (labels.index("analog clock"), labels.index("digital clock"))
    banana, tissue = labels.index("banana"), labels.index("toilet tissue, toilet paper, bathroom tissue")
    assert suite.root == root and suite.crop_border == 2
    assert suite.target_names == ["alarm_clock", "banana"]  # unmapped folder ignored
    assert suite.target_classes == [tuple(sorted(clocks)), (banana,)]
    assert suite.class_indices == sorted([*clocks, banana, tissue])  # union over the whole mapping
    assert all("unmapped_thing" not in p for p, _ in suite.samples) and len(suite) == 2


@pytest.mark.skipif(not (OBJECTNET_MAPPINGS / "objectnet_to_imagenet_1k.json").exists(),
                    reason="shared ObjectNet mapping files absent")
def test_objectnet_real_mapping_files(tmp_path):
    folder_map = json.loads((OBJECTNET_MAPPINGS / "folder_to_objectnet_label.json").read_text())
    imagenet_map = json.loads((OBJECTNET_MAPPINGS / "objectnet_to_imagenet_1k.json").read_text())
    assert len(folder_map) == 313 and len(imagenet_map) == 113
    root = tmp_path / "objectnet-1.0"
    (root / "mappings").mkdir(parents=True)
    for f in ("folder_to_objectnet_label.json", "objectnet_to_imagenet_1k.json"):
        (root / "mappings" / f).write_bytes((OBJECTNET_MAPPINGS / f).read_bytes())
    for folder in folder_map:  # all 313 folders, one empty-bodied file each (nothing decoded)
        (root / "images" / folder).mkdir(parents=True)
        (root / "images" / folder / "x.png").write_bytes(b"")
    suite = open_suite("objectnet", root)
    mapped = sorted(f for f, label in folder_map.items() if label in imagenet_map)
    assert len(mapped) == 113 and suite.target_names == mapped and len(suite) == 113
    assert len(suite.class_indices) == 125
    assert set(suite.class_indices) == {c for classes in suite.target_classes for c in classes}
    labels = imagenet_label_strings()
    for folder, classes in zip(suite.target_names, suite.target_classes):
        assert sorted(labels[c] for c in classes) == sorted(imagenet_map[folder_map[folder]].split("; "))
    t = suite.target_names.index("alarm_clock")
    assert suite.target_classes[t] == tuple(sorted((labels.index("analog clock"), labels.index("digital clock"))))


def test_objectnet_border_crop_applied(tmp_path):
    root = _objectnet(tmp_path / "objectnet-1.0", TINY_FOLDERS, TINY_IMAGENET, ["banana"], size=(10, 8))
    suite = open_suite("objectnet", root)
    image_path = suite.samples[0][0]
    full = pil_to_tensor(Image.open(image_path).convert("RGB"))
    image, target, i = SuiteDataset(suite, transform=pil_to_tensor)[0]
    assert image.shape == (3, 4, 6) and (target, i) == (0, 0)
    assert torch.equal(image, full[:, 2:-2, 2:-2])
    plain = open_suite("imagenet-sketch", _tree(tmp_path / "sketch", [TENCH], ".png", per_class=1))
    assert SuiteDataset(plain, transform=pil_to_tensor)[0][0].shape == (3, 8, 8)


def test_objectnet_errors(tmp_path):
    root = _objectnet(tmp_path / "on", TINY_FOLDERS, TINY_IMAGENET, ["banana", "mystery_a", "mystery_b"])
    with pytest.raises(ValueError, match=r"2 folder\(s\) .* not in .*folder_to_objectnet_label\.json.*'mystery_a'"):
        open_suite("objectnet", root)

    root = _objectnet(tmp_path / "on2", TINY_FOLDERS, {**TINY_IMAGENET, "Banana": "banana; bananas"}, ["banana"])
    with pytest.raises(ValueError, match=r"'Banana' maps to 'bananas', which is not an ILSVRC-2012 label string"):
        open_suite("objectnet", root)

    root = _objectnet(tmp_path / "on3", TINY_FOLDERS, {"Banana": "crane"}, ["banana"])
    with pytest.raises(ValueError, match=r"'crane', which names 2 ImageNet classes"):
        open_suite("objectnet", root)

    root = _objectnet(tmp_path / "on4", TINY_FOLDERS, {**TINY_IMAGENET, "Kiwi": "banana"}, ["banana"])
    with pytest.raises(ValueError, match=r"1 label\(s\) .* not in .*folder_to_objectnet_label\.json.*'Kiwi'"):
        open_suite("objectnet", root)

    root = _objectnet(tmp_path / "on5", TINY_FOLDERS, TINY_IMAGENET, ["unmapped_thing"])
    with pytest.raises(ValueError, match=r"none of the 1 folders .* maps to ImageNet"):
        open_suite("objectnet", root)

    root = _objectnet(tmp_path / "on6", TINY_FOLDERS, TINY_IMAGENET, ["banana"])
    (root / "mappings" / "objectnet_to_imagenet_1k.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"mapping file .*objectnet_to_imagenet_1k\.json not found"):
        open_suite("objectnet", root)

    root = _objectnet(tmp_path / "on7", TINY_FOLDERS, TINY_IMAGENET, ["banana"])
    (root / "mappings" / "folder_to_objectnet_label.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"folder_to_objectnet_label\.json is not valid JSON"):
        open_suite("objectnet", root)

    root = _objectnet(tmp_path / "on8", TINY_FOLDERS, TINY_IMAGENET, [])
    with pytest.raises(FileNotFoundError, match=r"objectnet: .*images is not a folder"):
        open_suite("objectnet", root)

    root = _objectnet(tmp_path / "on9", TINY_FOLDERS, TINY_IMAGENET, ["banana"])
    (root / "images" / "alarm_clock").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*alarm_clock has no images"):
        open_suite("objectnet", root)


# ---- errors on the other layouts --------------------------------------------------------------

def test_open_suite_errors(tmp_path):
    with pytest.raises(ValueError,
                       match=r"unknown ImageNet suite 'imagenet-c'; known suites: .*'imagenet-v2'.*'objectnet'"):
        open_suite("imagenet-c", data_root=tmp_path)
    with pytest.raises(FileNotFoundError,
                       match=r"imagenet-r not found: expected folder imagenet-r/ under the data root .*<wnid>/\*\.jpg"):
        open_suite("imagenet-r", data_root=tmp_path)
    with pytest.raises(FileNotFoundError,
                       match=r"imagenet-v2 not found: expected folder imagenetv2-matched-frequency-format-val/"):
        open_suite("imagenet-v2", data_root=tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'nowhere'} is not a folder")):
        open_suite("imagenet-a", tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"pass root= .* or data_root="):
        open_suite("imagenet")

    root = _tree(tmp_path / "a", [TENCH, "cat", "n99999999"], ".jpg", per_class=1)
    with pytest.raises(ValueError, match=r"2 folder\(s\) .* not ImageNet-1k wnids.*'cat'.*'n99999999'"):
        open_suite("imagenet-a", root)

    (tmp_path / "imagenet" / "val").mkdir(parents=True)  # pointing at imagenet/ instead of imagenet/val
    with pytest.raises(ValueError, match=r"did you mean .*val\?"):
        open_suite("imagenet", tmp_path / "imagenet")

    flat = tmp_path / "flat"
    _image(flat / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(ValueError,
                       match=r"no class folders .*ILSVRC2012_val_00000001\.JPEG.*sorted into class folders"):
        open_suite("imagenet", flat)

    root = _tree(tmp_path / "s", [TENCH], ".JPEG", per_class=1)
    (root / GOLDFISH).mkdir()
    (root / GOLDFISH / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=rf"class folder .*{GOLDFISH} has no images"):
        open_suite("imagenet-sketch", root)


# ---- decoding and collation -------------------------------------------------------------------

def test_corrupt_image_skipped_or_strict(tmp_path):
    root = _tree(tmp_path / "imagenet-r", [TENCH, GOLDFISH], ".jpg")
    bad = root / GOLDFISH / "img_0.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    suite = open_suite("imagenet-r", root)
    bad_index = [p for p, _ in suite.samples].index(str(bad))

    def to_tensor(image):
        return pil_to_tensor(image).float() / 255

    loader = DataLoader(SuiteDataset(suite, to_tensor), batch_size=4, collate_fn=suite_collate)
    images, targets, indices, skipped = next(iter(loader))
    assert skipped == [bad_index]
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.float32
    assert indices.dtype == targets.dtype == torch.int64
    assert indices.tolist() == [i for i in range(4) if i != bad_index]
    assert targets.tolist() == [suite.samples[i][1] for i in indices.tolist()]

    none_images, none_targets, none_indices, none_skipped = suite_collate([(None, 1, 7)])
    assert none_images is None and none_targets.numel() == 0 and none_skipped == [7]

    with pytest.raises(ImageDecodeError, match=re.escape(str(bad))):
        SuiteDataset(suite, to_tensor, strict=True)[bad_index]


# ---- scoring ------------------------------------------------------------------------------------

def test_score_masks_classes_outside_subset():
    suite = _suite([(10,), (20,), (30,)], class_indices=[10, 20, 30])
    logits = torch.zeros(3, 1000)
    logits[0, 10] = 1.0
    logits[0, 500] = 1e9  # outside the subset: must not win
    logits[1, 30], logits[1, 20] = 2.0, 1.0  # wrong at top-1, right at top-2
    logits[2, 30] = 5.0
    result = score(logits, torch.tensor([0, 1, 2]), suite)
    assert result["top1"] == pytest.approx(2 / 3)
    assert result["top5"] == 1.0  # only 3 classes scored: all in the top "5"
    assert result["mean_per_class_recall"] == pytest.approx(2 / 3)
    assert result["num_examples"] == 3
    unmasked = _suite([(10,), (20,), (30,)], class_indices=None)
    assert score(logits, torch.tensor([0, 1, 2]), unmasked)["top1"] == pytest.approx(1 / 3)


def test_score_multi_class_targets_top5_and_recall():
    # two ObjectNet-like targets: target 0 accepts classes 3 or 4, target 1 accepts 7
    subset = [1, 2, 3, 4, 5, 6, 7, 8]
    suite = _suite([(3, 4), (7,)], class_indices=subset)
    order = [  # per row, classes best first (all within the subset)
        [4, 1, 2, 5, 6, 3, 7, 8],  # target 0: top-1 hit via class 4
        [1, 2, 5, 6, 8, 3, 4, 7],  # target 0: miss in top 5
        [2, 1, 5, 3, 6, 4, 7, 8],  # target 0: top-5 hit via 3 (4th)
        [7, 1, 2, 3, 4, 5, 6, 8],  # target 1: top-1 hit
    ]
    targets = torch.tensor([0, 0, 0, 1])
    logits = torch.full((4, 1000), -1.0)
    logits[:, 999] = 100.0  # outside the subset
    for r, row in enumerate(order):
        for rank, c in enumerate(row):
            logits[r, c] = 10.0 - rank
    result = score(logits, targets, suite)
    top1 = [row[0] in suite.target_classes[t] for row, t in zip(order, targets.tolist())]
    top5 = [any(c in suite.target_classes[t] for c in row[:5]) for row, t in zip(order, targets.tolist())]
    assert top1 == [True, False, False, True] and top5 == [True, False, True, True]
    assert result["top1"] == pytest.approx(sum(top1) / 4)
    assert result["top5"] == pytest.approx(sum(top5) / 4)
    recall_0, recall_1 = sum(top1[:3]) / 3, top1[3] / 1
    assert result["mean_per_class_recall"] == pytest.approx((recall_0 + recall_1) / 2)
    assert not math.isclose(result["mean_per_class_recall"], result["top1"])


def test_score_errors():
    suite = _suite([(0,), (1,)], class_indices=None)
    with pytest.raises(ValueError, match=r"logits must be a \(N, 1000\) tensor .* got \(2, 10\)"):
        score(torch.zeros(2, 10), torch.tensor([0, 1]), suite)
    with pytest.raises(ValueError, match=r"targets must be a 1-D tensor of 2 target indices"):
        score(torch.zeros(2, 1000), torch.tensor([0]), suite)
    with pytest.raises(ValueError, match=r"targets \[2\] out of range for test's 2 targets"):
        score(torch.zeros(2, 1000), torch.tensor([0, 2]), suite)
    with pytest.raises(ValueError, match=r"cannot score 0 examples"):
        score(torch.zeros(0, 1000), torch.zeros(0, dtype=torch.long), suite)


def test_end_to_end_tiny_imagenet_r(tmp_path):
    """Open, load and score with a 'model' that predicts from the image's mean colour."""
    root = _tree(tmp_path / "imagenet-r", [TENCH, GOLDFISH, GREAT_WHITE], ".jpg")
    suite = open_suite("imagenet-r", root)
    loader = DataLoader(SuiteDataset(suite, lambda im: pil_to_tensor(im).float()), batch_size=4,
                        collate_fn=suite_collate)
    all_logits, all_targets = [], []
    for images, targets, indices, skipped in loader:
        assert skipped == []
        logits = torch.zeros(len(targets), 1000)
        logits[:, 0] = images.mean(dim=(1, 2, 3))  # tench score from brightness
        logits[:, 1] = 128.0  # goldfish: constant
        logits[:, 700] = 1e6  # not an ImageNet-R class in this tree
        all_logits.append(logits)
        all_targets.append(targets)
    logits, targets = torch.cat(all_logits), torch.cat(all_targets)
    result = score(logits, targets, suite)
    predicted = torch.where(logits[:, 0] > logits[:, 1], 0, 1)  # class 700 masked; 2 never wins over 0 logits
    truth = torch.tensor([suite.target_classes[t][0] for t in targets.tolist()])
    assert result["num_examples"] == 6
    assert result["top1"] == pytest.approx((predicted == truth).double().mean().item())
    assert result["top5"] == 1.0
