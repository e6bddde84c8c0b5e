"""`clipshift report`: report.md → one self-contained report.html, checked as text and in a real Chromium."""

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import clipshift
from clipshift.cli import main
from clipshift.report_html import write_html_report

REPORT = """# Study: does data determine robustness?

Intro with `code`, **bold** and a raw <script>alert(1)</script> tag that must stay text.

## H1 More data gives robustness

| model | id_accuracy | effective_robustness |
|---|---|---|
| small | 44.2% | +3.4 pp |
| large | 93.3% | n/a |

![accuracy against size](figures/plot.png)

Verdict: **supported**.

## H2 Prompts matter

```yaml
seeds: [0, 1]
```
"""
CONFIG = "seed: 0\narchitecture: clipshift-tiny\nnote: a < b & c\n"
FACTS = {"versions": {"clipshift": "0.1.0", "torch": "2.3.0"}, "seeds": [0, 1], "seconds_total": 494.2,
         "timings": {"world": 1.0}}


def write_run(run_dir, report=REPORT, figures=None):
    """A small run directory: report.md, config.yaml, facts.json and the figures (name → PNG bytes)."""
    (run_dir / "figures").mkdir(parents=True, exist_ok=True)
    (run_dir / "report.md").write_text(report)
    (run_dir / "config.yaml").write_text(CONFIG)
    (run_dir / "facts.json").write_text(json.dumps(FACTS))
    for name, data in (figures or {"plot.png": png_bytes()}).items():
        (run_dir / "figures" / name).write_bytes(data)
    return run_dir


def png_bytes(size=(24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_are_embedded_and_config_and_versions_appended(tmp_path):
    png = png_bytes()
    out = write_html_report(write_run(tmp_path / "run", figures={"plot.png": png}))
    assert out == tmp_path / "run" / "report.html"
    page = out.read_text(encoding="utf-8")
    assert 'src="figures/' not in page and "<table>" in page and '<div class="table-wrap">' in page
    (data,) = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert base64.b64decode(data) == png
    assert "<title>Study: does data determine robustness?</title>" in page
    assert '<meta charset="utf-8">' in page and 'name="viewport"' in page
    assert 'id="h1-more-data-gives-robustness"' in page and 'href="#h1-more-data-gives-robustness"' in page
    assert "architecture: clipshift-tiny" in page and "note: a &lt; b &amp; c" in page  # config, escaped
    assert "<td>2.3.0</td>" in page and "<th>seeds</th><td>0, 1</td>" in page and "494.2 s (8 min 14 s)" in page
    assert "<script" not in page and "&lt;script&gt;" in page
    assert '<td class="num">+3.4 pp</td>' in page and "@media print" in page


def test_sections_without_config_or_facts_are_left_out(tmp_path):
    run_dir = write_run(tmp_path)
    (run_dir / "config.yaml").unlink()
    (run_dir / "facts.json").write_text(json.dumps({"timings": {}}))
    page = write_html_report(run_dir, tmp_path / "sub" / "out.html").read_text()
    assert "Configuration" not in page and "Versions and seeds" not in page


def test_missing_inputs_and_remote_images_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="clipshift quickstart"):
        write_html_report(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no report.md"):
        write_html_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="figures/missing.png"):
        write_html_report(write_run(tmp_path / "a", report="# R\n\n![x](figures/missing.png)\n"))
    for src in ("https://example.org/a.png", "//cdn.example.org/a.png"):
        with pytest.raises(ValueError, match="remote image"):
            write_html_report(write_run(tmp_path / "b", report=f"# R\n\n![x]({src})\n"))
    assert not (tmp_path / "b" / "report.html").exists()


def test_cli(tmp_path, capsys):
    run_dir = write_run(tmp_path / "run")
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file()
    assert capsys.readouterr().out.strip() == f"report: {run_dir / 'report.html'}"
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "clipshift quickstart" in capsys.readouterr().err


def test_report_command_imports_no_torch(tmp_path):
    """`clipshift report` renders markdown and writes one file: it must not pay for torch (about 10 s).
    In a fresh interpreter, so that what other tests imported does not count."""
    run_dir = write_run(tmp_path / "run")
    check = ("import sys; from clipshift.cli import main; code = main(['report', sys.argv[1]]); "
             "heavy = sorted(m for m in ('torch', 'open_clip', 'timm', 'torchvision') if m in sys.modules); "
             "print('heavy:', heavy); sys.exit(code)")
    src = str(Path(clipshift.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", check, str(run_dir)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "heavy: []" in run.stdout, run.stdout
    assert (run_dir / "report.html").is_file()


@pytest.fixture(scope="module")
def browser_run(chromium, open_report, tmp_path_factory):
    """A realistic run directory (matplotlib figures, a wide table, code) opened in Chromium at 1280×800."""
    from matplotlib.figure import Figure
    figures = {"plot.png": png_bytes()}
    for name in ("er_average.png", "er_sketch.png"):
        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.add_subplot()
        ax.plot([0.1, 0.5, 0.9], [0.05, 0.3, 0.7], "o-", label="baseline")
        ax.set(xlabel="ID accuracy", ylabel="shift accuracy", title=name)
        ax.legend()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        figures[name] = buffer.getvalue()
    wide = "| " + " | ".join(f"a_rather_long_column_name_{i}" for i in range(14)) + " |\n"
    wide += "|" + "---|" * 14 + "\n" + "| " + " | ".join(f"{i}.0%" for i in range(14)) + " |\n"
    report = REPORT + "\n## Figures\n\n![er_average](figures/er_average.png)\n![er_sketch](figures/er_sketch.png)\n"
    run_dir = write_run(tmp_path_factory.mktemp("browser"), report + "\n## Wide\n\n" + wide, figures)
    out = write_html_report(run_dir)
    with open_report(chromium, out) as (page, problems):
        yield run_dir, page, problems


def test_page_loads_without_errors_and_every_image_renders(browser_run):
    _, page, problems = browser_run
    images = page.evaluate("Array.from(document.images, i => [i.complete, i.naturalWidth])")
    assert len(images) == 3 and all(complete and width > 0 for complete, width in images)
    assert problems == []


def test_no_horizontal_overflow_on_a_laptop(browser_run):
    _, page, _ = browser_run
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    assert page.evaluate("[...document.querySelectorAll('.table-wrap')].some(w => w.scrollWidth > w.clientWidth)")


def test_prints_to_pdf_and_screenshots(browser_run):
    run_dir, page, _ = browser_run
    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000
    page.screenshot(path=str(run_dir / "report.png"), full_page=True)
    with Image.open(run_dir / "report.png") as shot:
        assert shot.format == "PNG" and shot.width == 1280 and shot.height > 800
