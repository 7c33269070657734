"""The built wheel installs with pip into a fresh venv and its `nbops` command runs.

The venv first gets the exact pins of requirements.txt from uv's cache (fast, no resolver), then
`pip install --no-index` of the wheel: pip may download nothing, so the wheel's declared
dependency ranges must accept the locked versions, and `pip check` must find them consistent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def uv() -> str:
    found = shutil.which("uv") or (REPO / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "no uv on PATH or in .tools/bin: run `make setup`"
    return str(found)


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert result.returncode == 0, (
        f"{' '.join(map(str, cmd))}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    )
    return result


def test_the_wheel_installs_with_pip_and_runs(tmp_path):
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    dist = tmp_path / "dist"
    run(uv(), "build", "--wheel", "--quiet", "--out-dir", dist, REPO, cwd=tmp_path)
    (wheel,) = dist.glob("*.whl")
    assert wheel.name.startswith(f"nbops-{version}-py3-none-any")
    assert "nbops/py.typed" in zipfile.ZipFile(wheel).namelist()  # type checkers read its annotations

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    run(uv(), "pip", "install", "--quiet", "--python", python, "-r", REPO / "requirements.txt")
    run(python, "-m", "pip", "install", "--quiet", "--no-index", wheel)
    run(python, "-m", "pip", "check")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    assert run(bin_dir / "nbops", "--version", cwd=tmp_path, env=env).stdout == f"nbops {version}\n"
    help_text = run(bin_dir / "nbops", "run", "--help", cwd=tmp_path, env=env).stdout
    assert help_text.startswith("usage: nbops run") and "--params" in help_text
    # the installed package, not the repository's src/
    where = run(python, "-c", "import nbops, nbops.runner; print(nbops.__file__)", cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv)
