"""Notebook regression tests: nbval re-executes each notebook as the smoke run executed it
(parameters injected, outputs stored) and compares the cells marked `# NBVAL_CHECK_OUTPUT`
(lax mode: other cells must run but may print anything). Volatile text: sanitize.cfg."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbops.layout import build_dir

HERE = Path(__file__).parent
STEPS = ("01_eda", "02_train", "03_evaluate")


@pytest.mark.parametrize("step", STEPS)
def test_notebook_outputs_match_on_reexecution(smoke_project_copy, step):
    executed = build_dir(smoke_project_copy, "smoke") / step / f"{step}.ipynb"
    source = executed.read_text()
    assert "# NBVAL_CHECK_OUTPUT" in source, "each notebook marks the cells whose output is the contract"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{smoke_project_copy / 'mlflow' / 'mlflow.db'}"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
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
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=executed.parent,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and " failed" not in res.stdout
