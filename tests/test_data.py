import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from clipshift.data import (EvalImageFolder, ImageCaptionDataset, TextMatcher, load_all, load_images,
                            masked_argmax, masked_topk, match_report, read_caption_table, skip_none_collate,
                            subset_mask)


def _png(path, size=8, seed=0, suffix_format=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=suffix_format)


# ---- text matching ----------------------------------------------------------------------------

def test_text_matching_whole_words_case_synonyms_and_ambiguity():
    m = TextMatcher(["star", "circle", "hot dog"], {"circle": ["disc"], "hot dog": ["frankfurter"]})
    assert m.match("A STAR.") == 0
    assert m.match("Starfish on the beach") is None
    assert m.match("superstar") is None and m.match("star_ship") is None
    assert m.match("#star tags") == 0
    assert m.match("my Disc") == 1 and m.match("discs") is None
    assert m.match("a frankfurter") == 2
    assert m.match("a hot-dog stand") == 2 and m.match("hot_dog") == 2 and m.match("HOT  DOG") == 2
    assert m.match("star and circle") is None  # two classes: dropped
    assert m.match("star and disc") is None
    assert m.match("") is None
    assert m.match_many(["star", "nothing", "disc star"]).tolist() == [0, -1, -1]
    assert m.match_many(["star"]).dtype == np.int64


def test_text_matcher_underscored_names_and_multiword_synonyms():
    m = TextMatcher(["great_white_shark", "tabby"], {"tabby": ["tabby cat", "tiger-cat"]})
    assert m.match("a Great White Shark!") == 0 and m.match("great-white_shark") == 0
    assert m.match("my tiger cat") == 1 and m.match("tiger") is None


def test_text_matcher_validation():
    with pytest.raises(ValueError, match="non-empty"):
        TextMatcher([])
    with pytest.raises(ValueError, match="duplicate class name 'a'"):
        TextMatcher(["a", "a"])
    with pytest.raises(ValueError, match="claimed by both 'a' and 'b'"):
        TextMatcher(["a", "b"], {"a": ["x"], "b": ["X"]})
    with pytest.raises(ValueError, match="'hot dog' is claimed by both 'hot_dog' and 'frank'"):
        TextMatcher(["hot_dog", "frank"], {"frank": ["hot dog"]})
    with pytest.raises(ValueError, match="unknown class\\(es\\) \\['c'\\]"):
        TextMatcher(["a", "b"], {"c": ["x"]})
    with pytest.raises(ValueError, match="synonyms of 'a' must be a list"):
        TextMatcher(["a"], {"a": "x"})
    with pytest.raises(ValueError, match="non-blank string, got '-'"):
        TextMatcher(["a"], {"a": ["-"]})
    with pytest.raises(TypeError, match="caption 1 must be a string"):
        TextMatcher(["a"]).match_many(["a", float("nan")])


def test_match_report_by_hand():
    # matched: rows 0, 1, 3 -> 3 of 5; correct: row 0 (0 == 0) and row 3 (1 == 1) -> 2 of 3.
    # class 0 predicted once (right) -> 1.0; class 1 predicted twice (one right) -> 0.5.
    report = match_report(np.array([0, 1, -1, 1, -1]), np.array([0, 0, 1, 1, 1]))
    assert report["n"] == 5 and report["n_matched"] == 3 and report["match_rate"] == pytest.approx(0.6)
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["per_class_precision"] == {0: 1.0, 1: 0.5}  # class 2 never predicted: omitted
    assert set(match_report(np.array([2, -1]))) == {"n", "n_matched", "match_rate"}
    nothing = match_report(np.array([-1, -1]), np.array([0, 1]))
    assert nothing["match_rate"] == 0.0 and np.isnan(nothing["precision"]) and nothing["per_class_precision"] == {}
    with pytest.raises(ValueError, match="true_labels has shape \\(3,\\)"):
        match_report(np.array([0, 1]), np.array([0, 1, 2]))


def test_synonym_files_yaml_json_text(tmp_path):
    (tmp_path / "s.yaml").write_text("star: [pentagram]\ncircle: [disc]\nsquare:\n")
    (tmp_path / "s.json").write_text('{"star": ["pentagram"], "circle": ["disc", "round thing"]}')
    (tmp_path / "s.txt").write_text("# shapes\nstar: pentagram\n\ncircle: disc, ball\nsquare\n")
    yaml_matcher = TextMatcher.from_file(tmp_path / "s.yaml")
    assert yaml_matcher.class_names == ["star", "circle", "square"] and yaml_matcher.match("a pentagram") == 0
    assert TextMatcher.from_file(tmp_path / "s.json").match("a Round Thing") == 1
    text_matcher = TextMatcher.from_file(tmp_path / "s.txt")
    assert text_matcher.match("a ball") == 1 and text_matcher.match("a square") == 2
    ordered = TextMatcher.from_file(tmp_path / "s.json", class_names=["circle", "star", "square"])
    assert ordered.match("pentagram") == 1 and ordered.match("square") == 2


def test_synonym_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="synonyms file not found: .*missing.yaml"):
        TextMatcher.from_file(tmp_path / "missing.yaml")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        TextMatcher.from_file(tmp_path / "bad.json")
    (tmp_path / "bad.yaml").write_text("star: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        TextMatcher.from_file(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- star\n- circle\n")
    with pytest.raises(ValueError, match="list.yaml: expected a mapping .* got list"):
        TextMatcher.from_file(tmp_path / "list.yaml")
    (tmp_path / "str.yaml").write_text("star: pentagram\n")
    with pytest.raises(ValueError, match="class 'star': expected a list of synonyms, got 'pentagram'"):
        TextMatcher.from_file(tmp_path / "str.yaml")
    (tmp_path / "twice.txt").write_text("star: a\nstar: b\n")
    with pytest.raises(ValueError, match="twice.txt, line 2: class 'star' listed twice"):
        TextMatcher.from_file(tmp_path / "twice.txt")
    (tmp_path / "noname.txt").write_text("star: a\n: b\n")
    with pytest.raises(ValueError, match="noname.txt, line 2: expected 'name: synonym"):
        TextMatcher.from_file(tmp_path / "noname.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ValueError, match="binary.txt: cannot read"):
        TextMatcher.from_file(tmp_path / "binary.txt")
    (tmp_path / "ok.txt").write_text("star: a\nmoon: b\n")
    with pytest.raises(ValueError, match="ok.txt: synonyms for class\\(es\\) not in class_names: \\['moon'\\]"):
        TextMatcher.from_file(tmp_path / "ok.txt", class_names=["star"])


# ---- caption tables ---------------------------------------------------------------------------

@pytest.fixture
def images(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png", seed=1)
    return tmp_path


def test_caption_table_csv_relative_paths_and_string_labels(images):
    pd.DataFrame({"filepath": ["img/a.png", str(images / "img" / "b.png")], "caption": ["a star", "a disc"],
                  "label": ["star", "circle"]}).to_csv(images / "t.csv", index=False)
    table = read_caption_table(images / "t.csv")
    assert list(table.columns) == ["filepath", "caption", "label"]
    assert table["filepath"].tolist() == [str(images / "img" / "a.png"), str(images / "img" / "b.png")]
    ds = ImageCaptionDataset(table, class_names=["circle", "star"])
    assert len(ds) == 2 and ds.labels.tolist() == [1, 0]
    image, caption, label = ds[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and caption == "a star" and label == 1
    assert torch.equal(image, torch.from_numpy(np.array(Image.open(images / "img" / "a.png"))).permute(2, 0, 1))
    with pytest.raises(ValueError, match="row 1: unknown label 'star'"):
        ImageCaptionDataset(table, class_names=["circle"])
    with pytest.raises(ValueError, match="row 1: label 'star' is a class name, but no class_names"):
        ImageCaptionDataset(table)


def test_caption_table_tab_separated_int_labels_and_no_labels(images):
    (images / "t.tsv").write_text("filepath\ttitle\tlabel\nimg/a.png\ta star, big\t3\nimg/b.png\tdisc\t0\n")
    table = read_caption_table(images / "t.tsv", caption_column="title")
    assert table["caption"].tolist() == ["a star, big", "disc"] and table["label"].tolist() == [3, 0]
    assert ImageCaptionDataset(table)[0][2] == 3
    with pytest.raises(ValueError, match="row 1: label 3 is out of range"):
        ImageCaptionDataset(table, class_names=["a", "b"])
    (images / "plain.csv").write_text("filepath,caption\nimg/a.png,a star\n")
    table = read_caption_table(images / "plain.csv")
    assert "label" not in table.columns
    ds = ImageCaptionDataset(table, transform=lambda im: im.size)
    assert ds[0] == ((8, 8), "a star", -1)


def test_caption_table_errors(images):
    (images / "t.tsv").write_text("filepath\ttitle\nimg/a.png\ta star\n")
    with pytest.raises(ValueError, match="missing column\\(s\\) \\['caption'\\]; found \\['filepath', 'title'\\]"):
        read_caption_table(images / "t.tsv")
    with pytest.raises(ValueError, match="pass sep="):
        read_caption_table(images / "t.tsv", sep=",")
    (images / "m.csv").write_text("filepath,caption\nimg/a.png,x\nimg/zzz.png,y\nimg/yyy.png,z\n")
    with pytest.raises(FileNotFoundError, match="m.csv: 2 image file\\(s\\) not found \\(row 2: .*zzz.png, row 3"):
        read_caption_table(images / "m.csv")
    (images / "e.csv").write_text('filepath,caption\nimg/a.png,x\nimg/b.png," "\n')
    with pytest.raises(ValueError, match="e.csv: 1 empty caption\\(s\\) in column 'caption' \\(row 2\\)"):
        read_caption_table(images / "e.csv")
    (images / "l.csv").write_text("filepath,caption,label\nimg/a.png,x,star\nimg/b.png,y,\n")
    with pytest.raises(ValueError, match="l.csv: 1 blank label\\(s\\) in column 'label' \\(row 2\\)"):
        read_caption_table(images / "l.csv")
    (images / "h.csv").write_text("filepath,caption\n")
    with pytest.raises(ValueError, match="h.csv: the caption table has a header but no rows"):
        read_caption_table(images / "h.csv")
    with pytest.raises(FileNotFoundError, match="caption table not found"):
        read_caption_table(images / "none.csv")


def test_load_images_shapes_resize_and_errors(tmp_path):
    _png(tmp_path / "a.png", 8)
    _png(tmp_path / "b.png", 12)
    Image.new("L", (8, 8), 7).save(tmp_path / "grey.png")
    (tmp_path / "bad.png").write_bytes(b"garbage bytes")
    a, b, grey = str(tmp_path / "a.png"), str(tmp_path / "b.png"), str(tmp_path / "grey.png")
    images = load_images([a, grey, a], progress=False)
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.uint8
    assert torch.equal(images[0], images[2]) and (images[1] == 7).all()
    resized = load_images(pd.Series([a, b]), size=6, num_workers=2, progress=False)
    assert resized.shape == (2, 3, 6, 6)
    with pytest.raises(ValueError, match="b.png has shape \\(3, 12, 12\\), but .*a.png has \\(3, 8, 8\\)"):
        load_images([a, b], progress=False)
    with pytest.raises(ValueError, match="cannot decode image .*bad.png"):
        load_images([a, str(tmp_path / "bad.png")], progress=False)
    with pytest.raises(ValueError, match="no image paths"):
        load_images([], progress=False)
    with pytest.raises(ValueError, match="size must be a positive int"):
        load_images([a], size=0, progress=False)


# ---- evaluation ImageFolder trees -------------------------------------------------------------

NAMES = ["n0", "n1", "n2", "n3"]


@pytest.fixture
def eval_set(tmp_path):
    root = tmp_path / "set"
    for folder in ("n1", "n3"):
        _png(root / folder / "0.png")
        _png(root / folder / "1.JPG", seed=2, suffix_format="JPEG")
    (root / "n3" / "broken.png").write_bytes(b"not an image")
    (root / "n3" / "notes.txt").write_text("ignored")
    (root / ".cache").mkdir()
    (root / "README").write_text("ignored")
    return root


def test_eval_image_folder_subset_of_classes(eval_set):
    ds = EvalImageFolder(eval_set, NAMES)
    assert ds.class_indices == [1, 3] and len(ds) == 5
    assert [label for _, label in ds.samples] == [1, 1, 3, 3, 3] and ds.targets == [1, 1, 3, 3, 3]
    image, label = ds[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and label == 1
    assert ds.num_skipped == 0


def test_eval_image_folder_folder_to_class(eval_set):
    mapped = EvalImageFolder(eval_set, ["cat", "dog", "fox"], folder_to_class={"n1": "fox", "n3": "cat"})
    assert mapped.class_indices == [0, 2] and mapped.samples[0][1] == 2
    with pytest.raises(ValueError, match="1 folder\\(s\\) name no known class, e.g. \\['n3 -> cow'\\]"):
        EvalImageFolder(eval_set, ["cat", "fox"], folder_to_class={"n1": "fox", "n3": "cow"})


def test_eval_image_folder_errors(eval_set, tmp_path):
    with pytest.raises(ValueError, match="2 folder\\(s\\) name no known class, e.g. \\['n1', 'n3'\\]; "
                                         "known classes include \\['x'\\]"):
        EvalImageFolder(eval_set, ["x"])
    with pytest.raises(FileNotFoundError, match="not a folder"):
        EvalImageFolder(tmp_path / "nope", NAMES)
    (tmp_path / "bare").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        EvalImageFolder(tmp_path / "bare", NAMES)
    (eval_set / "n0").mkdir()
    (eval_set / "n0" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="class folder 'n0' has no images"):
        EvalImageFolder(eval_set, NAMES)


def test_corrupt_image_skipped_by_load_all_or_raised_when_strict(eval_set):
    ds = EvalImageFolder(eval_set, NAMES)
    images, labels, skipped = load_all(ds, progress=False)
    assert images.shape == (4, 3, 8, 8) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.tolist() == [1, 1, 3, 3]
    assert ds.num_skipped == 1 and len(skipped) == 1 and skipped[0].endswith("broken.png")
    assert ds.skipped_files == skipped
    assert load_all(ds, size=4, progress=False, num_workers=2)[0].shape == (4, 3, 4, 4)
    assert ds.num_skipped == 1  # the same file is not counted twice
    broken = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("broken.png")][0]
    assert ds[broken] is None
    batches = list(DataLoader(ds, batch_size=5, collate_fn=skip_none_collate))
    assert batches[0][0].shape == (4, 3, 8, 8)

    strict = EvalImageFolder(eval_set, NAMES, strict=True)
    with pytest.raises(ValueError, match="cannot decode image .*broken.png"):
        load_all(strict, progress=False)
    with pytest.raises(ValueError, match="cannot decode image .*broken.png"):
        strict[broken]


def test_load_all_size_mismatch_names_the_file(tmp_path):
    _png(tmp_path / "set" / "a" / "0.png", 8)
    _png(tmp_path / "set" / "b" / "0.png", 10)
    ds = EvalImageFolder(tmp_path / "set", ["a", "b"])
    with pytest.raises(ValueError, match="b.0.png has shape \\(3, 10, 10\\)"):
        load_all(ds, progress=False)
    assert load_all(ds, size=8, progress=False)[0].shape == (2, 3, 8, 8)


# ---- subset-masked scoring --------------------------------------------------------------------

def test_masked_argmax_stays_inside_the_subset():
    logits = torch.tensor([[9.0, 1.0, 2.0, 0.5], [0.0, 0.1, 5.0, 0.2], [9.0, -np.inf, 1.0, -np.inf]])
    best = masked_argmax(logits, [1, 3])
    assert best[:2].tolist() == [1, 3] and best[2].item() in (1, 3)  # subset all -inf: still inside
    assert masked_argmax(logits[:2], [3, 1, 3]).tolist() == [1, 3]
    assert masked_topk(logits[:2], [0, 2, 3], 2).tolist() == [[0, 2], [2, 3]]
    assert masked_argmax(logits[0], [1, 2]).item() == 2
    assert subset_mask([1, 3], 4).tolist() == [False, True, False, True]


def test_masked_scoring_validation():
    logits = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="out of range for 4 classes"):
        masked_argmax(logits, [1, 4])
    with pytest.raises(ValueError, match="class_indices is empty"):
        subset_mask([], 4)
    with pytest.raises(ValueError, match="k must be an int in 1 .. 2"):
        masked_topk(logits, [0, 1], 3)
