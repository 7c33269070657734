"""A regression table end to end: params file -> validate -> EDA -> train -> evaluate -> gate ->
reports, then a second run the gate keeps the champion on; and `nbops init`'s file for it."""

from __future__ import annotations

import json

import pytest
import yaml

from nbops.layout import reports_dir
from tests.conftest import nbops
from tests.regression_table import house_table, regression_params

pytestmark = pytest.mark.e2e


def write_params(project, name: str, raw: dict) -> str:
    (project / "params" / name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return f"params/{name}"


def test_a_regression_run_promotes_and_a_second_model_within_noise_keeps_the_champion(project):
    house_table(300).to_csv(project / "data" / "raw" / "houses.csv", index=False)
    first = write_params(
        project, "houses.yaml", regression_params("data/raw/houses.csv", "ridge", {"alpha": 1.0})
    )
    run = nbops(project, "run", "--params", first)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "gate: promote (challenger v1, champion before: none)" in run.stdout
    record = json.loads((reports_dir(project, "houses") / "metrics.json").read_text())
    metrics = record["challenger"]["metrics"]
    assert metrics["task"] == "regression"
    assert 4.0 < metrics["rmse"] < 20.0 and 0 < metrics["mae"] < metrics["rmse"] and metrics["r2"] > 0.8
    assert record["decision"]["metric"] == "rmse"
    summary = (reports_dir(project, "houses") / "summary.md").read_text()
    assert "| rmse (gate, lower is better) |" in summary and "Confusion" not in summary
    assert "rmse (gate, lower is better)" in (reports_dir(project, "houses") / "index.html").read_text()

    # a near twin of the champion: its RMSE is lower by 0.02 on 60 held-out rows, which is noise
    second = write_params(
        project, "houses2.yaml", regression_params("data/raw/houses.csv", "ridge", {"alpha": 0.3})
    )
    run = nbops(project, "run", "--params", second, "--only", "03_evaluate")  # the gate's steps
    assert run.returncode == 0, run.stdout + run.stderr
    record = json.loads((reports_dir(project, "houses2") / "metrics.json").read_text())
    decision = record["decision"]
    assert decision["verdict"] == "keep champion", decision
    line = decision["reasons"][-1]
    assert line.startswith("rmse -0.02") and line.endswith("on 60 held-out rows is within noise"), line
    delta = decision["interval"]["delta"]
    assert delta["high"] > 0 > delta["low"]
    assert "champion: houses-regressor v1" in run.stdout


def test_a_regression_target_that_is_not_a_number_stops_in_one_line(project):
    table = house_table(120)
    table["price"] = table["price"].astype(object)
    table.loc[9, "price"] = "call us"
    table.to_csv(project / "data" / "raw" / "houses.csv", index=False)
    params = write_params(project, "houses.yaml", regression_params("data/raw/houses.csv"))
    run = nbops(project, "run", "--params", params)
    assert run.returncode == 1
    assert "data/raw/houses.csv: column 'price' is not a number: 'call us' at line 11" in run.stderr
    assert not (project / "mlflow" / "mlflow.db").exists()  # nothing reached the registry


def test_init_on_a_regression_table_writes_a_file_that_runs_and_promotes(project):
    house_table(300).to_csv(project / "data" / "raw" / "houses.csv", index=False, sep=";")
    init = nbops(project, "init", "data/raw/houses.csv", "--target", "price")
    assert init.returncode == 0, init.stderr
    written = yaml.safe_load((project / "params" / "houses.yaml").read_text())
    assert written["task"] == "regression" and written["registry"]["model_name"] == "houses-regressor"
    run = nbops(project, "run", "--params", "params/houses.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "gate: promote (challenger v1, champion before: none)" in run.stdout
    assert "champion: houses-regressor v1" in run.stdout
