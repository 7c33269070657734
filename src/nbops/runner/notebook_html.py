"""Sanitised HTML of executed notebooks (nbconvert): formatting and tables kept, no script,
style, iframe, form, image or event attribute; anything else is shown as text."""

from __future__ import annotations

import re
import threading
from pathlib import Path

# What notebook HTML (markdown cells, DataFrame tables, rich outputs) may keep. nbconvert's own
# `clean_html` filter allows so few tags that headings, paragraphs and table headers end up as
# escaped text; this list keeps formatting and tables, and still no script, style, iframe,
# form, image or event attribute: anything else is shown as text.
SAFE_TAGS = frozenset(
    {
        "a",
        "abbr",
        "b",
        "blockquote",
        "br",
        "caption",
        "code",
        "col",
        "colgroup",
        "dd",
        "del",
        "details",
        "div",
        "dl",
        "dt",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "kbd",
        "li",
        "ol",
        "p",
        "pre",
        "s",
        "samp",
        "small",
        "span",
        "strong",
        "sub",
        "summary",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "u",
        "ul",
    }
)
SAFE_ATTRIBUTES = {
    "*": ["class", "id", "title"],
    "a": ["href", "title", "class"],
    "td": ["colspan", "rowspan", "class"],
    "th": ["colspan", "rowspan", "class"],
}
SAFE_URL_SCHEMES = frozenset({"http", "https", "mailto"})
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>.*?</style>", re.IGNORECASE | re.DOTALL)
_TAG_START = re.compile(r"<(?=/?([A-Za-z][A-Za-z0-9:-]*))")


def _escape_unsafe_tags(text: str) -> str:
    """`<` of every tag not in SAFE_TAGS as `&lt;`: a `<script>` in a label is read as text."""
    return _TAG_START.sub(lambda m: "<" if m.group(1).lower() in SAFE_TAGS else "&lt;", text)


def clean_html(element) -> str:
    """Sanitise HTML with nh3 (ammonia) and SAFE_TAGS: nbconvert's `clean_html` filter.

    Before nh3, pandas' `<style scoped>` blocks are dropped and tags outside SAFE_TAGS escaped,
    so they show as text rather than vanish; both are cosmetic. nh3, after them, is what keeps
    markup from running: it drops every attribute not in SAFE_ATTRIBUTES and links whose scheme
    is not in SAFE_URL_SCHEMES, whatever the escaping step missed."""
    import nh3

    text = element.decode() if isinstance(element, bytes) else str(element)
    return nh3.clean(
        _escape_unsafe_tags(_STYLE_BLOCK.sub("", text)),
        tags=set(SAFE_TAGS),
        attributes={tag: set(names) for tag, names in SAFE_ATTRIBUTES.items()},
        url_schemes=set(SAFE_URL_SCHEMES),
        strip_comments=True,
    )


_EXPORTERS = threading.local()


def _exporter(with_code: bool):
    """One exporter per thread and view: a new one compiles its jinja templates again, most of
    a render's time, for every notebook a long-lived process (a sweep worker) renders."""
    cache = _EXPORTERS.__dict__.setdefault("by_view", {})
    if with_code not in cache:
        from nbconvert import HTMLExporter

        cache[with_code] = HTMLExporter(
            template_name="lab",
            filters={"clean_html": clean_html},
            sanitize_html=True,
            embed_images=False,
            exclude_input=not with_code,
            exclude_input_prompt=not with_code,
            exclude_output_prompt=not with_code,
        )
    return cache[with_code]


def render_notebook_html(notebook: Path, out: Path, with_code: bool) -> Path:
    """nbconvert HTML with sanitize_html on: no <script>, no on*= from outputs or markdown."""
    from nbops.runner.preload import skip_unused_imports

    skip_unused_imports()
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    body, _ = _exporter(with_code).from_notebook_node(nb)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(out)
    return out
