"""The effective-robustness explorer: one self-contained, offline HTML page (``explore.html``).

ID accuracy against shift accuracy for every model of er.csv on logit (or probit) axes, with the
baseline fit, its 95% band and y = x; a selector for the shift (each shift and the average); hover
for a model's numbers; filters by source table, model name and baseline; the user's models
highlighted and labelled; a click pins a model and lists its effective robustness on every shift;
the table of the models shown (or box-selected) downloads as CSV.

The page is built with plotly: plotly.js (its basic bundle, ``vendor/``) is embedded in it, the data are compact columnar JSON
(:mod:`.payload`), the behaviour is ``page.js``. Nothing is fetched: no CDN, fonts or MathJax, and a
Content-Security-Policy forbids any request.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import pandas as pd

from ...io import atomic_write_text
from .payload import build_payload, default_user_models

EXPLORER_NAME = "explore.html"
HERE = Path(__file__).resolve().parent
__all__ = ["EXPLORER_NAME", "build_payload", "default_user_models", "explorer_link", "render_explorer",
           "write_explorer"]


PLOTLY_BASIC = HERE / "vendor" / "plotly-basic.min.js"  # plotly.js's basic bundle (vendor/README.md)


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    """plotly.js for the page: the vendored basic bundle (1.2 MB: scatter is all the page draws; a
    quarter of the full bundle's size and parse time), else the plotly Python package's full bundle."""
    if PLOTLY_BASIC.is_file():
        return PLOTLY_BASIC.read_text(encoding="utf-8")
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


@lru_cache(maxsize=1)
def _template() -> dict:
    """plotly's ``plotly_white`` template, as the layout's JSON."""
    import plotly.graph_objects as go

    return go.Figure(layout={"template": "plotly_white"}).to_plotly_json()["layout"]["template"]


def _script_json(value) -> str:
    """JSON safe inside a <script> element and still JSON: ``<``, ``>`` and ``&`` as \\u escapes, so no
    ``</script>``, ``<!--`` or entity can appear in it."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_explorer(er: pd.DataFrame, fits: pd.DataFrame, **kwargs) -> str:
    """The page as HTML text; keyword arguments as :func:`.payload.build_payload`."""
    payload = build_payload(er, fits, **kwargs)
    payload["layout"] = {"template": _template()}
    parts = {"TITLE": _escape(payload["title"]), "CSS": (HERE / "page.css").read_text(encoding="utf-8"),
             "PLOTLY": _plotly_js(), "DATA": _script_json(payload),
             "SCRIPT": (HERE / "page.js").read_text(encoding="utf-8")}
    page = (HERE / "page.html").read_text(encoding="utf-8")
    return re.sub(r"@@([A-Z]+)@@", lambda m: parts[m.group(1)], page)


def explorer_link(name: str = EXPLORER_NAME) -> str:
    """The markdown line of a report that links to the explorer page beside it (report.html keeps the link)."""
    return (f"**Explore every model interactively:** [{name}]({name}), one page that opens offline: hover a "
            f"point for its numbers, switch the shift, filter by name or source, click a model for its "
            f"effective robustness on every shift, download the table as CSV.")


def _escape(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def write_explorer(er: pd.DataFrame, fits: pd.DataFrame, path, *, transform: str = "logit",
                   title: str = "Effective robustness explorer", user_models=None, colours: dict | None = None) -> Path:
    """Write the explorer page for the tables of ``compute_effective_robustness`` (or er.csv and
    fits.csv read back) to `path` (a file ending in ``.html``, else a folder to hold ``explore.html``);
    returns the file.

    `transform`: the axis scale the page opens with (``logit`` or ``probit``; the page can switch).
    `user_models`: model ids to highlight and always label (default: the non-baseline models when
    there are at most 60 of them). `colours`: {model: CSS colour} for them (default: their colour in
    the static figures, by group: ``robustness.colours.model_colours``). Columns ``source``,
    ``training_data``, ``name`` and ``pretrained`` are shown where er has them."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() not in (".html", ".htm"):  # a folder, even one named run_v1.2
        path = path / EXPLORER_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    html = render_explorer(er, fits, transform=transform, title=title, user_models=user_models, colours=colours)
    return atomic_write_text(path, html)
