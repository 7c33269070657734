"""`nbops init` as a user runs it: a params file for their table, then the pipeline on it."""

from __future__ import annotations

import pytest

from tests.conftest import nbops
from tests.unit.test_init_params import titanic_like

pytestmark = pytest.mark.e2e


def test_init_writes_a_file_the_pipeline_runs_and_promotes(project):
    titanic_like(400).to_csv(project / "data" / "raw" / "titanic.csv", index=False, sep=";")
    init = nbops(project, "init", "data/raw/titanic.csv", "--target", "survived")
    assert init.returncode == 0, init.stderr
    assert init.stdout.strip() == (
        "wrote params/titanic.yaml: check its columns and floors, "
        "then `make pipeline PARAMS=params/titanic.yaml`"
    )
    run = nbops(project, "run", "--params", "params/titanic.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "gate: promote (challenger v1, champion before: none)" in run.stdout
    assert "champion: titanic-classifier v1" in run.stdout


def test_init_refuses_in_one_line_and_writes_nothing(project):
    titanic_like().to_csv(project / "data" / "raw" / "titanic.csv", index=False)
    done = nbops(project, "init", "data/raw/titanic.csv", "--target", "Survived")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "titanic.csv: no column 'Survived'; did you mean 'survived'" in line
    assert not (project / "params" / "titanic.yaml").exists()
