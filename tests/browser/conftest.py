"""A champion trained once per session in a temp project, the Space built from it, and servers
started on free 127.0.0.1 ports by the same `make` targets a user runs. Each server is started in
its own process group and stopped by that group id only."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.processes import free_port, ready_or_stopped, stop_group, voila_answers
from tests.conftest import REPO

SCREENSHOTS = REPO / "screenshots"
READY_TIMEOUT_S = 180


class Server:
    """A `make` target serving on 127.0.0.1:port, in its own process group."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(
            ["make", "-s", "-C", str(REPO), *[a.format(port=self.port) for a in args]],
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        """Until Voila answers a static path: a probe that starts no kernel (a GET of the page
        would hold one of 127.0.0.1's two places for 60 s, unconnected)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()}")
            if voila_answers(self.url):
                return
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT_S} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        stop_group(self.proc)  # the group we created: make + voila (which stops its kernels)
        self._log_file.close()


def base_env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBOPS_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow' / 'mlflow.db'}"
    return env


@pytest.fixture(scope="session")
def champion_project(smoke_champion) -> Path:
    """The session's smoke champion project (tests/conftest.py): read it, never write to it."""
    return smoke_champion.root


@pytest.fixture(scope="session")
def space_dir(smoke_champion) -> Path:
    """`make space` of the repo with the session's smoke champion (built once, with it)."""
    done = smoke_champion.space
    assert done.returncode == 0, done.stderr + done.stdout
    return smoke_champion.space_dir


def start(name, args, env, project) -> Server:
    return ready_or_stopped(Server(name, args, env, project / f"{name}.log"))


@pytest.fixture(scope="session")
def dashboard_server(champion_project, tmp_path_factory):
    server = start(
        "dashboard",
        ["dashboard", "PORT={port}", f"PARAMS={champion_project / 'params' / 'smoke.yaml'}"],
        base_env(champion_project),
        tmp_path_factory.mktemp("dashboard"),  # its log: the shared project is only read
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def space_server(champion_project, space_dir, tmp_path_factory):
    env = base_env(champion_project)
    env.pop("MLFLOW_TRACKING_URI")  # the Space has no tracking store: only its exported champion
    logs = tmp_path_factory.mktemp("space")
    server = start("space", ["space-serve", f"SPACE_DIR={space_dir}", "SPACE_PORT={port}"], env, logs)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def penguins(tmp_path_factory):
    """(training table, model, exported champion folder) of tests/browser/penguins.py."""
    from tests.browser.penguins import fit_penguins, penguins_table, write_exported_champion

    table = penguins_table()
    model, schema = fit_penguins(table)
    folder = write_exported_champion(tmp_path_factory.mktemp("penguins") / "champion", model, schema)
    return table, model, folder


def serve_exported(name: str, folder: Path):
    """`make dashboard` on an exported champion folder (as the Space serves its own); yields the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBOPS_", "MLFLOW_"))}
    env["NBOPS_MODEL_DIR"] = str(folder)
    server = start(name, ["dashboard", "PORT={port}"], env, folder.parent)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def penguins_server(penguins):
    """`make dashboard` on the penguins champion folder."""
    yield from serve_exported("penguins", penguins[2])


@pytest.fixture(params=["dashboard", "space"])
def server(request):
    return request.getfixturevalue(f"{request.param}_server")


@contextmanager
def own_page(browser, **context_options):
    """A page in its own browser context, closed after. Waits are long: a Voila page renders its
    notebook before "load", which on a loaded 2-core machine can take well over playwright's 30 s."""
    context = browser.new_context(**context_options)
    try:
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        pg.set_default_navigation_timeout(READY_TIMEOUT_S * 1000)
        yield pg
    finally:
        context.close()


@pytest.fixture
def page(browser):
    with own_page(browser, viewport={"width": 1280, "height": 900}, accept_downloads=True) as pg:
        yield pg
        close_tab(pg)


KERNEL_ID_JS = """() => {
    const config = document.getElementById('jupyter-config-data');
    return config ? JSON.parse(config.textContent).kernelId || null : null;
}"""


def kernel_status(origin: str, kernel_id: str) -> int:
    """HTTP status of Voila's `GET /api/kernels/<id>`: 200 while the kernel lives, 404 after."""
    try:
        with urllib.request.urlopen(f"{origin}/api/kernels/{kernel_id}", timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def close_tab(pg, timeout: float = 20) -> str | None:
    """Close the page as a visitor closes a tab (its beforeunload handlers run: Voila's page
    asks the server to shut its kernel down) and wait until that kernel is gone, so a test
    leaves no kernel behind to count against the server's caps (nbops.serve.voila_kernels: 2 per
    client address, and every test here comes from 127.0.0.1). Returns the kernel id, if any."""
    if pg.is_closed():
        return None
    try:
        kernel_id = pg.evaluate(KERNEL_ID_JS)
    except Exception:  # noqa: BLE001 - a page that never loaded has no kernel to wait for
        kernel_id = None
    origin = "/".join(pg.url.split("/")[:3])
    pg.close(run_before_unload=True)
    if not kernel_id or not origin.startswith("http"):
        return None
    deadline = time.monotonic() + timeout
    while kernel_status(origin, kernel_id) != 404:
        if time.monotonic() > deadline:
            raise AssertionError(f"kernel {kernel_id} still alive {timeout} s after its tab was closed")
        time.sleep(0.2)
    return kernel_id


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="session")
def exported_model(space_dir):
    from nbops.ml.registry import load_model_dir

    return load_model_dir(space_dir / "champion" / "model")


def copy_space(space_dir: Path, dest: Path) -> Path:
    shutil.copytree(space_dir, dest)
    return dest
