"""Markdown made from data: escaped cells, and bodies cut to what a PR comment holds."""

from __future__ import annotations

import html
import re

SUMMARY_LIMIT = 60_000
SUMMARY_MARKER = "<!-- nbops-summary -->"
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~!])")


def md_escape(value) -> str:
    """Text for a Markdown table cell: no markup, no HTML, one line."""
    text = html.escape(str(value), quote=True)
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return " ".join(text.split())


def cap_markdown(body: str, limit: int = SUMMARY_LIMIT, link: str | None = None) -> str:
    """Cut a Markdown body to `limit` characters at a line break, saying so."""
    if len(body) <= limit:
        return body
    note = "\n\n…cut: the full summary is too long for a comment"
    note += f"; read it in the [reports artifact]({link})." if link else "; read it in the reports."
    cut = body[: limit - len(note)]
    cut = cut[: cut.rfind("\n")] if "\n" in cut else cut
    return cut + note
