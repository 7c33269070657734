"""The sticky PR comment: one comment per pull request, found again by its hidden marker.

`pr-comment.yml` runs this from the default branch's code (never the PR's) on the summary
artifact a PR's CI run uploaded. That artifact is untrusted, so:

- the PR number is checked here to be a plain positive integer, and the workflow then checks
  that the PR's head commit is the one CI ran on before it comments;
- any HTML left in the summary is neutralised: `<img src=x onerror=...>` shows as text
  (`report.summary_markdown` escapes data already; this holds even for a forged summary);
- the body is cut below GitHub's 65,536-character limit, with a note and a link to the run's
  artifacts (`report.cap_markdown`).

Standard library only: the comment job installs nothing.

    python -m nbops.comment --summary reports/summary.md --pr-number-file pr-number.txt \\
        --out comment.md --run-url https://github.com/o/r/actions/runs/1 --commit <sha>
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from nbops.exceptions import NbopsError, print_problems
from nbops.report import SUMMARY_LIMIT, SUMMARY_MARKER, cap_markdown, md_escape

GITHUB_COMMENT_LIMIT = 65_536  # GitHub answers 422 above this
_PR_NUMBER = re.compile(r"[1-9][0-9]{0,9}")
_URL = re.compile(r"https://[A-Za-z0-9.-]+(/[A-Za-z0-9._~/%#?=&+-]*)?")
_COMMIT = re.compile(r"[0-9a-f]{7,64}")
_RELATIVE_LINK = re.compile(r"(?<!\\)\[([^\]\n]*)\]\((?![a-z]+://)[^)\s]*\)")


class CommentError(NbopsError):
    """An input to the PR comment is not what CI writes (wrong PR number, bad link, no summary)."""


def validate_pr_number(text: str) -> int:
    """The PR number from the artifact: digits only, no sign, no spaces inside, at most 10 digits."""
    value = text.strip()
    if not _PR_NUMBER.fullmatch(value):
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise CommentError(f"PR number must be a positive integer, got {shown!r}")
    return int(value)


def _checked_url(url: str | None, what: str) -> str | None:
    if url is None:
        return None
    if not _URL.fullmatch(url):
        raise CommentError(f"{what} must be an https:// URL without spaces or brackets, got {url[:80]!r}")
    return url


def neutralise_html(markdown: str) -> str:
    """Show every `<` and `>` as text, so a comment carries no HTML, only Markdown.

    `&` is left alone: entities `report.md_escape` wrote (`&lt;img`) stay single-escaped.
    """
    return markdown.replace("<", "&lt;").replace(">", "&gt;")


def point_relative_links(markdown: str, run_url: str | None) -> str:
    """Links to report files (`01_eda.html`) mean nothing on a PR page: point them at the run,
    whose artifacts hold the reports, or keep only their text."""
    if run_url:
        return _RELATIVE_LINK.sub(lambda m: f"[{m.group(1)}]({run_url})", markdown)
    return _RELATIVE_LINK.sub(lambda m: m.group(1), markdown)


def build_comment(
    summary: str,
    *,
    run_url: str | None = None,
    commit: str | None = None,
    limit: int = SUMMARY_LIMIT,
) -> str:
    """The comment body: marker, the summary (HTML neutralised), a footer; at most `limit` chars."""
    if not 0 < limit <= GITHUB_COMMENT_LIMIT:
        raise ValueError(f"limit must be between 1 and {GITHUB_COMMENT_LIMIT}, got {limit}")
    run_url = _checked_url(run_url, "run URL")
    if commit is not None and not _COMMIT.fullmatch(commit):
        raise CommentError(f"commit must be a hex SHA, got {commit[:80]!r}")
    text = summary.replace("\r\n", "\n").strip("\n")
    text = text.removeprefix(SUMMARY_MARKER).lstrip("\n")
    if not text.strip():
        raise CommentError("the summary is empty: the CI run wrote no reports/summary.md")
    footer_bits = []
    if commit:
        footer_bits.append(f"commit {md_escape(commit[:12])}")
    if run_url:
        footer_bits.append(f"[workflow run and reports artifact]({run_url})")
    footer = ("\n\n---\n<sub>" + " · ".join(footer_bits) + "</sub>\n") if footer_bits else "\n"
    body = SUMMARY_MARKER + "\n" + point_relative_links(neutralise_html(text), run_url)
    return cap_markdown(body, limit - len(footer), link=run_url) + footer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbops.comment", description=__doc__.split("\n\n")[0])
    parser.add_argument("--summary", required=True, help="summary.md from the CI run's artifact")
    parser.add_argument("--pr-number-file", required=True, help="file holding the PR number")
    parser.add_argument("--out", required=True, help="where to write the comment body")
    parser.add_argument("--run-url", help="the CI run's page (its artifacts are listed there)")
    parser.add_argument("--commit", help="the commit CI ran on")
    args = parser.parse_args(argv)
    try:
        try:
            number = validate_pr_number(Path(args.pr_number_file).read_text(encoding="utf-8"))
            summary = Path(args.summary).read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise CommentError(f"{exc.filename}: not found in the CI artifact") from None
        except UnicodeDecodeError:
            raise CommentError("the CI artifact holds a file that is not UTF-8 text") from None
        body = build_comment(summary, run_url=args.run_url, commit=args.commit)
    except CommentError as exc:
        print_problems(exc)
        return 1
    Path(args.out).write_text(body, encoding="utf-8")
    print(number)
    return 0


if __name__ == "__main__":
    sys.exit(main())
