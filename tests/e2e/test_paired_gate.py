"""The paired gate through the pipeline: the interval of Δ macro-F1 decides, and it is shown
where a reviewer looks (the console, summary.md, index.html, the version's tags)."""

from __future__ import annotations

import html
import json

import pytest

from nbops.layout import build_dir, reports_dir
from tests.conftest import nbops, write_params

pytestmark = pytest.mark.e2e


def params(root, name, max_depth, random_state=42, paired=True):
    def edit(raw):
        raw["model"]["params"] = {"max_depth": max_depth, "random_state": random_state}
        raw["gate"] = {"min_macro_f1": 0.3, "min_accuracy": 0.3, "tolerance": 0.01, "paired": paired}

    return str(write_params(root, name, edit).relative_to(root))


def evaluation(root, name):
    return json.loads((build_dir(root, name) / "03_evaluate" / "metrics.json").read_text())


def test_progress_beyond_noise_promotes_and_a_reseeded_twin_does_not(project):
    import mlflow

    first = nbops(project, "run", "--params", params(project, "stump", max_depth=1))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "champion: drug-classifier v1" in first.stdout

    better = nbops(project, "run", "--params", params(project, "deep", max_depth=6))
    assert better.returncode == 0, better.stdout + better.stderr
    record = evaluation(project, "deep")
    interval = record["decision"]["interval"]
    assert record["decision"]["verdict"] == "promote"
    assert 0 < interval["delta"]["low"] <= interval["delta"]["value"] <= interval["delta"]["high"]
    assert interval["rows"] == record["data"]["holdout_rows"]
    from nbops.markdown import md_escape
    from nbops.ml.bootstrap import describe

    said = describe(interval)
    assert f"      {said}" in better.stdout  # under the gate line
    assert md_escape(said) in (reports_dir(project, "deep") / "summary.md").read_text()
    assert html.escape(said) in (reports_dir(project, "deep") / "index.html").read_text()
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    assert client.get_model_version("drug-classifier", "2").tags["nbops.gate.interval"] == said

    twin = nbops(project, "run", "--params", params(project, "twin", max_depth=6, random_state=7))
    assert twin.returncode == 0, twin.stdout + twin.stderr
    decision = evaluation(project, "twin")["decision"]
    assert decision["verdict"] == "keep champion", decision
    assert "champion: drug-classifier v2" in twin.stdout


def test_paired_false_compares_the_point_values_only(project):
    assert nbops(project, "run", "--params", params(project, "stump", max_depth=1)).returncode == 0
    done = nbops(project, "run", "--params", params(project, "deep", max_depth=6, paired=False))
    assert done.returncode == 0, done.stdout + done.stderr
    decision = evaluation(project, "deep")["decision"]
    assert decision["interval"] is None and decision["verdict"] == "promote"
    assert "interval" not in done.stdout
