"""One smoke pipeline per session for the fault tests that only need a champion: it runs with
sentinel secrets in the environment (as CI has them) and builds the Space folder from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_project, nbops

SECRETS = {
    "MLFLOW_TRACKING_PASSWORD": "sentinel-mlflow-pw-7f3a9c1e",
    "HF_TOKEN": "hf_sentinelTOKEN0e8d2b6a5c4f",
}
# Not a secret: MLflow records it as the run's user (the `mlflow.user` tag), by design.
SECRET_ENV = {**SECRETS, "MLFLOW_TRACKING_USERNAME": "ci-user"}


class SmokeRun:
    def __init__(self, root: Path, run, space):
        self.root = root
        self.run = run  # CompletedProcess of `python -m nbops run`
        self.space = space  # CompletedProcess of `python -m nbops.serve.space build`


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> SmokeRun:
    root = make_project(tmp_path_factory.mktemp("faults-smoke") / "project")
    run = nbops(root, "run", "--params", "params/smoke.yaml", env=SECRET_ENV)
    assert run.returncode == 0, run.stderr + run.stdout
    import os

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | SECRET_ENV
    space = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbops.serve.space",
            "build",
            "--params",
            str(root / "params" / "smoke.yaml"),
            "--out",
            str(root / "space"),
        ],
        cwd=Path(__file__).resolve().parents[2],  # the repo: the Space takes its package and lock from it
        capture_output=True,
        text=True,
        timeout=300,
        env=env | {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"},
    )
    return SmokeRun(root, run, space)
