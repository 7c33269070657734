"""reports/index.html: one line per params file's latest run (name, params file, when, the gate's
verdict line, a link to its own index.html) and the sweeps, from reports/<name>/run.json."""

import html

from nbops.exceptions import StepError
from nbops.layout import reports_dir, reports_index, sweep_reports_dir
from nbops.runner.reports_index import (
    gate_line,
    read_run_records,
    render_reports_index,
    run_record,
    verdict_line,
    write_run_record,
)

DECISION = {"verdict": "promote", "challenger_version": "3", "champion_version": "2"}


def evaluation(**decision):
    return {"decision": {**DECISION, **decision}}


def test_the_verdict_line_is_the_runners_gate_line():
    assert gate_line(DECISION) == "promote (challenger v3, champion before: v2)"
    assert (
        verdict_line(evaluation(champion_version=None), None)
        == "promote (challenger v3, champion before: none)"
    )
    failure = StepError("02_train", 4, "ValueError", "bad")
    assert verdict_line(evaluation(), failure) == "failed at 02_train, cell 4: ValueError: bad"
    assert verdict_line(None, None) == "no evaluation in this run"


def test_a_record_says_when_and_keeps_a_given_time():
    record = run_record("smoke", "params/smoke.yaml", evaluation(), None, "2026-12-01 10:00:00 UTC")
    assert record == {
        "name": "smoke",
        "params": "params/smoke.yaml",
        "when": "2026-12-01 10:00:00 UTC",
        "verdict": "promote (challenger v3, champion before: v2)",
        "ok": True,
    }
    assert run_record("x", "p.yaml", None, None)["when"].endswith(" UTC")


def lay_out(root, name, when, verdict_evaluation=None, failure=None, params=None):
    folder = reports_dir(root, name)
    write_run_record(
        folder, run_record(name, params or f"params/{name}.yaml", verdict_evaluation, failure, when)
    )
    return folder


def test_the_listing_has_each_params_files_latest_run_newest_first_with_links(tmp_path):
    lay_out(tmp_path, "smoke", "2026-12-01 10:00:00 UTC", evaluation())
    lay_out(
        tmp_path,
        "deep",
        "2026-12-01 11:30:00 UTC",
        evaluation(verdict="keep champion", challenger_version="4"),
    )
    lay_out(tmp_path, "broken", "2026-12-01 09:00:00 UTC", failure=StepError("02_train", 2, "KeyError", "k"))
    (reports_dir(tmp_path, "junk")).mkdir()
    (reports_dir(tmp_path, "junk") / "run.json").write_text("{not json")  # left out, not fatal
    (reports_dir(tmp_path, "partial")).mkdir()
    (reports_dir(tmp_path, "partial") / "run.json").write_text('{"when": 3}')
    sweep = sweep_reports_dir(tmp_path, "trees")
    sweep.mkdir(parents=True)
    (sweep / "index.html").write_text("sweep")

    assert [r["folder"] for r in read_run_records(tmp_path)] == ["deep", "smoke", "broken"]
    page = render_reports_index(tmp_path).read_text()
    assert render_reports_index(tmp_path) == reports_index(tmp_path) == tmp_path / "reports" / "index.html"
    rows = [page.index(f'<a href="{name}/index.html">{name}</a>') for name in ("deep", "smoke", "broken")]
    assert rows == sorted(rows)
    assert (
        '<tr><td><a href="deep/index.html">deep</a></td><td><code>params/deep.yaml</code></td>'
        "<td>2026-12-01 11:30:00 UTC</td>"
        "<td class='ok'>keep champion (challenger v4, champion before: v2)</td></tr>"
    ) in page
    assert "<td class='ok'>promote (challenger v3, champion before: v2)</td>" in page
    assert f"<td class='failed'>{html.escape('failed at 02_train, cell 2: KeyError: k')}</td>" in page
    assert "junk" not in page and "partial" not in page
    assert '<a href="sweep/trees/index.html">sweep trees</a>' in page


def test_names_and_verdicts_are_text_and_links_are_quoted(tmp_path):
    lay_out(tmp_path, "a b", "2026-12-01 10:00:00 UTC", evaluation(verdict="<img src=x onerror=alert(1)>"))
    page = render_reports_index(tmp_path).read_text()
    assert '<a href="a%20b/index.html">a b</a>' in page
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_no_run_yet_says_how_to_start_and_the_file_is_rewritten_only_when_it_changes(tmp_path):
    index = render_reports_index(tmp_path)
    assert "No run yet" in index.read_text()
    stamp = index.stat().st_mtime_ns
    render_reports_index(tmp_path)
    assert index.stat().st_mtime_ns == stamp
    lay_out(tmp_path, "smoke", "2026-12-01 10:00:00 UTC", evaluation())
    assert "smoke/index.html" in render_reports_index(tmp_path).read_text()
