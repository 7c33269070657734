"""Secrets in the environment (as CI has them) never reach an executed notebook, a report, the PR
summary, a log line, the MLflow store or the Space folder."""

from __future__ import annotations

import pytest

from nbops.layout import build_root, reports_dir, reports_index, reports_root
from tests.faults.conftest import SECRETS

pytestmark = pytest.mark.e2e


def _hits(data: bytes) -> list[str]:
    return [name for name, value in SECRETS.items() if value.encode() in data]


def test_run_and_space_build_succeed_with_secrets_set(smoke_run):
    assert smoke_run.space.returncode == 0, smoke_run.space.stderr + smoke_run.space.stdout
    assert "space:" in smoke_run.space.stdout


def test_no_secret_in_logs(smoke_run):
    for proc in (smoke_run.run, smoke_run.space):
        assert not _hits((proc.stdout + proc.stderr).encode()), proc.args


def test_no_secret_in_any_file_the_run_or_the_space_wrote(smoke_run):
    root = smoke_run.root
    folders = {"build": build_root(root), "reports": reports_root(root), "mlflow": root / "mlflow"}
    folders["space"] = root / "space"
    scanned = dict.fromkeys(folders, 0)
    for folder in scanned:
        for path in folders[folder].rglob("*"):
            if path.is_file():
                scanned[folder] += 1
                assert not _hits(path.read_bytes()), (
                    f"{path.relative_to(root)} holds {_hits(path.read_bytes())}"
                )
    assert all(scanned.values()), scanned
    for name in ("01_eda.ipynb", "02_train.ipynb", "03_evaluate.ipynb"):
        assert (reports_dir(root, "smoke") / "notebooks" / name).is_file()
    assert (reports_dir(root, "smoke") / "summary.md").is_file()
    assert reports_index(root).is_file()  # the listing was scanned too
    assert (root / "space" / "champion" / "model_card.json").is_file()
