"""The sticky PR comment body: capped with a note and a link, data shown as text, inputs checked."""

from __future__ import annotations

import re

import mistune
import pytest

from nbops import comment
from nbops.markdown import SUMMARY_MARKER
from nbops.runner.summary import summary_markdown

XSS = "<img src=x onerror=alert(1)>"
RUN_URL = "https://github.com/acme/nbops/actions/runs/123456"
SHA = "0123456789abcdef0123456789abcdef01234567"


def evaluation(labels=("drugA", "drugY"), reasons=("macro_f1 0.9500 meets the floor 0.8000",)):
    per_class = {label: {"support": 10, "f1": 0.9} for label in labels}
    metrics = {
        "accuracy": 0.95,
        "macro_f1": 0.95,
        "weighted_f1": 0.95,
        "per_class": per_class,
        "labels": list(labels),
        "confusion_matrix": [[10] * len(labels) for _ in labels],
    }
    return {
        "model_name": "drug-classifier",
        "decision": {"verdict": "not promoted (promote: false)", "promote": False, "reasons": list(reasons)},
        "challenger": {"version": "7", "metrics": metrics},
        "champion": None,
        "params_diff": {},
        "data": {"source": "data/raw/drug200.csv", "synthetic": False, "hash": "ab" * 32, "holdout_rows": 40},
    }


def render(markdown: str) -> str:
    """GitHub-like rendering: Markdown with tables, raw HTML passed through (not escaped)."""
    return mistune.create_markdown(escape=False, plugins=["table"])(markdown)


# ------------------------------------------------------------------ size cap


def test_oversize_body_is_cut_with_a_note_and_a_link_to_the_artifact():
    summary = (
        SUMMARY_MARKER + "\n## Gate: reject\n\n" + "".join(f"| class-{i:05d} | 1 |\n" for i in range(5000))
    )
    body = comment.build_comment(summary, run_url=RUN_URL, commit=SHA, limit=20_000)
    assert len(body) <= 20_000
    note = f"…cut: the full summary is too long for a comment; read it in the [reports artifact]({RUN_URL})."
    assert note in body
    assert body.startswith(SUMMARY_MARKER + "\n## Gate: reject")
    assert body.rstrip().endswith("</sub>")  # the footer survives the cut
    assert "| class-00000 | 1 |\n" in body and "class-04999" not in body
    assert body.split(note)[0].endswith("|\n\n")  # cut at a line break, not inside a row


def test_a_summary_report_already_cut_is_cut_once_more_with_one_note_and_the_link():
    summary = summary_markdown(evaluation(labels=[f"class-{i:05d}" for i in range(3000)]))
    assert "…cut" in summary and len(summary) <= 60_000  # report.py's own cap, without a link
    body = comment.build_comment(summary, run_url=RUN_URL, commit=SHA)
    assert len(body) <= 60_000
    assert body.count("…cut") == 1 and f"[reports artifact]({RUN_URL})" in body


def test_default_cap_keeps_the_body_under_githubs_limit():
    summary = SUMMARY_MARKER + "\n" + ("| row | 1 |\n" * 20_000)
    body = comment.build_comment(summary, run_url=RUN_URL)
    assert len(body) <= comment.GITHUB_COMMENT_LIMIT
    assert "…cut" in body and RUN_URL in body


def test_a_body_under_the_cap_is_not_cut():
    body = comment.build_comment(summary_markdown(evaluation()), run_url=RUN_URL)
    assert "…cut" not in body
    assert "| accuracy | 0.9500 |" in body


def test_limit_above_githubs_is_refused():
    with pytest.raises(ValueError, match="limit must be between 1 and 65536, got 70000"):
        comment.build_comment("x", limit=70_000)


# ------------------------------------------------------------------ data is text, never markup


def test_markup_in_data_appears_as_text_never_markup():
    summary = summary_markdown(evaluation(labels=("drugA", XSS), reasons=(f"reason {XSS}",)))
    body = comment.build_comment(summary, run_url=RUN_URL, commit=SHA)
    assert XSS not in body
    html = render(body)
    assert "<img" not in html and "onerror=alert(1)>" not in html.replace("&lt;", "")
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # shown, as text


def test_raw_html_in_a_forged_summary_is_neutralised():
    forged = (
        f"{SUMMARY_MARKER}\n## ✅ Gate: promote {XSS}\n<script>alert(2)</script>\n<details open>x</details>"
    )
    body = comment.build_comment(forged, run_url=RUN_URL)
    html = render(body)
    for tag in ("<img", "<script", "<details"):
        assert tag not in html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in body


def test_marker_appears_once_at_the_start_whether_or_not_the_summary_has_it():
    for summary in ("## Gate: reject\n", f"{SUMMARY_MARKER}\n## Gate: reject\n"):
        body = comment.build_comment(summary)
        assert body.startswith(SUMMARY_MARKER + "\n## Gate: reject")
        assert body.count(SUMMARY_MARKER) == 1


def test_footer_names_commit_and_run():
    body = comment.build_comment("## Gate: reject\n", run_url=RUN_URL, commit=SHA)
    assert body.endswith(f"<sub>commit 0123456789ab · [workflow run and reports artifact]({RUN_URL})</sub>\n")


def test_empty_summary_is_an_error():
    with pytest.raises(comment.CommentError, match="the summary is empty"):
        comment.build_comment(f"{SUMMARY_MARKER}\n\n")


# ------------------------------------------------------------------ inputs from the artifact


@pytest.mark.parametrize("text, number", [("42", 42), ("42\n", 42), (" 7 ", 7), ("9999999999", 9999999999)])
def test_pr_number_accepts_plain_positive_integers(text, number):
    assert comment.validate_pr_number(text) == number


@pytest.mark.parametrize(
    "text", ["", "0", "-3", "+3", "042", "4 2", "1e3", "12345678901", "42; rm -rf /", "42\n43", "٣"]
)
def test_pr_number_rejects_anything_else(text):
    with pytest.raises(comment.CommentError, match=r"PR number must be a positive integer, got '"):
        comment.validate_pr_number(text)


def test_pr_number_error_shows_a_short_value():
    with pytest.raises(comment.CommentError) as exc:
        comment.validate_pr_number("x" * 500)
    assert exc.value.problems == ["PR number must be a positive integer, got '" + "x" * 37 + "...'"]


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "http://github.com/a", "https://x/a)(b", "https://x/a b", "https://x/<img>"],
)
def test_run_url_must_be_a_plain_https_link(url):
    with pytest.raises(comment.CommentError, match="run URL must be an https:// URL"):
        comment.build_comment("## ok\n", run_url=url)


def test_commit_must_be_hex():
    with pytest.raises(comment.CommentError, match=r"commit must be a hex SHA, got '<b>'"):
        comment.build_comment("## ok\n", commit="<b>")


def test_cli_writes_the_body_and_prints_the_number(tmp_path, capsys):
    (tmp_path / "summary.md").write_text(summary_markdown(evaluation()), encoding="utf-8")
    (tmp_path / "pr-number.txt").write_text("17\n", encoding="utf-8")
    out = tmp_path / "comment.md"
    code = comment.main(
        [
            "--summary",
            str(tmp_path / "summary.md"),
            "--pr-number-file",
            str(tmp_path / "pr-number.txt"),
            "--out",
            str(out),
            "--run-url",
            RUN_URL,
            "--commit",
            SHA,
        ]
    )
    assert code == 0
    assert capsys.readouterr().out == "17\n"
    assert out.read_text(encoding="utf-8").startswith(SUMMARY_MARKER)


def test_cli_refuses_a_bad_pr_number_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "summary.md").write_text("## ok\n", encoding="utf-8")
    (tmp_path / "pr-number.txt").write_text("1; curl evil", encoding="utf-8")
    out = tmp_path / "comment.md"
    code = comment.main(
        [
            "--summary",
            str(tmp_path / "summary.md"),
            "--pr-number-file",
            str(tmp_path / "pr-number.txt"),
            "--out",
            str(out),
        ]
    )
    assert code == 1
    assert capsys.readouterr().err == "error: PR number must be a positive integer, got '1; curl evil'\n"
    assert not out.exists()


def test_cli_names_a_missing_artifact_file(tmp_path, capsys):
    code = comment.main(
        [
            "--summary",
            str(tmp_path / "nope.md"),
            "--pr-number-file",
            str(tmp_path / "n.txt"),
            "--out",
            str(tmp_path / "c.md"),
        ]
    )
    assert code == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'n.txt'}: not found in the CI artifact\n"


def test_links_to_report_files_point_at_the_run_or_become_text():
    summary = (
        "## Gate: reject\n\nReports: [Train](02_train.html) · [index](index.html) · [docs](https://x.org/a)\n"
    )
    linked = comment.build_comment(summary, run_url=RUN_URL)
    assert f"[Train]({RUN_URL}) · [index]({RUN_URL}) · [docs](https://x.org/a)" in linked
    plain = comment.build_comment(summary)
    assert "Reports: Train · index · [docs](https://x.org/a)" in plain


def test_escaped_brackets_from_data_are_not_taken_for_links():
    summary = summary_markdown(evaluation(labels=("drugA", "x[1](y.html)")))
    assert "x\\[1\\](y.html)" in comment.build_comment(summary, run_url=RUN_URL)


# ------------------------------------------------------------------ a run that left no summary


def cli(tmp_path, *extra, summary=None):
    """comment.main on an artifact holding pr-number.txt (and summary.md when given)."""
    artifact = tmp_path / "pr-summary"
    artifact.mkdir(exist_ok=True)
    (artifact / "pr-number.txt").write_text("17\n", encoding="utf-8")
    if summary is not None:
        (artifact / "summary.md").write_text(summary, encoding="utf-8")
    out = tmp_path / "comment.md"
    code = comment.main(
        [
            "--summary",
            str(artifact / "summary.md"),
            "--pr-number-file",
            str(artifact / "pr-number.txt"),
            "--out",
            str(out),
            *extra,
        ]
    )
    return code, (out.read_text(encoding="utf-8") if out.exists() else None)


def test_a_run_that_stopped_before_any_report_replaces_the_old_verdict(tmp_path, capsys):
    code, body = cli(tmp_path, "--run-url", RUN_URL, "--commit", SHA)
    assert code == 0 and capsys.readouterr().out == "17\n"
    assert body.startswith(SUMMARY_MARKER + "\n## Pipeline stopped\n")  # the same sticky comment
    assert (
        f"The pipeline stopped before any report: see the [run]({RUN_URL}) for the step that failed." in body
    )
    assert body.endswith(f"<sub>commit 0123456789ab · [workflow run]({RUN_URL})</sub>\n")
    assert set(re.findall(r"<(\w+)", render(body))) <= {"h2", "p", "a", "hr", "sub"}  # Markdown only


@pytest.mark.parametrize("summary", ["", "\n\n", f"{SUMMARY_MARKER}\n\n"])
def test_an_empty_summary_counts_as_no_report(tmp_path, summary):
    code, body = cli(tmp_path, "--run-url", RUN_URL, summary=summary)
    assert code == 0 and "stopped before any report" in body


def test_the_run_link_is_built_from_the_actions_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/nbops")
    monkeypatch.setenv("WORKFLOW_RUN_ID", "123456")
    code, body = cli(tmp_path)
    assert code == 0 and f"see the [run]({RUN_URL})" in body
    code, body = cli(tmp_path, "--run-id", "99", summary="## Gate: reject\n")
    assert (
        code == 0
        and "[workflow run and reports artifact](https://github.com/acme/nbops/actions/runs/99)" in body
    )


def test_without_any_run_link_the_body_still_says_the_run_stopped(tmp_path, monkeypatch):
    for name in ("GITHUB_REPOSITORY", "WORKFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    code, body = cli(tmp_path)
    assert code == 0
    assert "The pipeline stopped before any report: see the CI run's log." in body and "](" not in body


@pytest.mark.parametrize(
    "env, message",
    [
        ({"WORKFLOW_RUN_ID": "12; rm", "GITHUB_REPOSITORY": "a/b"}, "run id must be a positive integer"),
        ({"WORKFLOW_RUN_ID": "12", "GITHUB_REPOSITORY": "a/b/c d"}, "GITHUB_REPOSITORY must be owner/name"),
    ],
)
def test_a_bad_run_id_or_repository_is_refused(tmp_path, monkeypatch, capsys, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, body = cli(tmp_path)
    assert code == 1 and body is None
    assert message in capsys.readouterr().err
