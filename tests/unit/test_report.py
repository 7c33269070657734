import re

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from nbops.exceptions import StepError
from nbops.gate import Decision
from nbops.report import SUMMARY_MARKER, cap_markdown, md_escape, render_notebook_html, summary_markdown

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
