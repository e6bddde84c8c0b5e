"""ImageNet class subsets (wnid files): evaluation suites restricted to a subset, class names,
WordNet synonyms and text matching against ImageNet classes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import miniature_real as mini
from clipshift.data import TextMatcher
from clipshift.data.imagenet import imagenet_label_strings, imagenet_wnids, open_suite, score
from clipshift.data.imagenet_classes import (imagenet_class_names, imagenet_lemmas, imagenet_synonyms, read_wnids,
                                             restrict_suite)
from clipshift.recipes.common.training import class_names_for

WNIDS = imagenet_wnids()
TENCH, TABBY, ANALOG_CLOCK, DIGITAL_CLOCK = "n01440764", "n02123045", "n02708093", "n03196217"
CRANE_BIRD, CRANE_MACHINE = "n02012849", "n03126707"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    mini.write_data_root(root)
    return root


def test_wnid_file_gives_imagenet_names_in_file_order(tmp_path):
    path = mini.write_wnid_file(tmp_path / "subset.txt", [TABBY, TENCH, CRANE_MACHINE])
    assert read_wnids(path) == [TABBY, TENCH, CRANE_MACHINE]
    assert class_names_for(str(path)) == ["tabby cat", "tench", "construction crane"]
    assert imagenet_class_names() == class_names_for("imagenet") and len(imagenet_class_names()) == 1000


def test_wnid_file_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{TENCH}\n\nn99999999\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(bad))}, line 3: 'n99999999' is not an ImageNet-1k wnid"):
        read_wnids(bad)
    with pytest.raises(ValueError, match=r"line 3: 'n99999999' is not an ImageNet-1k wnid"):
        class_names_for(str(bad))  # a file with wnids is read as a class subset
    bad.write_text(f"{TENCH}\n{TABBY}\n{TENCH}\n")
    with pytest.raises(ValueError, match=rf"line 3: wnid '{TENCH}' already on line 1"):
        read_wnids(bad)
    bad.write_text(f"{TENCH}\ntabby cat\n")
    with pytest.raises(ValueError, match=r"line 2: 'tabby cat' is not a wnid"):
        read_wnids(bad)
    with pytest.raises(FileNotFoundError, match=r"wnid file not found: .*absent\.txt"):
        read_wnids(tmp_path / "absent.txt")


def test_restricted_suites_score_in_the_subset_label_space(data_root, tmp_path):
    # the miniature has candle, sandal, wine bottle, banana; the subset adds tench (in none of the shifts' sets)
    subset = [mini.BANANA, TENCH, mini.CANDLE]
    path = mini.write_wnid_file(tmp_path / "subset.txt", subset)
    for name in mini.SUITE_WRITERS:
        suite = open_suite(name, data_root=data_root, classes=path)
        assert suite.num_classes == 3
        assert sorted(suite.target_classes) == [(0,), (2,)]  # banana, candle: the classes present
        per_class = 4 if name == "imagenet" else 3
        assert len(suite) == 2 * per_class and {t for _, t in suite.samples} == {0, 1}
        folder = {"objectnet": mini.OBJECTNET_FOLDER.get, "imagenet-v2": lambda w: str(WNIDS.index(w))}.get(name, str)
        assert {Path(p).parent.name for p, _ in suite.samples} == {folder(mini.BANANA), folder(mini.CANDLE)}
        expected_scored = {"imagenet-r": [0, 2], "imagenet-a": [0, 2], "objectnet": [0, 2]}.get(name)
        assert suite.class_indices == expected_scored  # the 200/125 scored classes met with the subset
        logits = torch.zeros(len(suite), 3)
        logits[:, 1] = 10.0  # tench: outside the scored classes of R, A and ObjectNet
        logits[torch.arange(len(suite)), torch.tensor([suite.target_classes[t][0] for t in suite.targets])] = 5.0
        top1 = score(logits, torch.tensor(suite.targets), suite)["top1"]
        assert top1 == (1.0 if expected_scored else 0.0)


def test_restrict_keeps_the_objectnet_classes_inside_the_subset(tmp_path):
    folder_map = {"alarm_clock": "Alarm clock", "banana": "Banana"}
    imagenet_map = {"Alarm clock": "analog clock; digital clock", "Banana": "banana"}
    root = mini.write_objectnet_tree(tmp_path / "objectnet-1.0", folder_map, imagenet_map, ["alarm_clock", "banana"])
    full = open_suite("objectnet", root)
    labels = imagenet_label_strings()
    assert full.target_classes[0] == tuple(sorted(labels.index(s) for s in ("analog clock", "digital clock")))
    suite = restrict_suite(full, [mini.BANANA, DIGITAL_CLOCK])
    assert suite.target_names == ["alarm_clock", "banana"] and suite.target_classes == [(1,), (0,)]
    assert suite.class_indices == [0, 1] and suite.crop_border == 2
    with pytest.raises(ValueError, match=r"objectnet .*: none of its 3 scored classes is in the class subset "
                                         r"the 1 wnids \[n01440764\]"):
        restrict_suite(full, [TENCH])


def test_restrict_errors(data_root, tmp_path):
    path = mini.write_wnid_file(tmp_path / "fish.txt", [TENCH])
    with pytest.raises(ValueError, match=rf"imagenet-r .*: none of its 4 scored classes is in the class subset "
                                         rf"{re.escape(str(path))}"):
        open_suite("imagenet-r", data_root=data_root, classes=path)
    with pytest.raises(ValueError, match=r"imagenet .*: none of its classes is in the class subset"):
        open_suite("imagenet", data_root=data_root, classes=[TENCH])
    with pytest.raises(ValueError, match=r"'n0000' \(entry 2\) is not an ImageNet-1k wnid"):
        open_suite("imagenet", data_root=data_root, classes=[mini.BANANA, "n0000"])


def test_imagenet_synonyms_are_the_wordnet_lemmas():
    synonyms = imagenet_synonyms()
    assert synonyms["tabby cat"] == ["tabby"]  # lemmas 'tabby, tabby cat'; the name itself is not repeated
    assert synonyms["tench"] == ["Tinca tinca"]
    assert synonyms["candle"] == ["taper", "wax light"]
    assert len(synonyms) == 998  # open_clip gives 'missile' and 'sunglasses' to two classes each
    assert imagenet_synonyms([TABBY, TENCH]) == {"tabby cat": ["tabby"], "tench": ["Tinca tinca"]}
    lemmas = imagenet_lemmas()
    assert len(lemmas) == 1000 and lemmas[WNIDS.index(TABBY)] == ["tabby", "tabby cat"]
    assert all(lemmas) and sum(map(len, lemmas)) == 1860


def test_text_matching_with_lemmas_known_answers():
    subset = [TENCH, TABBY, CRANE_BIRD, CRANE_MACHINE, mini.CANDLE]
    matcher = TextMatcher(imagenet_class_names(subset), imagenet_lemmas(subset), shared_terms="ambiguous")
    answers = {
        "my tabby asleep": 1,  # a lemma, not the class name 'tabby cat'
        "Tabby-Cat on the sofa": 1,
        "caught a Tinca tinca today": 0,
        "a wax light in the dark": 4,
        "a taper": 4,
        "a crane": -1,  # 'crane' is a lemma of both crane classes: it names two classes
        "construction crane at dusk": -1,  # the name, but 'crane' too
        "a tabby and a tench": -1,  # two classes
        "tabbycat": -1, "tapers": -1,  # whole words only
        "sunset over the lake": -1,
    }
    assert matcher.match_many(list(answers)).tolist() == list(answers.values())


def test_full_imagenet_matcher_and_its_prefilter_agree_with_every_regex():
    matcher = TextMatcher(imagenet_class_names(), imagenet_lemmas(), shared_terms="ambiguous")
    captions = [mini.caption(w, i) for w in mini.WNIDS for i in range(8)] + [
        "a missile launch", "a projectile", "my sunglasses", "dark glasses", "hot dog with mustard",
        "Grand piano_concert", "jack-o'-lantern", "café au lait", "Straße in Berlin", "K9 unit", "the 747 airliner"]
    for caption in captions:
        brute = [i for i, pattern in enumerate(matcher._patterns) if pattern.search(caption)]
        assert matcher.matching_classes(caption) == brute, caption
    got = dict(zip(captions[32:], matcher.match_many(captions[32:]).tolist()))
    assert got["a missile launch"] == -1 and got["a projectile"] == WNIDS.index("n04008634")  # projectile, missile
    assert got["my sunglasses"] == -1  # two classes named 'sunglasses'
    assert got["the 747 airliner"] == WNIDS.index("n02690373") and got["dark glasses"] == WNIDS.index("n04356056")
    assert got["Grand piano_concert"] == WNIDS.index("n03452741") and got["hot dog with mustard"] == 934
    # classes are matched independently: 'jack' is a lemma of jackfruit, so the carved pumpkin's is dropped
    assert matcher.matching_classes("jack-o'-lantern") == [WNIDS.index("n03590841"), WNIDS.index("n07754684")]
    assert got["jack-o'-lantern"] == -1
    expected = np.array([mini.expected_label(w, i) for w in mini.WNIDS for i in range(8)])
    in_full = np.where(expected >= 0, [WNIDS.index(mini.WNIDS[e]) if e >= 0 else -1 for e in expected], -1)
    assert matcher.match_many(captions[:32]).tolist() == in_full.tolist()


def test_matcher_errors_stay_for_class_name_lists():
    with pytest.raises(ValueError, match="duplicate class name 'missile'"):
        TextMatcher(["missile", "missile"])
    with pytest.raises(ValueError, match=r"one list per class: got 1 lists for 2 classes"):
        TextMatcher(["a", "b"], [["x"]], shared_terms="ambiguous")
    with pytest.raises(ValueError, match=r"shared_terms must be 'error' or 'ambiguous'"):
        TextMatcher(["a"], shared_terms="drop")
    assert TextMatcher(["missile", "missile", "b"], shared_terms="ambiguous").match_many(["missile", "b"]).tolist() \
        == [-1, 2]
