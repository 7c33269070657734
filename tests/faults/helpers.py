"""Shared pieces of the fault and hostile-input tests: free ports, servers the tests start in
their own process groups (stopped by that group id only), and scans of what a run wrote."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchmarks.processes import MLFLOW_SERVER_ENV, free_port, stop_group
from tests.conftest import REPO

VENV_BIN = Path(sys.executable).parent
# An HTML tag that would run script: <script ...>, or any tag carrying an on*= handler.
SCRIPT_TAG = re.compile(r"<\s*script\b", re.IGNORECASE)
EVENT_ATTR = re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.IGNORECASE | re.DOTALL)


def output_files(*folders: Path, suffixes=(".html", ".md", ".ipynb", ".json", ".txt", ".log", ".yaml")):
    """Every text product under the folders (reports, build, a Space folder)."""
    for folder in folders:
        if folder.exists():
            for path in sorted(folder.rglob("*")):
                if path.is_file() and path.suffix in suffixes:
                    yield path


def script_tags(text: str) -> list[str]:
    return SCRIPT_TAG.findall(text)


def event_attributes(text: str) -> list[str]:
    return [m.group(0)[-60:] for m in EVENT_ATTR.finditer(text)]


class Process:
    """A command in its own session (process group); `stop` signals that group only."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None, cwd=None):
        self.args = args
        self.log = log
        self._log_file = open(log, "ab")
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> None:
        stop_group(self.proc, sig, timeout=timeout, linger=timeout)  # workers and kernels too
        if not self._log_file.closed:
            self._log_file.close()


def wait_http(url: str, proc: Process, timeout: float = 120, ok=(200,)) -> float:
    """Poll `url` until it answers one of `ok`; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if not proc.alive():
            raise RuntimeError(f"{proc.args[0]} exited with {proc.proc.returncode}:\n{proc.log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                if resp.status in ok:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout} s:\n{proc.log.read_text()[-4000:]}")


def start_mlflow_server(store: Path, port: int, log: Path) -> Process:
    """`mlflow server` on 127.0.0.1:port, sqlite backend and proxied artifacts under `store`."""
    store.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | MLFLOW_SERVER_ENV
    proc = Process(
        [
            str(VENV_BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            (store / "artifacts").as_uri(),
        ],
        log,
        env=env,
        cwd=store,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=120)
    except BaseException:
        proc.stop()
        raise
    return proc


def start_voila(project: Path, log: Path, *extra: str) -> tuple[Process, str]:
    """Voila on the repo's dashboard with the project's config (deploy/voila) plus `extra` flags,
    on 127.0.0.1, showing the champion of the smoke `project`; returns the process and its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBOPS_", "MLFLOW_"))}
    env.update(
        NBOPS_PARAMS=str(project / "params" / "smoke.yaml"),
        NBOPS_ROOT=str(REPO),
        MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}",
    )
    proc = Process(
        [
            str(VENV_BIN / "voila"),
            "notebooks/dashboard.ipynb",
            "--Voila.config_file_paths=deploy/voila",
            "--Voila.ip=127.0.0.1",
            f"--port={port}",
            "--no-browser",
            *extra,
        ],
        log,
        env=env,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/", proc, timeout=180)
    except BaseException:
        proc.stop()
        raise
    return proc, url


class Payload:
    """Writes `marker` when a loader restores it: by unpickling (`__reduce__`) or, in skops,
    by restoring its state (`__setstate__`)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("pwned",))

    def __getstate__(self):
        return {"marker": self.marker}

    def __setstate__(self, state):
        Path(state["marker"]).write_text("pwned")
        self.__dict__.update(state)
