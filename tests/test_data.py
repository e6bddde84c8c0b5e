import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clipshift.data import (EvalImageFolder, ImageCaptionDataset, TextMatcher, load_all, load_images,
                            masked_argmax, match_report, read_caption_table)


def _png(path, size=8, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


def test_text_matching_whole_words_case_synonyms_and_ambiguity():
    m = TextMatcher(["star", "circle", "hot dog"], {"circle": ["disc"], "hot dog": ["frankfurter"]})
    assert m.match("A STAR.") == 0
    assert m.match("Starfish on the beach") is None
    assert m.match("#star tags") == 0
    assert m.match("my disc") == 1
    assert m.match("a hot-dog stand") == 2 and m.match("hot_dog") == 2
    assert m.match("star and circle") is None  # two classes: dropped
    assert m.match_many(["star", "nothing", "disc star"]).tolist() == [0, -1, -1]


def test_match_report_by_hand():
    report = match_report(np.array([0, 1, -1, 1, -1]), np.array([0, 0, 1, 1, 1]))
    assert report["n"] == 5 and report["n_matched"] == 3 and report["match_rate"] == pytest.approx(0.6)
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["per_class_precision"] == {0: 1.0, 1: 0.5}


def test_text_matcher_errors_and_files(tmp_path):
    with pytest.raises(ValueError, match="duplicate class name 'a'"):
        TextMatcher(["a", "a"])
    with pytest.raises(ValueError, match="claimed by both 'a' and 'b'"):
        TextMatcher(["a", "b"], {"a": ["x"], "b": ["X"]})
    (tmp_path / "s.yaml").write_text("star: [pentagram]\ncircle: [disc]\n")
    (tmp_path / "s.txt").write_text("star: pentagram\ncircle: disc, ball\n")
    assert TextMatcher.from_file(tmp_path / "s.yaml").match("a pentagram") == 0
    assert TextMatcher.from_file(tmp_path / "s.txt").match("a ball") == 1
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        TextMatcher.from_file(tmp_path / "bad.json")


def test_caption_table_csv_tsv_relative_paths_and_errors(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png", seed=1)
    pd.DataFrame({"filepath": ["img/a.png", "img/b.png"], "caption": ["a star", "a disc"],
                  "label": ["star", "circle"]}).to_csv(tmp_path / "t.csv", index=False)
    table = read_caption_table(tmp_path / "t.csv")
    assert table["filepath"][0] == str(tmp_path / "img" / "a.png")
    ds = ImageCaptionDataset(table, class_names=["circle", "star"])
    image, caption, label = ds[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and caption == "a star" and label == 1
    (tmp_path / "t.tsv").write_text("filepath\ttitle\nimg/a.png\ta star\n")
    assert read_caption_table(tmp_path / "t.tsv", caption_column="title")["caption"][0] == "a star"
    with pytest.raises(ValueError, match="missing column\\(s\\) \\['caption'\\]"):
        read_caption_table(tmp_path / "t.tsv")
    (tmp_path / "m.csv").write_text("filepath,caption\nimg/a.png,x\nimg/zzz.png,y\n")
    with pytest.raises(FileNotFoundError, match="1 image file\\(s\\) not found \\(row 2"):
        read_caption_table(tmp_path / "m.csv")
    with pytest.raises(ValueError, match="unknown label 'star'"):
        ImageCaptionDataset(table, class_names=["circle"])


def test_load_images_and_size_mismatch(tmp_path):
    _png(tmp_path / "a.png", 8)
    _png(tmp_path / "b.png", 12)
    images = load_images([str(tmp_path / "a.png")] * 2, progress=False)
    assert images.shape == (2, 3, 8, 8) and images.dtype == torch.uint8
    assert load_images([str(tmp_path / "a.png"), str(tmp_path / "b.png")], size=8, progress=False).shape[0] == 2
    with pytest.raises(ValueError, match="b.png has shape"):
        load_images([str(tmp_path / "a.png"), str(tmp_path / "b.png")], progress=False)


def test_eval_image_folder_subsets_mapping_and_bad_files(tmp_path):
    names = ["n0", "n1", "n2", "n3"]
    for folder in ("n1", "n3"):
        _png(tmp_path / "set" / folder / "0.png")
        _png(tmp_path / "set" / folder / "1.png", seed=2)
    (tmp_path / "set" / "n3" / "broken.png").write_bytes(b"not an image")
    ds = EvalImageFolder(tmp_path / "set", names)
    assert ds.class_indices == [1, 3] and len(ds) == 5
    images, labels, skipped = load_all(ds, progress=False)
    assert images.shape == (4, 3, 8, 8) and labels.tolist() == [1, 1, 3, 3]
    assert ds.num_skipped == 1 and skipped[0].endswith("broken.png")
    with pytest.raises(ValueError, match="cannot decode"):
        load_all(EvalImageFolder(tmp_path / "set", names, strict=True), progress=False)
    mapped = EvalImageFolder(tmp_path / "set", ["a", "b"], folder_to_class={"n1": "a", "n3": "b"})
    assert mapped.class_indices == [0, 1]
    with pytest.raises(ValueError, match="2 folder\\(s\\) name no known class, e.g. \\['n1', 'n3'\\]"):
        EvalImageFolder(tmp_path / "set", ["x"])
    (tmp_path / "set" / "n0").mkdir()
    with pytest.raises(ValueError, match="class folder 'n0' has no images"):
        EvalImageFolder(tmp_path / "set", names)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        EvalImageFolder(tmp_path / "nope", names)


def test_masked_argmax_stays_inside_the_subset():
    logits = torch.tensor([[9.0, 1.0, 2.0, 0.5], [0.0, 0.1, 5.0, 0.2]])
    assert masked_argmax(logits, [1, 3]).tolist() == [1, 3]
