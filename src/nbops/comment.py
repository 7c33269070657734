"""The sticky PR comment: one comment per pull request, found again by its hidden marker.

`pr-comment.yml` runs this from the default branch's code (never the PR's) on the summary
artifact a PR's CI run uploaded. That artifact is untrusted, so:

- the PR number is checked here to be a plain positive integer, and the workflow then checks
  that the PR's head commit is the one CI ran on before it comments;
- any HTML left in the summary is neutralised: `<img src=x onerror=...>` shows as text
  (`runner.summary.summary_markdown` escapes data already; this holds even for a forged summary);
- the body is cut below GitHub's 65,536-character limit, with a note and a link to the run's
  artifacts (`markdown.cap_markdown`).

A run that stopped before writing `summary.md` (the artifact holds only `pr-number.txt`) still
gets a comment: "the pipeline stopped before any report", linking the run, so the last push's
verdict does not stay up as if it were this one's.

The run's link is `--run-url`, or else built from `--run-id` (default: env `WORKFLOW_RUN_ID`)
with the env `GITHUB_SERVER_URL` and `GITHUB_REPOSITORY` every Actions job has.

Standard library only: the comment job installs nothing.

    python -m nbops.comment --summary reports/<name>/summary.md --pr-number-file pr-number.txt \\
        --out comment.md --run-url https://github.com/o/r/actions/runs/1 --commit <sha>
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from nbops.exceptions import NbopsError, print_problems
from nbops.markdown import SUMMARY_LIMIT, SUMMARY_MARKER, cap_markdown, md_escape

GITHUB_COMMENT_LIMIT = 65_536  # GitHub answers 422 above this
_PR_NUMBER = re.compile(r"[1-9][0-9]{0,9}")
_URL = re.compile(r"https://[A-Za-z0-9.-]+(/[A-Za-z0-9._~/%#?=&+-]*)?")
_COMMIT = re.compile(r"[0-9a-f]{7,64}")
_RUN_ID = re.compile(r"[1-9][0-9]{0,19}")
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
RUN_ID_ENV = "WORKFLOW_RUN_ID"
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

    `&` is left alone: entities `markdown.md_escape` wrote (`&lt;img`) stay single-escaped.
    """
    return markdown.replace("<", "&lt;").replace(">", "&gt;")


def point_relative_links(markdown: str, run_url: str | None) -> str:
    """Links to report files (`01_eda.html`) mean nothing on a PR page: point them at the run,
    whose artifacts hold the reports, or keep only their text."""
    if run_url:
        return _RELATIVE_LINK.sub(lambda m: f"[{m.group(1)}]({run_url})", markdown)
    return _RELATIVE_LINK.sub(lambda m: m.group(1), markdown)


def run_url_from_env(run_id: str | None, env=None) -> str | None:
    """https://github.com/<owner>/<repo>/actions/runs/<id> from an Actions job's environment."""
    env = os.environ if env is None else env
    run_id = (run_id or env.get(RUN_ID_ENV) or "").strip()
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    repository = env.get("GITHUB_REPOSITORY", "")
    if not run_id or not repository:
        return None
    if not _RUN_ID.fullmatch(run_id):
        raise CommentError(f"run id must be a positive integer, got {run_id[:40]!r}")
    if not _REPOSITORY.fullmatch(repository):
        raise CommentError(f"GITHUB_REPOSITORY must be owner/name, got {repository[:80]!r}")
    return _checked_url(f"{server}/{repository}/actions/runs/{run_id}", "run URL")


def _footer(run_url: str | None, commit: str | None, link_text: str) -> str:
    bits = []
    if commit:
        bits.append(f"commit {md_escape(commit[:12])}")
    if run_url:
        bits.append(f"[{link_text}]({run_url})")
    return ("\n\n---\n<sub>" + " · ".join(bits) + "</sub>\n") if bits else "\n"


def _checked_commit(commit: str | None) -> str | None:
    if commit is not None and not _COMMIT.fullmatch(commit):
        raise CommentError(f"commit must be a hex SHA, got {commit[:80]!r}")
    return commit


def stopped_comment(*, run_url: str | None = None, commit: str | None = None) -> str:
    """The body when the run left no summary: it stopped before any report."""
    run_url = _checked_url(run_url, "run URL")
    commit = _checked_commit(commit)
    where = f"see the [run]({run_url}) for the step that failed" if run_url else "see the CI run's log"
    return (
        SUMMARY_MARKER
        + "\n## Pipeline stopped\n\n"
        + f"The pipeline stopped before any report: {where}. "
        + "No gate verdict or metrics for this commit; an earlier verdict no longer applies."
        + _footer(run_url, commit, "workflow run")
    )


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
    commit = _checked_commit(commit)
    text = summary.replace("\r\n", "\n").strip("\n")
    text = text.removeprefix(SUMMARY_MARKER).lstrip("\n")
    if not text.strip():
        raise CommentError("the summary is empty: the CI run wrote no reports/<name>/summary.md")
    footer = _footer(run_url, commit, "workflow run and reports artifact")
    body = SUMMARY_MARKER + "\n" + point_relative_links(neutralise_html(text), run_url)
    return cap_markdown(body, limit - len(footer), link=run_url) + footer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The comment options (also `nbops comment`)."""
    parser.add_argument("--summary", required=True, help="summary.md from the CI run's artifact")
    parser.add_argument("--pr-number-file", required=True, help="file holding the PR number")
    parser.add_argument("--out", required=True, help="where to write the comment body")
    parser.add_argument("--run-url", help="the CI run's page (its artifacts are listed there)")
    parser.add_argument(
        "--run-id",
        help=f"the CI run's id, for its link when --run-url is not given (default: env {RUN_ID_ENV}; "
        "with GITHUB_SERVER_URL and GITHUB_REPOSITORY)",
    )
    parser.add_argument("--commit", help="the commit CI ran on")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbops.comment", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Write the comment body and print the PR number, as parsed by add_arguments; the exit code."""
    try:
        run_url = args.run_url or run_url_from_env(args.run_id)
        try:
            number = validate_pr_number(Path(args.pr_number_file).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise CommentError(f"{exc.filename}: not found in the CI artifact") from None
        except UnicodeDecodeError:
            raise CommentError("the CI artifact holds a file that is not UTF-8 text") from None
        try:
            summary = Path(args.summary).read_text(encoding="utf-8")
        except FileNotFoundError:
            summary = ""  # the run stopped before any report
        except UnicodeDecodeError:
            raise CommentError("the CI artifact holds a file that is not UTF-8 text") from None
        if summary.replace(SUMMARY_MARKER, "").strip():
            body = build_comment(summary, run_url=run_url, commit=args.commit)
        else:
            body = stopped_comment(run_url=run_url, commit=args.commit)
    except CommentError as exc:
        print_problems(exc)
        return 1
    Path(args.out).write_text(body, encoding="utf-8")
    print(number)
    return 0


if __name__ == "__main__":
    sys.exit(main())
