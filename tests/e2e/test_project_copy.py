"""copy_project (tests/conftest.py): a copy of the session's smoke project is a project of its
own: nothing in its store names the original, its champion loads from its own artifacts, and a
registry write to the copy leaves the original as it was."""

import os
import sqlite3
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from tests.conftest import copy_project

pytestmark = pytest.mark.e2e


def test_a_copied_project_names_only_itself_and_writes_only_itself(smoke_champion, tmp_path):
    src = smoke_champion.root
    dest = copy_project(src, tmp_path / "project")
    for path in (dest / "mlflow").rglob("*"):
        if path.is_file():
            assert str(src).encode() not in path.read_bytes(), path.relative_to(dest)
    con = sqlite3.connect(dest / "mlflow" / "mlflow.db")
    (location,) = con.execute("SELECT artifact_location FROM experiments WHERE name != 'Default'").fetchone()
    con.close()
    assert location == (dest / "mlflow" / "artifacts").resolve().as_uri()

    original, copy = (MlflowClient(f"sqlite:///{p / 'mlflow' / 'mlflow.db'}") for p in (src, dest))
    champion = copy.get_model_version_by_alias("drug-classifier", "champion")
    source = copy.get_model_version_download_uri("drug-classifier", champion.version)
    assert source.startswith((dest / "mlflow" / "artifacts").resolve().as_uri()), source
    code = (
        "from pathlib import Path; from nbops.ml.registry import load_model; "
        f"m = load_model('models:/drug-classifier/{champion.version}', dst=Path('loaded')); "
        "print(type(m).__name__)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{dest / 'mlflow' / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip()

    copy.set_registered_model_tag("drug-classifier", "copied", "yes")
    assert "copied" not in original.get_registered_model("drug-classifier").tags
