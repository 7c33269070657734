"""Cold installs: `make setup` (uv, exact pins, bytecode compiled) into an empty venv with an
empty uv cache, and the same requirements with plain pip and no cache, for comparison.

Both work on a temp copy of what setup reads (Makefile, requirements*.txt, pyproject.toml, src/),
never on the repo's own .venv."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from benchmarks.project import REPO, clean_env

FILES = ("Makefile", "requirements.txt", "requirements-dev.txt", "pyproject.toml", "README.md")


def _copy_inputs(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in FILES:
        if (REPO / name).exists():
            shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def _timed(cmd: list[str], cwd: Path, env: dict[str, str], what: str) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode:
        raise RuntimeError(f"{what} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def uv_setup_cold(work: Path) -> float:
    root = _copy_inputs(work / "uv-project")
    env = clean_env(UV_CACHE_DIR=str(work / "uv-cache"))
    env.pop("VIRTUAL_ENV", None)
    return _timed(["make", "-s", "setup"], root, env, "make setup")


def pip_setup_cold(work: Path) -> float:
    root = _copy_inputs(work / "pip-project")
    env = clean_env(PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("VIRTUAL_ENV", None)

    def script():
        subprocess.run(["python3", "-m", "venv", ".venv"], cwd=root, env=env, check=True)
        pip = [".venv/bin/pip", "install", "--quiet", "--no-cache-dir"]
        subprocess.run(
            [*pip, "-r", "requirements.txt", "-r", "requirements-dev.txt"], cwd=root, env=env, check=True
        )
        subprocess.run([*pip, "--no-deps", "-e", "."], cwd=root, env=env, check=True)

    t = time.perf_counter()
    script()
    return time.perf_counter() - t


def bench_setup(rounds: int, samples: dict[str, list], work: Path) -> None:
    for r in range(rounds):
        for name in ("uv", "pip") if r % 2 == 0 else ("pip", "uv"):
            folder = work / f"setup-{name}-{r}"
            folder.mkdir()
            if name == "uv":
                samples["setup_cold_s"].append(uv_setup_cold(folder))
            else:
                samples["pip_setup_cold_s"].append(pip_setup_cold(folder))
            shutil.rmtree(folder, ignore_errors=True)
        print(
            f"  setup round {r + 1}/{rounds}: make setup (uv) {samples['setup_cold_s'][-1]:.1f}s  "
            f"pip {samples['pip_setup_cold_s'][-1]:.1f}s",
            flush=True,
        )
