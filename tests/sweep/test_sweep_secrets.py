"""The tracking URI can carry credentials; the sweep's folders are uploaded as CI artifacts.
No spec, record, log or report may hold it. The executors are faked: no kernel, no store."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import yaml

from nbops.layout import sweep_build_dir
from nbops.sweep import executors, point
from nbops.sweep import run as sweep
from tests.conftest import REPO

SENTINEL = "SENTINEL-PW"
URI = f"postgresql://u:{SENTINEL}@127.0.0.1/db"
STORE = "postgresql://127.0.0.1/db"
SMOKE_SWEEP = "params/sweeps/smoke.yaml"


def uploaded_folders() -> list[str]:
    """What sweep.yml uploads from a shard and from the aggregate job."""
    doc = yaml.safe_load((REPO / ".github" / "workflows" / "sweep.yml").read_text())
    paths = []
    for job in doc["jobs"].values():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("actions/upload-artifact@"):
                paths += [p.strip() for p in str(step["with"]["path"]).splitlines() if p.strip()]
    return paths


def files_quoting(root: Path, secret: str) -> list[str]:
    hits = []
    for folder in uploaded_folders():
        for path in (root / folder).rglob("*"):
            if path.is_file() and secret.encode() in path.read_bytes():
                hits.append(str(path.relative_to(root)))
    return hits


@pytest.fixture
def faked(project, monkeypatch):
    """The sweep with its store and its worker processes faked; each point "fails" with an error
    that quotes the URI, in its result, its log and an executed notebook."""
    envs = []

    class FakeWorker:  # executors.LocalWorker's interface: one point at a time, its result back
        def __init__(self, root, env, log):
            self.env = env

        def run(self, spec_file):
            spec = json.loads(spec_file.read_text())
            uri = self.env["MLFLOW_TRACKING_URI"]
            envs.append(uri)
            (spec_file.parent / "point.log").write_text(
                f"sqlalchemy.exc.OperationalError: could not connect to {uri}\n"
            )
            nb = Path(spec["build"]) / "02_train" / "02_train.ipynb"
            nb.parent.mkdir(parents=True, exist_ok=True)
            nb.write_text(json.dumps({"cells": [{"outputs": [{"text": f"password {SENTINEL} refused"}]}]}))
            result = {"status": "failed", "reason": f"failed at 02_train: cannot reach {uri}"}
            (spec_file.parent / "result.json").write_text(json.dumps(result))
            return result

        def close(self, grace_s=30.0):
            return 0

    monkeypatch.setattr(executors, "LocalWorker", FakeWorker)
    monkeypatch.setattr(sweep, "prepare_tracking", lambda s, selected: (URI, "parent-run"))
    monkeypatch.setattr(sweep, "finish_parent", lambda *a: None)
    return SimpleNamespace(root=project, envs=envs)


def test_the_uploaded_folders_are_the_sweeps_own():
    assert {"build/sweeps/", "reports/sweep/"} <= set(uploaded_folders())


def test_no_uploaded_file_holds_the_tracking_uri_or_its_password(faked):
    result = sweep.run_sweep(SMOKE_SWEEP, faked.root, workers=1, allow_promotion=False)
    assert faked.envs == [URI, URI]  # each point still gets the URI: in its environment
    assert [r["status"] for r in result.records] == ["failed", "failed"]
    assert files_quoting(faked.root, SENTINEL) == []
    assert files_quoting(faked.root, URI) == []
    spec = json.loads(next(sweep_build_dir(faked.root, "smoke").rglob("spec.json")).read_text())
    assert "tracking_uri" not in spec and "postgresql" not in json.dumps(spec)
    assert f"cannot reach {STORE}" in result.records[0]["reason"]  # the error still names the store


def test_a_dask_task_carries_no_credentials_and_the_worker_checks_its_own(monkeypatch, tmp_path):
    submitted = []

    class Future:
        def __init__(self, fn, args):
            self.fn, self.args = fn, args

        def result(self):
            return {"status": "failed", "reason": f"KilledWorker: {self.args}"}

    class Client:
        def __init__(self, address, timeout):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def close(self):
            pass

        def submit(self, fn, *args, key, pure):
            submitted.append(args)
            return Future(fn, args)

    fake = ModuleType("distributed")
    fake.Client = Client
    fake.as_completed = lambda futures: list(futures)
    monkeypatch.setitem(sys.modules, "distributed", fake)
    specs = {"p1": {"build": str(tmp_path / "p1")}}
    done = []
    executors.run_dask(specs, "tcp://127.0.0.1:8786", lambda pid, out: done.append(out), URI)
    assert submitted == [(specs["p1"], None, STORE)]  # the URI's credential-free form only
    local = "sqlite:////tmp/x/mlflow.db"
    submitted.clear()
    executors.run_dask(specs, "tcp://127.0.0.1:8786", lambda pid, out: None, local)
    assert submitted == [(specs["p1"], local, local)]  # nothing secret: sent as it is

    # on a worker whose environment has another store, the point fails saying what to set
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    out = point.run_point({"build": str(tmp_path / "p1")}, None, STORE)
    assert out == {
        "status": "failed",
        "reason": f"this worker's MLFLOW_TRACKING_URI is not the sweep's store {STORE}: set it in the "
        "worker's environment (a URI with credentials never travels with a point)",
    }


@pytest.mark.parametrize(
    "uri, redacted",
    [
        (URI, STORE),
        ("https://user:tok@mlflow.example.org:5000/", "https://mlflow.example.org:5000/"),
        (
            "postgresql://db.example.org/mlflow?password=x&sslmode=require",
            "postgresql://db.example.org/mlflow",
        ),
        ("sqlite:////home/me/mlflow/mlflow.db", "sqlite:////home/me/mlflow/mlflow.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("databricks", "databricks"),
    ],
)
def test_redact_uri_drops_what_can_carry_a_secret(uri, redacted):
    assert point.redact_uri(uri) == redacted
    assert point.scrub(f"at {uri}: refused", uri) == f"at {redacted}: refused"
