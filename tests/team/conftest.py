"""A real team server for the tests: Debian's PostgreSQL (a throwaway cluster in a temp dir on a
free 127.0.0.1 port) behind a real `mlflow server` that proxies artifacts over HTTP.

Both are stopped by exactly what this file started: `pg_ctl stop` on our own data directory, and
the process group of the `mlflow server` process we spawned (its uvicorn workers live in it)."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from benchmarks.processes import MLFLOW_SERVER_ENV, free_port, stop_group


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _as_db_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {result.returncode}: {result.stderr.strip()[-500:]}")
    return result


class Postgres:
    def __init__(self):
        # its own folder in the system temp dir: pytest's are private to root, and the cluster
        # runs as `postgres` when we are root
        self.dir = Path(tempfile.mkdtemp(prefix="nbops-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user = "nbops"
        self.password = secrets.token_hex(12)
        self.started = False

    def start(self) -> None:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        os.chmod(pwfile, 0o600)
        _run(
            _as_db_user(
                [initdb, "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}", "--auth=scram-sha-256"]
            )
        )
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir}"
        _run(
            _as_db_user(
                [pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"]
            )
        )
        self.started = True
        self.psql("CREATE DATABASE mlflow")

    def psql(self, sql: str, db: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": self.password}
        cmd = [_pg_bin("psql") or "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", db]
        return _run([*cmd, "-tAc", sql], env=env).stdout.strip()

    @property
    def uri(self) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/mlflow"

    def stop(self) -> None:
        if self.started:
            _run(_as_db_user([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]))
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)


class MlflowServer:
    def __init__(self, base: Path, backend_uri: str):
        self.port = free_port()
        self.artifacts = base / "artifacts"
        self.log = base / "mlflow-server.log"
        self.backend_uri = backend_uri
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> None:
        mlflow = str(Path(sys.executable).parent / "mlflow")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [
                    mlflow, "server",
                    "--backend-store-uri", self.backend_uri,
                    "--artifacts-destination", str(self.artifacts),
                    "--serve-artifacts",
                    "--host", "127.0.0.1",
                    "--port", str(self.port),
                    # one process: uvicorn's multi-worker supervisor kills children that start
                    # slowly (seen at load 10 on 2 cores); the app serves requests in threads
                    "--workers", "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ | MLFLOW_SERVER_ENV,
                start_new_session=True,  # its own process group: stopped as one, nothing else touched
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(1)
        raise RuntimeError(f"mlflow server not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        stop_group(self.proc, linger=0)


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """(Postgres, MlflowServer) for the module; both stopped at the end whatever happened."""
    base = tmp_path_factory.mktemp("team")
    pg = Postgres()
    server = None
    try:
        pg.start()
        server = MlflowServer(base, pg.uri)
        server.start()
        yield pg, server
    finally:
        if server is not None:
            server.stop()
        pg.stop()
