"""The explorer page (`clipshift explore`, explore.html), used as a person uses it, in headless Chromium:
loads without errors and without a request leaving the file; hover names a model; the shift selector plots
er.csv's numbers; the name filter, the baseline toggle and the source filter narrow the models; a click
pins a model and lists its numbers on every shift; the table downloads as CSV."""

from __future__ import annotations

import contextlib
import csv
import io

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit, ndtri

from clipshift.cli import main
from clipshift.report_html import write_html_report
from clipshift.robustness import compute_effective_robustness
from clipshift.robustness.explore import (EXPLORER_NAME, PLOTLY_BASIC, build_payload, explorer_link, render_explorer,
                                          write_explorer)

SHIFTS = ["imagenet-v2", "imagenet-sketch", "imagenet-r"]
USER = ["my-clip-wide", "my-vit-narrow", "my-supervised"]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def long_results() -> pd.DataFrame:
    """40 baseline models on a logit line (timm-like names), 8 CLIP-like models above it (open_clip-like
    names, with source and training data) and 3 of the user's own models (no source, no training data)."""
    rng = np.random.default_rng(0)
    rows = []

    def add(model, id_acc, lift, **meta):
        rows.append(dict(model=model, dataset="imagenet", metric="top1", value=id_acc, num_examples=50000, **meta))
        for j, shift in enumerate(SHIFTS):
            value = expit(0.9 * logit(id_acc) - 0.6 * (j + 1) + lift + rng.normal(0, 0.08))
            rows.append(dict(model=model, dataset=shift, metric="top1", value=round(float(value), 5),
                             num_examples=10000, **meta))

    for i, acc in enumerate(np.linspace(0.35, 0.88, 40)):
        arch = "resnet" if i % 2 else "vit_small"
        add(f"{arch}{i}.a1_in1k", round(float(acc), 5), 0.0, group="baseline", source="timm results",
            training_data="ImageNet-1k")
    for i, acc in enumerate(np.linspace(0.45, 0.8, 8)):
        add(f"ViT-B-{16 + i}/laion2b", round(float(acc), 5), 1.2, group="open_clip", source="open_clip results",
            training_data="LAION-2B")
    for model, acc, lift in zip(USER, (0.52, 0.66, 0.74), (2.2, 1.6, -0.9)):
        add(model, acc, lift, group="mine")
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """er.csv and fits.csv written and read back (as a user's files), and explore.html built from them."""
    results = long_results()
    baseline = sorted(results.loc[results["group"] == "baseline", "model"].unique())
    er, fits = compute_effective_robustness(results, "imagenet", SHIFTS, baseline_models=baseline, n_bootstrap=200)
    folder = tmp_path_factory.mktemp("explore")
    er.to_csv(folder / "er.csv", index=False)
    fits.to_csv(folder / "fits.csv", index=False)
    er, fits = pd.read_csv(folder / "er.csv"), pd.read_csv(folder / "fits.csv")
    page = write_explorer(er, fits, folder, user_models=USER, title="Test explorer")
    return er, fits, page


@contextlib.contextmanager
def browser_page(executable, path):
    """The page opened from its file at 1280×800; yields (page, problems, requests): console errors and page
    errors, and the URL of every request the page made."""
    from playwright.sync_api import sync_playwright

    problems, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
            page = context.new_page()
            page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url[:80]}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.absolute().as_uri())
            page.wait_for_function("window.explorerReady === true", timeout=30_000)
            yield page, problems, requests
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser(chromium, tables):
    with browser_page(chromium, tables[2]) as opened:
        yield opened


@pytest.fixture
def page(browser):
    """The shared page, back to its opening state (average, logit, no filter, nothing pinned)."""
    page = browser[0]
    page.fill("#search", "")
    page.evaluate("""async () => { const s = window.explorer.state;
        Object.assign(s, { shift: 'average', axes: 'logit', terms: [], baseline: true, pinned: -1, selected: null });
        s.sources = new Set(window.explorer.data.models.sources.map((_, i) => i));
        document.getElementById('shift').value = 'average'; document.getElementById('axes').value = 'logit';
        document.getElementById('baseline').checked = true;
        document.querySelectorAll('#sources input').forEach((b) => { b.checked = true; });
        await window.explorer.update(); }""")
    return page


PLOTTED = """() => { const gd = document.getElementById('plot'), names = window.explorer.data.models.model, out = {};
    gd.data.filter((t) => t.meta === 'models').forEach((t) => t.customdata.forEach((i, k) => {
        out[names[i]] = [t.x[k], t.y[k]]; }));
    return out; }"""


def plotted(page) -> dict:
    """{model: (x, y)} of every model point on the plot (axis space)."""
    return page.evaluate(PLOTTED)


def point_position(page, model: str) -> tuple[float, float]:
    """Where `model`'s point is on the screen (page pixels)."""
    return tuple(page.evaluate("""(name) => { const gd = document.getElementById('plot'), fl = gd._fullLayout;
        const i = window.explorer.data.models.model.indexOf(name);
        const t = gd.data.find((t) => t.meta === 'models' && t.customdata.includes(i)), k = t.customdata.indexOf(i);
        const box = gd.getBoundingClientRect();
        return [box.left + fl.xaxis._offset + fl.xaxis.l2p(t.x[k]), box.top + fl.yaxis._offset + fl.yaxis.l2p(t.y[k])];
    }""", model))


def rows_of(er: pd.DataFrame, dataset: str) -> pd.DataFrame:
    return er[er["dataset"] == dataset].set_index("model")


def test_loads_without_errors_and_no_request_leaves_the_file(browser, tables):
    page, problems, requests = browser
    assert problems == []
    assert requests and all(url == tables[2].absolute().as_uri() for url in requests), requests
    assert page.evaluate("document.querySelectorAll('script[src], link, iframe, img[src^=\"http\"]').length") == 0
    assert page.evaluate("typeof window.MathJax") == "undefined"
    assert page.locator(".modebar a[href]").count() == 0  # no link to chart studio or plotly's site
    assert set(plotted(page)) == set(rows_of(tables[0], "average").index)


def test_hovering_a_point_shows_its_model(page, tables):
    er = rows_of(tables[0], "average")
    for model in ("my-clip-wide", "ViT-B-19/laion2b"):
        x, y = point_position(page, model)
        page.mouse.move(x, y)
        tip = page.locator(".hoverlayer .hovertext")
        tip.wait_for(timeout=5000)
        text = tip.text_content()
        assert model in text
        assert f"{100 * er.loc[model, 'effective_robustness']:+.2f} pp".replace("-", "\u2212") in text
        assert f"{100 * er.loc[model, 'id_accuracy']:.2f}%" in text
        page.mouse.move(5, 5)
    assert "training data: LAION-2B" in text and "source: open_clip results" in text


def test_switching_the_shift_plots_er_csv_values(page, tables):
    er, fits, _ = tables
    for shift in ("imagenet-sketch", "imagenet-r"):
        page.select_option("#shift", shift)
        page.wait_for_function(f"window.explorerState.shift === {shift!r}")
        points, expected = plotted(page), rows_of(er, shift)
        assert set(points) == set(expected.index)
        xy = np.array([points[m] for m in expected.index])
        np.testing.assert_allclose(expit(xy[:, 1]), expected["shift_accuracy"], atol=1e-5)
        np.testing.assert_allclose(expit(xy[:, 0]), expected["id_accuracy"], atol=1e-5)
        line = page.evaluate("document.getElementById('plot').data.find((t) => t.meta === 'fit')")
        fit = fits.set_index("dataset").loc[shift]
        np.testing.assert_allclose(line["y"], fit["slope"] * np.array(line["x"]) + fit["intercept"], atol=2e-4)
    assert page.locator(".gtitle").text_content() == "Effective robustness: imagenet-r"


def test_probit_axes_plot_the_same_accuracies(page, tables):
    page.select_option("#axes", "probit")
    page.wait_for_function("window.explorerState.axes === 'probit'")
    points, expected = plotted(page), rows_of(tables[0], "average")
    xy = np.array([points[m] for m in expected.index])
    np.testing.assert_allclose(xy[:, 1], ndtri(expected["shift_accuracy"]), atol=1e-4)
    assert "probit scale" in page.locator(".xtitle").text_content()


def test_the_name_filter_keeps_the_matching_models(page, tables):
    er = rows_of(tables[0], "average")
    page.fill("#search", "ViT")  # case-insensitive: vit_small*, ViT-B-*, my-vit-narrow
    page.wait_for_function(f"window.explorerState.shown < {len(er)}")
    shown = set(plotted(page))
    assert shown == {m for m in er.index if "vit" in m.lower()} and len(shown) == 20 + 8 + 1
    page.fill("#search", "vit narrow")  # every word must match
    page.wait_for_function("window.explorerState.shown === 1")
    assert set(plotted(page)) == {"my-vit-narrow"}
    assert page.locator("#table tbody tr").count() == 1 and "my-vit-narrow" in page.inner_text("#table tbody")


def test_baseline_toggle_and_source_filter(page, tables):
    er = rows_of(tables[0], "average")
    page.uncheck("#baseline")
    page.wait_for_function(f"window.explorerState.shown === {int((~er['is_baseline']).sum())}")
    assert set(plotted(page)) == set(er.index[~er["is_baseline"]])
    page.check("#baseline")
    page.locator("#sources label", has_text="open_clip results").locator("input").uncheck()
    page.wait_for_function(f"window.explorerState.shown === {len(er) - 8}")
    assert not any(m.startswith("ViT-B-") for m in plotted(page))
    assert set(USER) <= set(plotted(page))  # without a source, the user's models stay


def test_a_click_pins_a_model_and_shows_its_per_shift_numbers(page, tables):
    er = tables[0]
    page.mouse.click(*point_position(page, "my-vit-narrow"))
    page.wait_for_function("window.explorerState.pinned >= 0")
    assert page.inner_text("#pin h3") == "my-vit-narrow"
    numbers = page.evaluate("""() => [...document.querySelectorAll('#pin tbody tr')].map((r) =>
        [r.dataset.dataset, r.querySelector('.er').textContent])""")
    ours = er[er["model"] == "my-vit-narrow"].set_index("dataset")["effective_robustness"]
    assert [d for d, _ in numbers] == ["average", *SHIFTS]
    for dataset, text in numbers:
        value = float(text.replace("\u2212", "-").replace(" pp", ""))
        assert value == pytest.approx(100 * ours[dataset], abs=0.006)
    pinned = page.evaluate("document.getElementById('plot').data.find((t) => t.meta === 'pinned').customdata")
    assert len(pinned) == 1
    page.click("#unpin")
    page.wait_for_function("window.explorerState.pinned === -1")


def test_the_table_downloads_as_csv(page, tables):
    page.select_option("#shift", "imagenet-v2")
    page.wait_for_function("window.explorerState.shift === 'imagenet-v2'")
    page.uncheck("#baseline")
    page.wait_for_function("window.explorerState.shown === 11")
    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename == "explore_imagenet-v2.csv"
    got = pd.read_csv(io.StringIO(open(download.path(), encoding="utf-8").read())).set_index("model")
    expected = rows_of(tables[0], "imagenet-v2").loc[got.index]
    assert len(got) == 11 and set(got.index) == set(expected.index[~expected["is_baseline"]])
    for column in ("id_accuracy", "shift_accuracy", "effective_robustness", "ci_low", "ci_high"):
        np.testing.assert_allclose(got[column], expected[column], atol=1e-5)
    assert list(got["effective_robustness"]) == sorted(got["effective_robustness"], reverse=True)
    assert got.loc["ViT-B-16/laion2b", "training_data"] == "LAION-2B"


def test_tables_without_source_or_training_data(tables, tmp_path):
    er, fits, _ = tables
    bare = er.drop(columns=["source", "training_data", "group"])
    payload = build_payload(bare, fits)
    assert payload["models"]["sources"] == [] and "training_data" not in payload["models"]
    assert sum(payload["models"]["user"]) == 11  # by default: the non-baseline models
    html = render_explorer(bare, fits, transform="probit")
    assert '"transform":"probit"' in html and html.count("<script") == 3
    with pytest.raises(ValueError, match="missing column"):
        build_payload(bare.drop(columns=["ci_low"]), fits)


def test_report_links_to_the_explorer(browser, tables, tmp_path):
    er, fits, _ = tables
    write_explorer(er, fits, tmp_path)
    (tmp_path / "report.md").write_text(f"# Run\n\n{explorer_link()}\n")
    report = write_html_report(tmp_path)
    assert f'href="{EXPLORER_NAME}"' in report.read_text()
    page = browser[0].context.new_page()
    try:
        page.goto(report.as_uri())
        page.click(f'a[href="{EXPLORER_NAME}"]')
        page.wait_for_function("window.explorerReady === true", timeout=30_000)
        assert page.url == (tmp_path / EXPLORER_NAME).as_uri()
        assert page.evaluate("window.explorer.data.models.model.length") == 51
    finally:
        page.close()


HOSTILE = {"my-clip-wide": 'old<!--clip</script> & co', "my-vit-narrow": '<a href="https://example.com">click</a> <b>m</b>'}


def test_names_are_text_never_markup(browser, tables, tmp_path):
    """Model names with <!--, </script> or tags: the page still loads, names are shown as written, and
    no link or markup of theirs reaches the plot; a folder named like a file (run_v1.2) stays a folder."""
    er, fits, _ = tables
    er = er.assign(model=er["model"].replace(HOSTILE))
    path = write_explorer(er, fits, tmp_path / "run_v1.2", user_models=list(HOSTILE.values()))
    assert path == tmp_path / "run_v1.2" / EXPLORER_NAME
    html = path.read_text(encoding="utf-8")
    assert html.count("</script>") == 3 and "<!--" not in html.split("<style>")[-1]
    problems = []
    page = browser[0].context.new_page()
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(path.as_uri())
        page.wait_for_function("window.explorerReady === true", timeout=30_000)
        labels = page.evaluate("Array.from(document.querySelectorAll('#plot .textpoint text')).map((t) => t.textContent)")
        assert set(HOSTILE.values()) <= set(labels), labels
        assert page.locator("#plot a").count() == 0 and page.locator("#plot b").count() == 0
        x, y = point_position(page, HOSTILE["my-vit-narrow"])
        page.mouse.move(x, y)
        tip = page.locator(".hoverlayer .hovertext")
        tip.wait_for(timeout=5000)
        assert HOSTILE["my-vit-narrow"] in tip.text_content() and page.locator(".hoverlayer a").count() == 0
        assert problems == []
    finally:
        page.close()


def test_reference_models_take_their_colour_of_the_static_figures(page, tables):
    """Models that are neither baseline nor the user's are drawn in their group's colour of the PNGs
    (robustness.colours.model_colours), as the user's are."""
    from clipshift.robustness.colours import model_colours

    colours = model_colours(tables[0])
    traces = page.evaluate("""document.getElementById('plot').data.filter((t) => t.meta === 'models')
        .map((t) => ({ ids: t.customdata, colour: t.marker.color }))""")
    models = page.evaluate("window.explorer.data.models.model")
    seen = {}
    for trace in traces:
        marker = trace["colour"] if isinstance(trace["colour"], list) else [trace["colour"]] * len(trace["ids"])
        seen.update({models[i]: c for i, c in zip(trace["ids"], marker)})
    refs = [m for m in seen if m.startswith("ViT-B-")]
    assert len(refs) == 8 and {seen[m] for m in refs} == {colours[m] for m in refs} != {"#7f7f7f"}
    assert all(seen[m] == colours[m] for m in seen)


def test_cli_writes_the_page(tmp_path, capsys):
    results = long_results()
    results.to_csv(tmp_path / "results.csv", index=False)
    code = main(["explore", "--results", str(tmp_path / "results.csv"), "--bootstrap", "50",
                 "--shifts", ",".join(SHIFTS), "--out", str(tmp_path / "out")])
    assert code == 0
    out = capsys.readouterr().out
    assert "51 models (40 in the baseline, 11 from results.csv highlighted) on 3 shifts" in out
    html = (tmp_path / "out" / EXPLORER_NAME).read_text(encoding="utf-8")
    assert '"my-clip-wide"' in html and PLOTLY_BASIC.read_text(encoding="utf-8") in html  # the vendored bundle
    assert 1_191_749 < len(html.encode()) < 1_400_000  # plotly.js's basic bundle is 1,191,749 bytes
    with open(tmp_path / "results.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 51 * 4
