import numpy as np
import pytest

from clipshift.data import TextMatcher, match_report
from clipshift.world.distributions import DISTRIBUTIONS, MixtureDistribution, SceneDistribution, get_distribution
from clipshift.world.generate import generate_split
from clipshift.world.shapes import CLASS_NAMES, SYNONYMS


def test_same_seed_same_images_and_captions_whatever_the_workers():
    a = generate_split(get_distribution("diverse"), 96, split="s", seed=3, workers=1, progress=False)
    b = generate_split(get_distribution("diverse"), 96, split="s", seed=3, workers=2, progress=False)
    assert np.array_equal(a.images, b.images)
    assert a.captions == b.captions
    c = generate_split(get_distribution("diverse"), 96, split="s", seed=4, workers=1, progress=False)
    assert not np.array_equal(a.images, c.images)


def test_growing_a_split_keeps_its_first_images():
    small = generate_split(get_distribution("narrow"), 20, split="s", workers=1, progress=False)
    tail = generate_split(get_distribution("narrow"), 10, split="s", start=10, workers=1, progress=False)
    assert np.array_equal(small.images[10:], tail.images)


def test_shapes_sizes_and_class_balance():
    split = generate_split(get_distribution("narrow"), 240, split="s", size=48, workers=1, progress=False)
    assert split.images.shape == (240, 48, 48, 3) and split.images.dtype == np.uint8
    assert len(CLASS_NAMES) >= 10
    assert np.bincount(split.labels, minlength=len(CLASS_NAMES)).tolist() == [20] * len(CLASS_NAMES)
    assert split.images.std() > 20  # not blank


def test_distributions_draw_the_styles_and_factors_they_declare():
    narrow = generate_split(get_distribution("narrow"), 300, split="s", workers=1, progress=False).attributes
    assert set(narrow["style"]) == {"photo"} and (narrow["factors"] == "").all()
    assert narrow["rotation"].abs().max() <= 15
    diverse = generate_split(get_distribution("diverse"), 1200, split="s", workers=1, progress=False).attributes
    weights = DISTRIBUTIONS["diverse"].styles
    for style, w in weights.items():
        assert abs((diverse["style"] == style).mean() - w / sum(weights.values())) < 0.05
    assert abs((diverse["factors"] != "").mean() - DISTRIBUTIONS["diverse"].factor_rate) < 0.05
    objectnet = generate_split(get_distribution("objectnet"), 120, split="s", workers=1, progress=False).attributes
    assert (objectnet["factors"] != "").all()
    rendition = generate_split(get_distribution("rendition"), 120, split="s", workers=1, progress=False).attributes
    assert set(rendition["style"]) == {"cartoon", "pattern", "painting", "mosaic"}
    sketch = generate_split(get_distribution("sketch"), 24, split="s", workers=1, progress=False).attributes
    assert set(sketch["background"]) == {"paper"}


def test_captions_name_the_class_about_90_percent_of_the_time_and_text_matching_is_precise():
    split = generate_split(get_distribution("diverse"), 1200, split="s", workers=1, progress=False)
    matched = TextMatcher(list(CLASS_NAMES), SYNONYMS).match_many(split.captions)
    report = match_report(matched, split.labels)
    assert 0.8 <= report["match_rate"] <= 0.95
    assert 0.95 <= report["precision"] < 1.0  # other classes' words sometimes mislead the matcher
    mentions = np.mean([any(w in c.split() or w in c for w in [CLASS_NAMES[y], *SYNONYMS[CLASS_NAMES[y]]])
                        for c, y in zip(split.captions, split.labels)])
    assert 0.85 <= mentions <= 0.95


def test_mixture_and_validation_errors():
    mix = MixtureDistribution({"narrow": 1.0, "diverse": 1.0})
    styles = generate_split(mix, 400, split="s", workers=1, progress=False).attributes["style"]
    assert 0.55 < (styles == "photo").mean() < 0.85
    with pytest.raises(ValueError, match="unknown distribution 'web'"):
        get_distribution("web")
    with pytest.raises(ValueError, match="styles: unknown names \\['oil'\\]"):
        SceneDistribution(styles={"oil": 1.0}).validate()
    with pytest.raises(ValueError, match="factor_rate must be in"):
        SceneDistribution(factor_rate=1.5).validate()
    with pytest.raises(ValueError, match="size must be a multiple of 4"):
        generate_split(get_distribution("narrow"), 4, split="s", size=30, progress=False)
