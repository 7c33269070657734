"""`python -m nbops drift` as a user runs it, in a temp project with its own registry."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import nbops


def test_drift_without_a_champion_says_what_to_run(project):
    result = nbops(project, "drift", "--params", "params/smoke.yaml")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: registered model 'drug-classifier' has no champion: run `make pipeline` to train and promote "
        "one before checking drift"
    )
    assert not (project / "reports" / "drift.json").exists()


@pytest.mark.e2e
def test_drift_report_after_a_pipeline_then_a_shift_is_found(project):
    assert nbops(project, "run", "--params", "params/smoke.yaml").returncode == 0

    same = nbops(project, "drift", "--params", "params/smoke.yaml")
    assert same.returncode == 0, same.stderr
    assert "no drift: 5 columns match the training data of drug-classifier v1" in same.stdout
    html = (project / "reports" / "drift.html").read_text(encoding="utf-8")
    assert "Drift check: no drift" in html and "onerror" not in html

    csv = project / "data" / "raw" / "drug-smoke-synthetic.csv"
    table = pd.read_csv(csv)
    table["Na_to_K"] = (table["Na_to_K"] + 5).round(3)
    table.to_csv(csv, index=False)
    shifted = nbops(project, "drift", "--params", "params/smoke.yaml")
    assert shifted.returncode == 0, shifted.stderr
    assert "drift: Na_to_K differ from the training data of drug-classifier v1" in shifted.stdout
    report = json.loads((project / "reports" / "drift.json").read_text())
    assert report["verdict"] == "drift" and report["drifted_columns"] == ["Na_to_K"]
    assert "Na\\_to\\_K" in (project / "reports" / "drift.md").read_text()
