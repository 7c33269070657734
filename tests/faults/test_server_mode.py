"""The pipeline against a real `mlflow server` (sqlite backend, proxied artifacts) on 127.0.0.1:
everything goes over HTTP, a server that dies mid-run fails the step clearly, and the next run
after a restart works. The test stops only the server process group it started."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from nbops.layout import reports_dir
from tests.conftest import make_project, nbops
from tests.faults.helpers import free_port, start_mlflow_server

pytestmark = pytest.mark.e2e

MODEL = "drug-classifier"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = start_mlflow_server(base / "store", port, base / "server.log")
    state = {"proc": proc, "port": port, "base": base}
    yield state
    state["proc"].stop()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("server-mode") / "project")


def _uri(server) -> str:
    return f"http://127.0.0.1:{server['port']}"


def test_runs_versions_and_alias_go_over_http(server, root):
    res = nbops(root, "run", "--params", "params/smoke.yaml", env={"MLFLOW_TRACKING_URI": _uri(server)})
    assert res.returncode == 0, res.stderr + res.stdout
    assert not (root / "mlflow").exists(), "no local store may be created in server mode"
    client = MlflowClient(_uri(server))
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert client.get_model_version_by_alias(MODEL, "challenger").version == champion.version
    run = client.get_run(champion.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri  # the proxy
    artifacts = list((server["base"] / "store" / "artifacts").rglob("model.skops"))
    assert artifacts, "the model file went through the server's artifact proxy"
    assert f"champion: {MODEL} v{champion.version}" in res.stdout


def test_server_stopped_mid_run_fails_the_step_and_a_restart_recovers(server, root):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        MLFLOW_TRACKING_URI=_uri(server),
        # MLflow retries a refused connection for minutes by default; keep the failure prompt
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
        MLFLOW_HTTP_REQUEST_TIMEOUT="10",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbops", "run", "--params", "params/smoke.yaml", "--force"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while not any("02_train" in ln and "started" in ln for ln in lines):
            assert proc.poll() is None, "".join(lines) + proc.stderr.read()
            assert time.monotonic() < deadline, "02_train never started"
            time.sleep(0.2)
        server["proc"].stop()  # the server goes away while the train notebook runs
        stopped_at = time.monotonic()
        stderr = proc.communicate(timeout=300)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    reader.join(timeout=10)
    out = "".join(lines)
    assert proc.returncode != 0, out + stderr
    assert "failed at 02_train" in stderr, out + stderr
    assert "Traceback" not in stderr
    assert time.monotonic() - stopped_at < 240
    summary = (reports_dir(root, "smoke") / "summary.md").read_text()
    assert "Pipeline failed at 02" in summary

    # restart on the same port and store: the next run works and records everything
    server["proc"] = start_mlflow_server(
        server["base"] / "store", server["port"], server["base"] / "server-restarted.log"
    )
    res = nbops(root, "run", "--params", "params/smoke.yaml", env={"MLFLOW_TRACKING_URI": _uri(server)})
    assert res.returncode == 0, res.stderr + res.stdout
    client = MlflowClient(_uri(server))
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert len(versions) >= 2
    assert client.get_model_version_by_alias(MODEL, "champion") is not None
    assert not (root / "mlflow").exists()
