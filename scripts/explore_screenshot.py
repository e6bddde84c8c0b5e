"""The explorer page of a `clipshift er` run, measured and photographed in headless Chromium.

    python scripts/explore_screenshot.py RUN_DIR [--highlight REGEX] [--out docs/explore.png]

RUN_DIR holds er.csv and fits.csv (from `clipshift er`, the quickstart or the study). The script writes
RUN_DIR/explore.html (models whose id matches --highlight are the user's, highlighted and labelled;
default: the ``role`` column, else the non-baseline models when few), opens it three times and prints
the page's size and the time from navigation start until it is interactive (``window.explorerReady``),
then pins the first highlighted model (--pin), hovers it (--hover) and saves a 1280 × 800 screenshot as a palette PNG.
Needs playwright and a Chromium (``--chromium``, default Debian's /usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

import pandas as pd
from PIL import Image

from clipshift.robustness.explore import write_explorer

ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def hover_and_pin(page, model: str, hover: str) -> None:
    """Pin `model` (as a click on its point or its row does) and leave the mouse on `hover`'s point (its tooltip)."""
    x, y = page.evaluate("""(name) => { const gd = document.getElementById('plot'), fl = gd._fullLayout;
        const i = window.explorer.data.models.model.indexOf(name);
        const t = gd.data.find((t) => t.meta === 'models' && t.customdata.includes(i)), k = t.customdata.indexOf(i);
        const box = gd.getBoundingClientRect();
        return [box.left + fl.xaxis._offset + fl.xaxis.l2p(t.x[k]), box.top + fl.yaxis._offset + fl.yaxis.l2p(t.y[k])];
    }""", hover)
    page.evaluate("(name) => window.explorer.pin(window.explorer.data.models.model.indexOf(name))", model)
    page.wait_for_function("window.explorerState.pinned >= 0")
    page.mouse.move(x, y)
    page.locator(".hoverlayer .hovertext").wait_for(timeout=5000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--highlight", help="regular expression: the models to highlight as the user's")
    parser.add_argument("--pin", help="the model to pin (default: the first highlighted)")
    parser.add_argument("--hover", help="the model to hover (default: the pinned one)")
    parser.add_argument("--title", default="Effective robustness explorer")
    parser.add_argument("--out", type=Path, default=Path("docs/explore.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    er, fits = pd.read_csv(args.run_dir / "er.csv"), pd.read_csv(args.run_dir / "fits.csv")
    user = None
    if args.highlight:
        user = [m for m in dict.fromkeys(er["model"].astype(str)) if re.search(args.highlight, m)]
    path = write_explorer(er, fits, args.run_dir, user_models=user, title=args.title)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=ARGS)
        times = []
        for _ in range(3):
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(path.absolute().as_uri())
            page.wait_for_function("window.explorerReady === true", timeout=60_000)
            times.append(page.evaluate("window.explorerReadyAt"))
            page.close()
        print(f"{path}: {er['model'].nunique()} models, {path.stat().st_size / 1e6:.2f} MB; interactive after "
              f"{', '.join(f'{t:.0f}' for t in times)} ms (median {statistics.median(times):.0f} ms)")
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(path.absolute().as_uri())
        page.wait_for_function("window.explorerReady === true", timeout=60_000)
        users = page.evaluate("window.explorer.data.models.model.filter((m, i) => window.explorer.data.models.user[i])")
        if args.pin or users:
            hover_and_pin(page, args.pin or users[0], args.hover or args.pin or users[0])
        page.screenshot(path=str(args.out))
        browser.close()
    with Image.open(args.out) as shot:
        shot.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size / 1e3:.0f} KB")


if __name__ == "__main__":
    main()
