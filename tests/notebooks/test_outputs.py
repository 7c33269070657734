"""What the executed notebooks and the reports of one smoke run say (tables, notes, the index),
and what the notebooks' markdown may say: markdown cannot read parameters, so it never names
the target of one data set."""

import json
from pathlib import Path

import pytest

from nbops.layout import build_dir, reports_dir
from tests.conftest import REPO

NOTEBOOKS = ("01_eda", "02_train", "03_evaluate")


def outputs(notebook: Path) -> list[str]:
    """The text of every output of every code cell, in order."""
    texts = []
    for cell in json.loads(notebook.read_text())["cells"]:
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain") or ""
            texts.append("".join(text))
    return texts


def executed(project: Path, step: str) -> list[str]:
    return outputs(build_dir(project, "smoke") / step / f"{step}.ipynb")


@pytest.mark.parametrize("step", NOTEBOOKS)
def test_markdown_does_not_name_one_data_sets_target(step):
    cells = json.loads((REPO / "notebooks" / f"{step}.ipynb").read_text())["cells"]
    markdown = " ".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert "drug" not in markdown.lower()


def test_eda_summary_has_no_nan(smoke_project):
    (table,) = [t for t in executed(smoke_project, "01_eda") if "median" in t]
    assert "NaN" not in table
    (sex,) = [line.split() for line in table.splitlines() if line.startswith("Sex ")]
    assert sex == ["Sex", "categorical", "0", "0.0", "2"]  # min, median, max blank


def test_train_shows_the_fold_count_as_an_integer(smoke_project):
    (table,) = [t for t in executed(smoke_project, "02_train") if "fold CV" in t]
    assert table.splitlines()[1].strip() == "3-fold CV"  # params/smoke.yaml: cv_folds: 3
    assert "3.0" not in table


def test_evaluate_without_a_champion_shows_dashes(smoke_project):
    (table,) = [t for t in executed(smoke_project, "03_evaluate") if "challenger champion" in t]
    assert "None" not in table
    assert table.splitlines()[2].split() == ["accuracy", "1.0000", "–", "–", "higher"]


def test_index_says_what_was_trained(smoke_project):
    page = (reports_dir(smoke_project, "smoke") / "index.html").read_text()
    assert "<code>decision_tree</code> (max_depth=6, random_state=42), 3-fold CV" in page
    assert "drug-classifier v1 (run <code>" in page
    data = "<code>data/raw/drug-smoke-synthetic.csv</code> · <strong class='synthetic'>SYNTHETIC</strong>"
    assert data in page
    assert "120 rows (96 train, 24 held out)" in page
    assert "<th>commit</th>" in page
    assert "<th>challenger v1</th><th>champion (none)</th>" in page
    summary = (reports_dir(smoke_project, "smoke") / "summary.md").read_text()
    assert "\nCommit: " in summary
