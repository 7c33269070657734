import re

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from nbops.exceptions import StepError
from nbops.layout import build_dir, reports_dir
from nbops.markdown import SUMMARY_MARKER, cap_markdown, md_escape
from nbops.ml.gate import Decision
from nbops.runner.notebook_html import render_notebook_html
from nbops.runner.summary import summary_markdown

HOSTILE = "<img src=x onerror=alert(1)>"


def evaluation(label="drugA", version_champ="1"):
    per = {
        label: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3},
        "drugY": {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2},
    }
    metrics = {
        "accuracy": 0.8,
        "macro_f1": 0.83,
        "weighted_f1": 0.8,
        "per_class": per,
        "labels": [label, "drugY"],
        "confusion_matrix": [[3, 0], [1, 1]],
    }
    champ = {**metrics, "accuracy": 0.7, "macro_f1": 0.75}
    d = Decision(
        True,
        "promote",
        ["macro_f1 improves by 0.0800 over the champion's 0.7500"],
        {"macro_f1": 0.08, "accuracy": 0.1},
        "2",
        version_champ,
    )
    return {
        "model_name": "drug-classifier",
        "challenger": {"version": "2", "run_id": "r2", "metrics": metrics},
        "champion": {"version": version_champ, "run_id": "r1", "metrics": champ, "error": None},
        "decision": d.to_dict(),
        "champion_after": "2",
        "params_diff": {"model.params.max_depth": ["3", HOSTILE]},
        "data": {
            "hash": "abc123def4567890",
            "source": "data/raw/x|y.csv",
            "synthetic": True,
            "holdout_rows": 5,
        },
    }


def test_summary_leads_with_the_verdict_and_carries_the_tables():
    body = summary_markdown(evaluation(), statuses={"01_eda": "ran", "02_train": "ran", "03_evaluate": "ran"})
    lines = body.splitlines()
    assert lines[0] == SUMMARY_MARKER
    assert lines[1] == "## ✅ Gate: promote: drug-classifier v2 is the new champion"
    assert "| accuracy | 0.8000 | 0.7000 | +0.1000 |" in lines
    assert "| drugY | 2 | 0.6670 | 0.6670 | +0.0000 |" in lines
    assert "| **drugA** | 3 | 0 |" in lines
    assert "[Evaluate and gate](03_evaluate.html)" in body
    assert "(SYNTHETIC)" in body and "x\\|y.csv" in body


def test_values_from_data_are_text_never_markup():
    body = summary_markdown(evaluation(label=HOSTILE))
    assert "<img" not in body and "onerror=alert(1)>" not in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body


def test_failure_summary_names_step_and_cell():
    body = summary_markdown(
        None,
        failure=StepError("02_train", 5, "ValueError", "bad <b>value</b>"),
        statuses={"02_train": "failed"},
    )
    assert (
        "## ❌ Pipeline failed at 02\\_train, cell 5" in body
        or "## ❌ Pipeline failed at 02_train, cell 5" in body
    )
    assert "ValueError: bad &lt;b&gt;value&lt;/b&gt;" in body
    assert "No alias was moved" in body


def test_cap_cuts_at_a_line_with_a_note_and_link():
    body = "\n".join(f"| row {i} | {'x' * 50} |" for i in range(3000))
    out = cap_markdown(body, limit=60_000, link="https://example.invalid/artifact")
    assert len(out) <= 60_000
    assert out.endswith("read it in the [reports artifact](https://example.invalid/artifact).")
    assert "\n…cut:" in out


def test_md_escape_keeps_a_table_cell_one_cell():
    assert md_escape("a|b\nc") == "a\\|b c"


def test_rendered_html_is_sanitised(tmp_path):
    nb = new_notebook(
        cells=[
            new_markdown_cell(f"# Title\n\n{HOSTILE}<script>alert(2)</script>"),
            new_code_cell(
                "x",
                outputs=[
                    new_output(
                        "display_data",
                        data={
                            "text/html": f"<b>ok</b>{HOSTILE}<script>alert(3)</script>",
                            "text/plain": "ok",
                        },
                    )
                ],
            ),
        ]
    )
    src = tmp_path / "nb.ipynb"
    nbformat.write(nb, src)
    for with_code in (False, True):
        html = render_notebook_html(src, tmp_path / f"out{with_code}.html", with_code).read_text()
        body = html[html.index("<body") :]
        assert not re.search(r"<script[^>]*>[^<]*alert\(", body)
        assert not re.search(r"<[a-z][^>]*\son\w+\s*=", body, re.IGNORECASE)
        assert "<b>ok</b>" in body


def test_rendered_html_keeps_headings_paragraphs_and_tables_as_markup(tmp_path):
    import pandas as pd

    table = pd.DataFrame({"accuracy": [0.9]}, index=["challenger"])
    nb = new_notebook(
        cells=[
            new_markdown_cell("# Evaluate\n\nSome **bold** text."),
            new_code_cell(
                "t",
                outputs=[
                    new_output(
                        "execute_result",
                        data={"text/html": table.to_html(), "text/plain": str(table)},
                        execution_count=1,
                    )
                ],
            ),
        ]
    )
    src = tmp_path / "nb.ipynb"
    nbformat.write(nb, src)
    body = render_notebook_html(src, tmp_path / "out.html", with_code=False).read_text()
    assert re.search(r"<h1[^>]*>Evaluate", body) and "<strong>bold</strong>" in body
    assert "<th>accuracy</th>" in body and "&lt;th" not in body and "&lt;h1" not in body


def test_clean_html_sanitises_with_nh3_without_bleach(monkeypatch):
    import sys

    from nbops.runner.notebook_html import clean_html

    monkeypatch.setitem(sys.modules, "bleach", None)  # archived: any import of it fails here
    dirty = (
        '<p class="x" onclick="alert(1)">hi <a href="javascript:alert(1)">j</a>'
        f"{HOSTILE}<script>alert(2)</script></p><style>p{{}}</style><!-- c -->"
    )
    assert clean_html(dirty) == (
        '<p class="x">hi <a rel="noopener noreferrer">j</a>'
        "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt;</p>"
    )
    table = b"<table><tr><th colspan=2 style=x>a &lt; b</th></tr></table>"
    assert clean_html(table) == '<table><tbody><tr><th colspan="2">a &lt; b</th></tr></tbody></table>'


def test_report_code_does_not_use_bleach():
    from pathlib import Path

    import nbops.markdown
    import nbops.runner.notebook_html
    import nbops.runner.report
    import nbops.runner.summary

    for module in (nbops.markdown, nbops.runner.notebook_html, nbops.runner.report, nbops.runner.summary):
        assert "bleach" not in Path(module.__file__).read_text()


def fake_plan(tmp_path, commit="3f2a9c1d0e4b-dirty", **model_json):
    """A Plan as render_reports reads it: params, data, build products (model.json, holdout)."""
    from types import SimpleNamespace

    from nbops.params import load_params
    from nbops.products import write_json
    from tests.conftest import REPO

    root = tmp_path / "project"
    build, reports = build_dir(root, "smoke"), reports_dir(root, "smoke")
    registered = {
        "model_name": "drug-classifier",
        "version": "7",
        "run_id": "abc123",
        "schema": {"rows": 96},
        **model_json,
    }
    write_json(build / "02_train" / "model.json", registered)
    write_json(build / "02_train" / "holdout.json", {"holdout_ids": list(range(24)), "seed": 42})
    reports.mkdir(parents=True)
    plan = SimpleNamespace(
        root=root,
        params_file=root / "params" / "smoke.yaml",
        params=load_params(REPO / "params" / "smoke.yaml"),
        data_path=root / "data" / "raw" / "drug-smoke-synthetic.csv",
        synthetic=True,
        data_hash="b0e797f5ec1e0123",
        build=build,
        reports=reports,
    )
    if commit is not None:
        plan.git_commit = commit
    return plan


RAN = {"01_eda": "ran", "02_train": "ran", "03_evaluate": "ran"}


def test_index_says_what_was_trained_on_what_at_which_commit(tmp_path):
    from nbops.runner.report import index_html, run_facts

    plan = fake_plan(tmp_path)
    (plan.reports / "drift.html").write_text("drift")
    ev = evaluation()
    ev["data"]["holdout_rows"] = 24
    page = index_html(RAN, ev, None, run_facts(plan, RAN, ev))
    assert "<code>decision_tree</code> (max_depth=6, random_state=42), 3-fold CV" in page
    assert "drug-classifier v7 (run <code>abc123</code>)" in page
    data = "<code>data/raw/drug-smoke-synthetic.csv</code> · <strong class='synthetic'>SYNTHETIC</strong>"
    assert data in page
    assert "120 rows (96 train, 24 held out)" in page
    assert "<code>3f2a9c1d0e4b-dirty</code>" in page
    assert "<tr><th>params</th><td><code>params/smoke.yaml</code></td></tr>" in page
    assert "<th>challenger v2</th><th>champion v1</th><th>Δ</th>" in page
    assert (
        "<tr><td>accuracy</td><td class='num'>0.8000</td><td class='num'>0.7000</td>"
        "<td class='num'>+0.1000</td></tr>"
    ) in page
    assert '<a href="drift.html">drift report</a>' in page
    # the sweeps are listed in reports/index.html (tests/unit/test_reports_index.py), linked from here
    assert '<a href="../index.html">the latest run of every params file, and the sweeps</a>' in page


def test_index_without_champion_commit_or_other_reports(tmp_path):
    from nbops.runner.report import index_html, run_facts

    plan = fake_plan(tmp_path, commit=None)  # a Plan from before git_commit was a field
    ev = evaluation()
    ev["champion"] = {"version": None, "metrics": None, "error": None, "run_id": None}
    facts = run_facts(plan, RAN, None)
    assert facts["commit"] == "unknown"
    assert facts["links"] == [("the latest run of every params file, and the sweeps", "../index.html")]
    assert facts["data"]["rows"] == 120  # 96 trained on + 24 ids in holdout.json
    page = index_html(RAN, ev, None, facts)
    assert "<td class='num'>–</td><td class='num'>–</td>" in page and "None" not in page
    assert "drift.html" not in page and "sweep/" not in page


def test_index_registers_nothing_when_training_did_not_run(tmp_path):
    from nbops.runner.report import index_html, run_facts

    plan = fake_plan(tmp_path)
    statuses = {"01_eda": "ran", "02_train": "failed", "03_evaluate": "not run"}
    facts = run_facts(plan, statuses, None)
    assert facts["registered"] is None and facts["data"]["rows"] is None
    page = index_html(statuses, None, StepError("02_train", 3, "ValueError", "x"), facts)
    assert "nothing registered by this run" in page and "drug-classifier v7" not in page


def test_summary_names_the_commit():
    body = summary_markdown(evaluation(), statuses=RAN, commit="3f2a9c1d0e4b")
    assert "\nCommit: 3f2a9c1d0e4b\n" in body
    failed = summary_markdown(None, StepError("02_train", 1, "E", "x"), {"02_train": "failed"}, commit="abc")
    assert "\nCommit: abc\n" in failed
    assert "Commit:" not in summary_markdown(evaluation())
