import contextlib
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from eval_helpers import WNIDS, write_jpegs

CHROMIUM = "/usr/bin/chromium"
# this machine has no outside network: keep Chromium from trying to reach it
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a torchrun rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Chromium's path; the test is skipped, saying what is missing and how to install it, when it is
    not there (`make install` installs it as root; the tests themselves never install anything)."""
    pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install -e '.[dev]' (or make install)")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: run `make install` as root, or `apt-get install chromium`")
    return CHROMIUM


@pytest.fixture(scope="session")
def open_report():
    """``with open_report(chromium, html_path) as (page, problems)``: the page loaded from its file in
    headless Chromium at a 1280×800 laptop viewport; `problems` collects console errors, page errors
    and failed requests."""

    @contextlib.contextmanager
    def opener(executable: str, path):
        from playwright.sync_api import sync_playwright

        problems: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
                page.goto(path.absolute().as_uri())
                page.wait_for_load_state("load")
                yield page, problems
            finally:
                browser.close()

    return opener


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """imagenet/val (5 wnids, 3 images each, plus one corrupt JPEG) and imagenet-r (3 wnids + README)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for wnid in WNIDS:
        write_jpegs(root / "imagenet" / "val" / wnid, 3, rng)
    (root / "imagenet" / "val" / WNIDS[0] / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    for wnid in WNIDS[1:4]:
        write_jpegs(root / "imagenet-r" / wnid, 2, rng, ".jpg")
    (root / "imagenet-r" / "README.txt").write_text("ImageNet-R\n")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict:
    """A randomly initialised tiny open_clip model and a tiny timm classifier, saved to local files."""
    import open_clip
    import timm
    import torch

    from clipshift.models import convnet  # noqa: F401  (registers the tiny timm convnet)
    from clipshift.models.factory import register_model_configs

    folder = tmp_path_factory.mktemp("weights")
    register_model_configs()
    torch.manual_seed(0)
    clip = open_clip.create_model("clipshift-tiny")
    torch.save(clip.state_dict(), folder / "tiny_clip.pt")
    classifier = timm.create_model("clipshift_convnet_tiny", num_classes=1000)
    torch.save(classifier.state_dict(), folder / "tiny_timm.pth")
    (folder / "templates.txt").write_text("a photo of a {}.\n# comment\nan image of {}.\n")
    return {"clip": folder / "tiny_clip.pt", "timm": folder / "tiny_timm.pth", "templates": folder / "templates.txt"}
