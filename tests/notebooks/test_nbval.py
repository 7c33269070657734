"""Notebook regression tests: nbval re-executes each notebook as the smoke run executed it
(parameters injected, outputs stored) and compares the cells marked `# NBVAL_CHECK_OUTPUT`
(lax mode: other cells must run but may print anything). Volatile text: sanitize.cfg."""

import os
import subprocess
from pathlib import Path

import pytest

from nbops.layout import build_dir
from tests.conftest import python_m

HERE = Path(__file__).parent
STEPS = ("01_eda", "02_train", "03_evaluate")


def nbval(executed: Path, tracking_uri: str) -> subprocess.CompletedProcess:
    """nbval (lax) on an executed notebook, its kernel given the project's store."""
    args = [
        "--nbval-lax",
        "--nbval-current-env",
        str(executed),
        "--nbval-sanitize-with",
        str(HERE / "sanitize.cfg"),
        "-p",
        "no:cacheprovider",
        "-q",
        "--rootdir",
        str(executed.parent),
        "-c",
        os.devnull,
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    return python_m("pytest", args, executed.parent, env, timeout=600)


@pytest.mark.parametrize("step", STEPS)
def test_notebook_outputs_match_on_reexecution(smoke_project_copy, step):
    executed = build_dir(smoke_project_copy, "smoke") / step / f"{step}.ipynb"
    source = executed.read_text()
    assert "# NBVAL_CHECK_OUTPUT" in source, "each notebook marks the cells whose output is the contract"
    res = nbval(executed, f"sqlite:///{smoke_project_copy / 'mlflow' / 'mlflow.db'}")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and " failed" not in res.stdout


@pytest.fixture(scope="module")
def houses_project(tmp_path_factory):
    """A regression project (tests/regression_table.py) after one pipeline run."""
    import yaml

    from tests.conftest import make_project, nbops
    from tests.regression_table import house_table, regression_params

    root = make_project(tmp_path_factory.mktemp("houses") / "project")
    house_table(300).to_csv(root / "data" / "raw" / "houses.csv", index=False)
    raw = regression_params("data/raw/houses.csv", "ridge", {"alpha": 1.0})
    (root / "params" / "houses.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    run = nbops(root, "run", "--params", "params/houses.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    return root


@pytest.mark.parametrize("step", STEPS)
def test_a_regression_projects_notebooks_match_on_reexecution(houses_project, step):
    """The same notebooks on a regression table: the contract cells give the same text again."""
    executed = build_dir(houses_project, "houses") / step / f"{step}.ipynb"
    res = nbval(executed, f"sqlite:///{houses_project / 'mlflow' / 'mlflow.db'}")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and " failed" not in res.stdout
