"""Shared fixtures. A `project` is a temp folder laid out like the repo (notebooks/, params/)
with its own MLflow store, so tests never touch the developer's build/, reports/ or registry."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DRUG200 = REPO.parent / "shared" / "data" / "drug200.csv"


def pytest_configure(config):
    """No kernels kept warm between the suite's runs (nbops.runner.spares): hundreds of pipeline runs
    would each leave kernels idling for minutes. tests/*/test_spares*.py turn them on.

    One OpenMP/BLAS thread per process (a user's own setting wins): `make test` runs two workers
    on two cores, each starting kernels, so every core is taken; a library that starts a thread
    per core then has its threads spin at each barrier for a core another process holds
    (scikit-learn's HistGradientBoosting test took 60 s in the suite; the four factory models'
    test takes 7 s alone)."""
    os.environ["NBOPS_KEEP_WARM_S"] = "0"
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")


# Under pytest-xdist (`make test`: `-n 2 --dist loadfile`) the tests of one file share a worker,
# so a module fixture (a pipeline run, a server) is built once per run, not once per worker. The
# browser and container suites share one worker: they share the session's browser and its
# dashboard and Space servers, and `make space-serve` builds the repo's build/space-venv, which
# two workers must not build at once. (`--dist loadgroup` with xdist_group markers would say the
# same, but xdist 3.8.0 under pytest 9.2 ignores the markers: tried, tests of one group ran on
# both workers.)
SHARED_WORKER = {"browser": "browser", "container": "browser"}


def scope_of(nodeid: str) -> str:
    """The worker-sharing scope of a test: its file, or its suite's name in SHARED_WORKER."""
    path = nodeid.split("::", 1)[0]
    parts = path.split("/")
    return SHARED_WORKER.get(parts[1], path) if len(parts) > 2 and parts[0] == "tests" else path


# Seconds a test of each suite takes, roughly (`--durations=0` on 2 cores, both workers busy): the
# order scopes are handed out in. xdist hands out the scopes with the most tests first, so a
# unit-test file of 80 quick tests goes before an e2e file of three pipelines, which can leave a
# long file for the end, one worker busy and the other done (a guard against a tail: the suite is
# CPU-bound, so the order does not change its total).
SECONDS_PER_TEST = {
    "e2e": 20,
    "container": 15,
    "team": 15,
    "sweep": 10,
    "faults": 8,
    "browser": 6,
    "notebooks": 3,
}
QUICK_TEST_S = 0.3  # unit, data, model, workflows


def expected_seconds(nodeids) -> float:
    """What a scope's tests should take, from SECONDS_PER_TEST."""
    total = 0.0
    for nodeid in nodeids:
        parts = nodeid.split("::", 1)[0].split("/")
        total += SECONDS_PER_TEST.get(parts[1], QUICK_TEST_S) if len(parts) > 2 else QUICK_TEST_S
    return total


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedWorkerScheduling(LoadFileScheduling):
        """Scopes of scope_of, the longest first (the quick ones fill in at the end)."""

        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

        def _assign_work_unit(self, node) -> None:
            if not self.ordered:
                queue = sorted(self.workqueue.items(), key=lambda item: -expected_seconds(item[1]))
                self.workqueue.clear()
                self.workqueue.update(queue)
                self.ordered = True
            super()._assign_work_unit(node)

    return SharedWorkerScheduling(config, log)


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


def copy_project(src: Path, dest: Path) -> Path:
    """A copy of project `src` at `dest` whose MLflow store is its own: the sqlite store records
    artifact locations as absolute paths and file URIs (nbops.ml.tracking._local_artifact_root)
    and MLmodel files hold absolute paths too, so every text cell and file of mlflow/ naming `src`
    is rewritten to name `dest`. build/ and reports/ are left byte for byte: the step stamps hash
    their products, so the copy's steps stay cached (the no-op fast path, keyed by the project's
    path, takes one full-path run in the copy to arm again)."""
    shutil.copytree(src, dest, symlinks=True)
    old, new = str(src.resolve()), str(dest.resolve())
    for path in (dest / "mlflow").rglob("*"):
        if path.is_file() and not path.is_symlink() and path.name != "mlflow.db":
            data = path.read_bytes()
            if old.encode() in data:
                path.write_bytes(data.replace(old.encode(), new.encode()))
    db = dest / "mlflow" / "mlflow.db"
    if db.is_file():
        con = sqlite3.connect(db)
        with con:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                for col in con.execute(f'PRAGMA table_info("{table}")').fetchall():
                    if col[2].upper() in ("TEXT", "") or "CHAR" in col[2].upper():
                        con.execute(
                            f'UPDATE "{table}" SET "{col[1]}" = replace("{col[1]}", ?, ?) '
                            f'WHERE instr("{col[1]}", ?) > 0',
                            (old, new, old),
                        )
        con.close()
    return dest


def nbops(root: Path, *args: str, env: dict | None = None, timeout: int = 600):
    """Run `python -m nbops ...` in `root` as a user would; returns CompletedProcess (python_m)."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update(env or {})
    return python_m("nbops", list(args), Path(root), full_env, timeout)


def python_m(module: str, args: list[str], cwd: Path, env: dict, timeout: float):
    """`python -m <module> <args>` in `cwd` with exactly `env`, output captured as text. The
    process is forked from this test process's CLI parent, which has done the CLI's imports once
    (tests/forked_cli.py, Linux only: forking after these imports is unsafe on macOS);
    `NBOPS_TEST_FORKED_CLI=0` starts each one as a new interpreter."""
    if sys.platform.startswith("linux") and os.environ.get("NBOPS_TEST_FORKED_CLI", "1") != "0":
        from tests.forked_cli import cli_parent

        return cli_parent().run(args, cwd, env, timeout, module=module)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
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


@pytest.fixture
def smoke_project(smoke_champion, tmp_path, monkeypatch) -> Path:
    """A project just after the smoke pipeline's first run (champion v1, build/ and reports/
    current): a copy of the session's smoke champion, for a test that would begin with that run."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return copy_project(smoke_champion.root, tmp_path / "project")


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


# Sentinel secrets in the environment of the shared smoke run (as CI has them): tests/faults
# checks that none reaches a file, a log line, the store or the Space folder.
SECRETS = {
    "MLFLOW_TRACKING_PASSWORD": "sentinel-mlflow-pw-7f3a9c1e",
    "HF_TOKEN": "hf_sentinelTOKEN0e8d2b6a5c4f",
}
# Not a secret: MLflow records it as the run's user (the `mlflow.user` tag), by design.
SECRET_ENV = {**SECRETS, "MLFLOW_TRACKING_USERNAME": "ci-user"}


@dataclass(frozen=True)
class SmokeChampion:
    """The smoke pipeline's project (a champion in its store, build/ and reports/) and its Space
    folder; `run` and `space` are what `nbops run` and `make space` said."""

    root: Path
    run: subprocess.CompletedProcess
    space: subprocess.CompletedProcess

    @property
    def space_dir(self) -> Path:
        return self.root / "space"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow' / 'mlflow.db'}"


def _train_smoke_champion(root: Path) -> dict:
    make_project(root)
    run = nbops(root, "run", "--params", "params/smoke.yaml", env=SECRET_ENV)
    assert run.returncode == 0, run.stderr + run.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBOPS_")} | SECRET_ENV
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    args = ["make", "-s", "-C", str(REPO), "space", f"PARAMS={root / 'params' / 'smoke.yaml'}"]
    space = subprocess.run(
        [*args, f"SPACE_DIR={root / 'space'}"], env=env, capture_output=True, text=True, timeout=300
    )
    return {
        name: {"args": proc.args, "returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
        for name, proc in (("run", run), ("space", space))
    }


@pytest.fixture(scope="session")
def smoke_champion(tmp_path_factory) -> SmokeChampion:
    """The smoke champion, trained once per `make test` run for every suite that only reads it
    (a test that writes to it takes `copy_project(smoke_champion.root, tmp_path / ...)`). With
    pytest-xdist the workers share it: the first builds it under a file lock in the run's common
    temp folder, the others read what it wrote."""
    import fcntl

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the workers of this run
    root, record = base / "smoke-champion" / "project", base / "smoke-champion.json"
    with open(base / "smoke-champion.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not record.is_file():
            shutil.rmtree(root.parent, ignore_errors=True)  # a half-built one of a failed attempt
            record.write_text(json.dumps(_train_smoke_champion(root)))
    done = {k: subprocess.CompletedProcess(**v) for k, v in json.loads(record.read_text()).items()}
    return SmokeChampion(root, done["run"], done["space"])
