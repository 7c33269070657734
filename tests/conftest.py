"""Shared fixtures. A `project` is a temp folder laid out like the repo (notebooks/, params/)
with its own MLflow store, so tests never touch the developer's build/, reports/ or registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DRUG200 = REPO.parent / "shared" / "data" / "drug200.csv"


def pytest_configure(config):
    """No kernels kept warm between the suite's runs (nbops.runner.spares): hundreds of pipeline runs
    would each leave kernels idling for minutes. tests/*/test_spares*.py turn them on."""
    os.environ["NBOPS_KEEP_WARM_S"] = "0"


def make_project(path: Path) -> Path:
    for folder in ("notebooks", "params"):
        shutil.copytree(REPO / folder, path / folder)
    (path / "data" / "raw").mkdir(parents=True)
    return path


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A fresh project folder; MLFLOW_TRACKING_URI unset so the store lives inside it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return make_project(tmp_path / "project")


def nbops(root: Path, *args: str, env: dict | None = None, timeout: int = 600):
    """Run `python -m nbops ...` in `root` as a user would; returns CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "nbops", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def run_coroutine(coro):
    """asyncio.run(coro) in a thread of its own: the session's sync-playwright `browser` fixture
    keeps an event loop running in the main thread for the rest of the session, so there
    asyncio.run() refuses to start in any test that runs after a browser test."""
    import asyncio
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def write_params(root: Path, name: str, edit) -> Path:
    """Copy params/smoke.yaml to params/<name>.yaml after `edit(dict)` changed it."""
    import yaml

    raw = yaml.safe_load((root / "params" / "smoke.yaml").read_text())
    edit(raw)
    path = root / "params" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def browser():
    """One Debian-chromium browser (playwright, sync API) for the whole session: defined here,
    once, because two sync-playwright instances cannot run in one process."""
    from playwright.sync_api import sync_playwright

    from benchmarks.chromium import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
