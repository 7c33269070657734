"""`python -m nbops drift` as a user runs it, in a temp project with its own registry."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from nbops.layout import reports_dir
from tests.conftest import nbops


def test_help_says_what_the_exit_codes_mean(project):
    result = nbops(project, "drift", "--help")
    assert result.returncode == 0
    assert "--fail-on-drift  exit 3 when drift is found" in result.stdout
    assert "exit codes:\n  0  the check ran: no drift, insufficient data, or drift without" in result.stdout
    assert "\n  1  an error:" in result.stdout
    assert "\n  3  drift found and --fail-on-drift given" in result.stdout


def test_drift_without_a_champion_says_what_to_run_and_is_not_an_error(project):
    """A fresh store (a registry lost to cache eviction): a weekly check must not turn red."""
    result = nbops(project, "drift", "--params", "params/smoke.yaml", "--fail-on-drift")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "no champion yet: nothing to compare; run the pipeline"
    assert not (reports_dir(project, "smoke") / "drift.json").exists()


@pytest.mark.e2e
def test_drift_report_after_a_pipeline_then_a_shift_is_found(smoke_project):
    project = smoke_project  # after the smoke pipeline's run

    same = nbops(project, "drift", "--params", "params/smoke.yaml", "--fail-on-drift")
    assert same.returncode == 0, same.stderr
    assert "no drift: 5 columns match the training data of drug-classifier v1" in same.stdout
    html = (reports_dir(project, "smoke") / "drift.html").read_text(encoding="utf-8")
    assert "Drift check: no drift" in html and "onerror" not in html

    csv = project / "data" / "raw" / "drug-smoke-synthetic.csv"
    table = pd.read_csv(csv)
    table["Na_to_K"] = (table["Na_to_K"] + 5).round(3)
    table.to_csv(csv, index=False)
    shifted = nbops(project, "drift", "--params", "params/smoke.yaml")
    assert shifted.returncode == 0, shifted.stderr
    assert "drift: Na_to_K differ from the training data of drug-classifier v1" in shifted.stdout
    report = json.loads((reports_dir(project, "smoke") / "drift.json").read_text())
    assert report["verdict"] == "drift" and report["drifted_columns"] == ["Na_to_K"]
    assert "Na\\_to\\_K" in (reports_dir(project, "smoke") / "drift.md").read_text()

    red = nbops(project, "drift", "--params", "params/smoke.yaml", "--fail-on-drift")
    assert red.returncode == 3, red.stderr
    assert red.stdout.splitlines()[-1] == "drift: Na_to_K differ from the training data of drug-classifier v1"

    # a failing report cell is named as the runner names one: counted from 1 in the executed
    # notebook (markdown, parameters, injected parameters, verdict, markdown, plots = cell 6)
    nb_path = project / "notebooks" / "04_drift.ipynb"
    nb = json.loads(nb_path.read_text())
    nb["cells"][-1]["source"] = ["raise RuntimeError('deliberate')"]
    nb_path.write_text(json.dumps(nb))
    broken = nbops(project, "drift", "--params", "params/smoke.yaml")
    assert broken.returncode == 1
    last = broken.stderr.strip().splitlines()[-1]
    assert last == "error: failed at 04_drift, cell 6: RuntimeError: deliberate"
