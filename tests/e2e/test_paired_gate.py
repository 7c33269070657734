"""The paired gate through the pipeline: the interval of Δ macro-F1 decides, and it is shown
where a reviewer looks (the console, summary.md, index.html, the version's tags)."""

from __future__ import annotations

import html
import json

import pytest

from nbops.layout import build_dir, reports_dir
from tests.conftest import copy_project, make_project, nbops, write_params

pytestmark = pytest.mark.e2e


def params(root, name, max_depth, random_state=42, paired=True):
    def edit(raw):
        raw["model"]["params"] = {"max_depth": max_depth, "random_state": random_state}
        raw["gate"] = {"min_macro_f1": 0.3, "min_accuracy": 0.3, "tolerance": 0.01, "paired": paired}

    return str(write_params(root, name, edit).relative_to(root))


def run(root, params_file):
    """The gate's steps only (02_train, 03_evaluate): the interval is the subject, not the EDA."""
    return nbops(root, "run", "--params", params_file, "--only", "03_evaluate")


@pytest.fixture(scope="module")
def stump_run(tmp_path_factory):
    """A project whose champion v1 is a stump (max_depth 1), trained once for the module."""
    root = make_project(tmp_path_factory.mktemp("paired") / "project")
    first = run(root, params(root, "stump", max_depth=1))
    assert first.returncode == 0, first.stdout + first.stderr
    return root, first


@pytest.fixture
def stumped(stump_run, tmp_path):
    """A copy of the stump's project for one test (it registers versions of its own)."""
    return copy_project(stump_run[0], tmp_path / "project")


def evaluation(root, name):
    return json.loads((build_dir(root, name) / "03_evaluate" / "metrics.json").read_text())


def test_progress_beyond_noise_promotes_and_a_reseeded_twin_does_not(stump_run, stumped):
    import mlflow

    project = stumped
    assert "champion: drug-classifier v1" in stump_run[1].stdout

    better = run(project, params(project, "deep", max_depth=6))
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

    twin = run(project, params(project, "twin", max_depth=6, random_state=7))
    assert twin.returncode == 0, twin.stdout + twin.stderr
    decision = evaluation(project, "twin")["decision"]
    assert decision["verdict"] == "keep champion", decision
    assert "champion: drug-classifier v2" in twin.stdout


def test_paired_false_compares_the_point_values_only(stumped):
    project = stumped
    done = run(project, params(project, "deep", max_depth=6, paired=False))
    assert done.returncode == 0, done.stdout + done.stderr
    decision = evaluation(project, "deep")["decision"]
    assert decision["interval"] is None and decision["verdict"] == "promote"
    assert "interval" not in done.stdout
