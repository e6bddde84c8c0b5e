"""The explorer page at the scale of every published model: its size and the time until it is
interactive in headless Chromium (slow). In a module of its own, so that test_explore.py's shared
browser is closed before this one starts (one sync playwright at a time)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from clipshift.robustness.explore import write_explorer
from test_explore import browser_page


def published_scale_tables():
    """er and fits of ~1,690 models: 10 of the user's, above the shipped published baseline (timm's
    ImageNet-1k-only models), compared with every other shipped model (open_clip's and timm's)."""
    from clipshift.robustness import effective_robustness
    from clipshift.robustness.published import published_baseline

    rng = np.random.default_rng(1)
    user = [dict(model=f"my-model-{i}", dataset=d, metric="top1", num_examples=10000, group="mine",
                 value=round(float(expit(0.9 * logit(a) - 0.5 * j + 0.8)), 5) if j else round(float(a), 5))
            for i, a in enumerate(rng.uniform(0.5, 0.85, 10))
            for j, d in enumerate(["imagenet", "imagenet-v2", "imagenet-sketch", "imagenet-r", "imagenet-a"])]
    er, fits = effective_robustness(pd.DataFrame(user), published_baseline(), compare=["published"], return_fits=True)
    return er, fits, [f"my-model-{i}" for i in range(10)]


@pytest.mark.slow  # about 20 s: the published tables' ER, and the page opened three times
def test_time_to_interactive_and_size_with_every_published_model(chromium, tmp_path):
    """≤ 2 s from navigation start until the page is interactive (plotted, controls wired: explorerReady),
    best of three loads, and ≤ 6 MB, with ~1,690 models (every shipped published model and 10 of the user's)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        er, fits, user = published_scale_tables()
    path = write_explorer(er, fits, tmp_path)  # the user's models: role user
    size, models = path.stat().st_size, er["model"].nunique()
    assert sorted(er.loc[er["role"] == "user", "model"].unique()) == user
    assert models >= 1600 and size <= 6_000_000
    times = []
    for _ in range(3):
        with browser_page(chromium, path) as (page, problems, _):
            times.append(page.evaluate("window.explorerReadyAt"))
            assert problems == [] and page.evaluate("window.explorerState.shown") >= 1600
    print(f"\nexplore.html: {models} models, {size / 1e6:.2f} MB; interactive after "
          f"{', '.join(f'{t:.0f}' for t in times)} ms")
    assert min(times) <= 2000
