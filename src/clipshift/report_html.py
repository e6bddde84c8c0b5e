"""A run directory's report.md as one self-contained, printable ``report.html``.

Every recipe writes ``report.md`` with figures under ``figures/``; this module turns it into a single HTML
file that can be mailed, archived or printed: images are embedded as ``data:`` URIs, the CSS is inline,
nothing is fetched from the network, and the run's ``config.yaml`` and the versions, seeds and wall-clock
time from ``facts.json`` are appended so the page alone says how the numbers were produced.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token

from . import __version__
from .io import atomic_write_text

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
               ".gif": "image/gif", ".webp": "image/webp"}
# a table cell that reads as a number: 44.2%, +3.4 pp, [-1.5 pp, +5.9 pp], 2.72 ± 0.37, 12 (0)
_NUMERIC = re.compile(r"^[\[(]?[-+−±]?\d")
_BLANK = {"", "n/a", "—", "-", "nan"}

CSS = """
:root { color-scheme: light; --fg: #1f2328; --muted: #59636e; --border: #d8dee4; --soft: #f6f8fa;
        --accent: #0b5cad; }
*, *::before, *::after { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { margin: 0; background: #eef1f4; color: var(--fg);
       font: 16px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans",
             "Liberation Sans", sans-serif; }
main { max-width: 60rem; margin: 2rem auto; padding: 2.5rem 3rem 2rem; background: #fff; border-radius: 10px;
       box-shadow: 0 1px 3px rgba(31, 35, 40, .08), 0 8px 24px rgba(31, 35, 40, .06); }
h1, h2, h3, h4 { line-height: 1.25; margin: 2rem 0 .75rem; font-weight: 650; }
h1 { font-size: 1.85rem; margin-top: 0; letter-spacing: -.01em; }
h2 { font-size: 1.35rem; margin-top: 2.75rem; padding-bottom: .35rem; border-bottom: 1px solid var(--border); }
h3 { font-size: 1.1rem; }
p, ul, ol, pre, blockquote { margin: 0 0 1rem; }
ul, ol { padding-left: 1.5rem; }
li + li { margin-top: .3rem; }
a { color: var(--accent); text-underline-offset: 2px; }
strong { font-weight: 650; }
code, pre { font-family: ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, "Liberation Mono", monospace;
            font-size: .86em; }
code { background: #eff2f5; padding: .1em .35em; border-radius: 4px; overflow-wrap: anywhere; }
pre { background: var(--soft); border: 1px solid var(--border); border-radius: 6px; padding: .9rem 1rem;
      overflow-x: auto; line-height: 1.45; }
pre code { background: none; padding: 0; font-size: inherit; overflow-wrap: normal; }
blockquote { margin-left: 0; padding: .25rem 1rem; border-left: 4px solid var(--border); color: var(--muted); }
hr { border: 0; border-top: 1px solid var(--border); margin: 2rem 0; }
img { display: block; max-width: 100%; height: auto; margin: 1.25rem auto; }
figure { margin: 1.25rem 0; }
.table-wrap { overflow-x: auto; margin: 0 0 1.25rem; border: 1px solid var(--border); border-radius: 6px; }
table { border-collapse: collapse; min-width: 100%; font-size: .85rem; line-height: 1.4;
        font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--border); padding: .4rem .65rem; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; vertical-align: bottom; }
.num { text-align: right; }
td.num { white-space: nowrap; }
td code { white-space: nowrap; overflow-wrap: normal; }
tr > :first-child { border-left: 0; }
tr > :last-child { border-right: 0; }
thead tr:first-child > *, table > tbody:first-child > tr:first-child > * { border-top: 0; }
tbody tr:last-child > * { border-bottom: 0; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #f0f4f9; }
nav.toc { background: var(--soft); border: 1px solid var(--border); border-radius: 6px; padding: .8rem 1.2rem;
          margin: 1.5rem 0 0; font-size: .93rem; }
nav.toc strong { display: block; margin-bottom: .25rem; }
nav.toc ol { margin: 0; padding-left: 1.25rem; columns: 2 16rem; column-gap: 2rem; }
nav.toc li { margin: 0 0 .15rem; break-inside: avoid; }
nav.toc a { text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
.table-wrap.compact { width: max-content; max-width: 100%; }
.table-wrap.compact th { min-width: 9rem; }
footer { margin-top: 3rem; padding-top: .75rem; border-top: 1px solid var(--border); color: var(--muted);
         font-size: .82rem; }
@media (max-width: 44rem) {
  main { margin: 0; padding: 1.25rem 1rem; border-radius: 0; box-shadow: none; }
}
@media print {
  @page { margin: 16mm 14mm; }
  body { background: none; font-size: 10.5pt; }
  main { max-width: none; margin: 0; padding: 0; box-shadow: none; border-radius: 0; background: none; }
  *, *::before, *::after { box-shadow: none !important; text-shadow: none !important; }
  th, tbody tr:nth-child(even), tbody tr:hover, code, pre, nav.toc { background: none !important; }
  a { color: inherit; text-decoration: none; }
  .table-wrap { overflow: visible; border: 0; }
  table { font-size: 8pt; }
  th, td { border: 1px solid #bbb; padding: .2rem .4rem; }
  pre { white-space: pre-wrap; overflow-wrap: anywhere; }
  img, table, figure, nav.toc { break-inside: avoid; }
  h1, h2, h3, h4 { break-after: avoid; }
  img { max-height: 120mm; width: auto; }
}
"""


def write_html_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the self-contained HTML form of ``RUN_DIR/report.md`` to `out` (default ``RUN_DIR/report.html``).

    FileNotFoundError when the run directory, its report.md or an image it references is missing;
    ValueError for a remote image (the page must open offline) or an image type that cannot be embedded.
    """
    run_dir = Path(run_dir)
    page = render_html_report(run_dir)
    out = run_dir / "report.html" if out is None else Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out


def render_html_report(run_dir: str | Path) -> str:
    """The HTML page of a run directory: report.md rendered, then its configuration, versions and seeds."""
    run_dir = Path(run_dir)
    report = run_dir / "report.md"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist; run `clipshift quickstart` or "
                                "`clipshift study` first, they write one")
    if not report.is_file():
        raise FileNotFoundError(f"{run_dir} has no report.md; run `clipshift quickstart` or `clipshift study` "
                                "to write one there")
    md = _markdown()
    env: dict = {}
    tokens = md.parse(report.read_text(encoding="utf-8"), env)
    _embed_images(tokens, run_dir)
    _format_tables(tokens)
    title, toc, taken = None, [], set()
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            text = _plain_text(tokens[i + 1])
            if token.tag == "h1" and title is None:
                title = text
            elif token.tag == "h2":
                token.attrSet("id", _slug(text, taken))
                toc.append((token.attrGet("id"), text))
    extra = [(name, _slug(name, taken), content)
             for name, content in filter(None, (_config_section(run_dir), _facts_section(run_dir)))]
    toc += [(anchor, name) for name, anchor, _ in extra]
    first_h2 = next((i for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h2"), len(tokens))
    body = [md.renderer.render(tokens[:first_h2], md.options, env)]
    if len(toc) >= 2:
        items = "".join(f'<li><a href="#{html.escape(anchor)}">{html.escape(text)}</a></li>' for anchor, text in toc)
        body.append(f'<nav class="toc" aria-label="Contents"><strong>Contents</strong><ol>{items}</ol></nav>\n')
    body.append(md.renderer.render(tokens[first_h2:], md.options, env))
    for name, anchor, content in extra:
        body.append(f'<h2 id="{html.escape(anchor)}">{html.escape(name)}</h2>\n{content}')
    title = title or run_dir.resolve().name
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="clipshift {html.escape(__version__)}">
<title>{html.escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
{"".join(body)}<footer>Written by clipshift {html.escape(__version__)} from <code>report.md</code> of the run
directory <code>{html.escape(run_dir.resolve().name)}</code>; every figure is embedded in this file.</footer>
</main>
</body>
</html>
"""


def _markdown() -> MarkdownIt:
    """CommonMark with pipe tables; raw HTML is escaped (it could load remote content) and tables scroll."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def table_open(self, tokens, idx, options, env) -> str:
        return '<div class="table-wrap">\n' + self.renderToken(tokens, idx, options, env)

    def table_close(self, tokens, idx, options, env) -> str:
        return self.renderToken(tokens, idx, options, env) + "</div>\n"

    md.add_render_rule("table_open", table_open)
    md.add_render_rule("table_close", table_close)
    return md


def _embed_images(tokens: list[Token], run_dir: Path) -> None:
    """Replace the ``src`` of every image with a data: URI of the file it names, relative to `run_dir`."""
    cache: dict[Path, str] = {}
    for token in tokens:
        for child in token.children or ():
            if child.type != "image":
                continue
            src = str(child.attrGet("src") or "")
            parts = urlsplit(src)
            if parts.scheme == "data":
                continue
            if parts.scheme or parts.netloc:
                raise ValueError(f"report.md references the remote image {src!r}; the HTML report must open "
                                 "without network: save the image under the run directory and reference it there")
            path = run_dir / unquote(parts.path)
            if path not in cache:
                cache[path] = _data_uri(path, src)
            child.attrSet("src", cache[path])


def _data_uri(path: Path, src: str) -> str:
    """The file at `path` as a base64 data: URI; `src` is how report.md names it, for the error messages."""
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"report.md references the image {src!r} of unsupported type; embeddable: "
                         f"{', '.join(sorted(IMAGE_TYPES))}")
    if not path.is_file():
        raise FileNotFoundError(f"report.md references the image {src!r}, but {path} does not exist")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _format_tables(tokens: list[Token]) -> None:
    """Make tables read well: columns whose body cells all read as numbers get class "num" (right-aligned,
    unbroken), and header words joined by underscores (``effective_robustness``) may wrap after them."""
    table: list[list[Token]] = []  # per row: the th/td opening tokens; text from the inline token after each
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            table = []
        elif token.type == "tr_open":
            table.append([])
        elif token.type in ("th_open", "td_open"):
            token.meta["text"] = tokens[i + 1].content.strip()
            table[-1].append(token)
            if token.type == "th_open":
                tokens[i + 1].children = [piece for child in tokens[i + 1].children or () for piece in _wbr(child)]
        elif token.type == "table_close" and len(table) > 1:
            for column in zip(*table):
                body = [cell.meta["text"] for cell in column[1:] if cell.meta["text"].lower() not in _BLANK]
                if body and all(_NUMERIC.match(text) for text in body):
                    for cell in column:
                        cell.attrSet("class", "num")


def _wbr(token: Token) -> list[Token]:
    """A text token split after each underscore, with a <wbr> (a line-break opportunity) between the parts."""
    if token.type != "text" or "_" not in token.content:
        return [token]
    pieces = []
    for part in filter(None, re.split(r"(?<=_)", token.content)):
        pieces += [Token("html_inline", "", 0, content="<wbr>"), Token("text", "", 0, content=part)]
    return pieces[1:]


def _plain_text(inline: Token) -> str:
    """The text of a heading's inline token without Markdown markup."""
    return "".join(" " if child.type in ("softbreak", "hardbreak") else child.content
                   for child in inline.children or () if child.type in ("text", "code_inline", "softbreak",
                                                                          "hardbreak")).strip()


def _slug(text: str, taken: set[str]) -> str:
    """A unique anchor id for a heading: lower case, words joined by hyphens."""
    base = re.sub(r"[^\w]+", "-", text.lower()).strip("-_") or "section"
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    taken.add(slug)
    return slug


def _config_section(run_dir: Path) -> tuple[str, str] | None:
    """("Configuration", config.yaml verbatim in a <pre> block), or None without a config.yaml."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8").rstrip("\n")
    return "Configuration", (f"<p>The full configuration of the run, as in <code>config.yaml</code>.</p>\n"
                             f"<pre><code>{html.escape(text)}</code></pre>\n")


def _facts_section(run_dir: Path) -> tuple[str, str] | None:
    """("Versions and seeds", wall-clock time, seeds and a table of versions from facts.json), or None."""
    path = run_dir / "facts.json"
    if not path.is_file():
        return None
    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    rows = []
    if isinstance(facts.get("seconds_total"), (int, float)):
        rows.append(("wall-clock", _duration(facts["seconds_total"])))
    if "seeds" in facts:
        seeds = facts["seeds"]
        if isinstance(seeds, dict):
            rows += [(f"seed: {name}", str(value)) for name, value in seeds.items()]
        else:
            rows.append(("seeds", ", ".join(map(str, seeds)) if isinstance(seeds, list) else str(seeds)))
    if isinstance(facts.get("versions"), dict):
        rows += [(str(name), str(version)) for name, version in facts["versions"].items()]
    if not rows:
        return None
    cells = "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>" for name, value in rows)
    return "Versions and seeds", f'<div class="table-wrap compact"><table><tbody>{cells}</tbody></table></div>\n'


def _duration(seconds: float) -> str:
    """494 → '494 s (8 min 14 s)': seconds as recorded, minutes or hours as read."""
    if seconds < 60:
        return f"{seconds:g} s"
    minutes, secs = divmod(round(seconds), 60)
    read = f"{minutes} min {secs} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
    return f"{seconds:g} s ({read})"
