"""The pipeline and sweeps against a PostgreSQL-backed `mlflow server` on 127.0.0.1 (no Docker):
runs, model versions, artifacts and the champion alias all go over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from nbops.layout import sweep_reports_dir
from tests.conftest import make_project, nbops

MODEL = "drug-classifier"


@pytest.fixture(scope="module")
def team_project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("team-project") / "project")


def client_for(server):
    import mlflow

    return mlflow.MlflowClient(server.uri)


def test_pipeline_and_sweep_go_to_the_postgres_backed_server(team_server, team_project):
    pg, server = team_server
    env = {"MLFLOW_TRACKING_URI": server.uri}
    run = nbops(
        team_project, "run", "--params", "params/smoke.yaml", "--only", "03_evaluate", env=env, timeout=900
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"champion: {MODEL} v1" in run.stdout
    assert not (team_project / "mlflow").exists()  # nothing went to a local store

    sweep = nbops(team_project, "sweep", "--sweep", "params/sweeps/smoke.yaml", env=env, timeout=900)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    data = json.loads((sweep_reports_dir(team_project, "smoke") / "sweep.json").read_text())
    assert [p["status"] for p in data["points"]] == ["ok", "ok"]
    assert not (team_project / "mlflow").exists()

    client = client_for(server)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]
    champion = client.get_model_version_by_alias(MODEL, "champion")
    # the best point ties or beats v1 (max_depth 6 is smoke.yaml's own model): the gate decided
    best = data["best"]["challenger"]["version"]
    expected = str(best) if data["decision"]["verdict"] == "promote" else "1"
    assert str(champion.version) == expected
    assert client.get_model_version(MODEL, best).tags["nbops.gate.verdict"] == data["decision"]["verdict"]
    # the model's files went through the server's artifact proxy into its destination folder
    assert client.get_run(champion.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    assert any(server.artifacts.rglob("model.skops"))
    # and the runs are rows in PostgreSQL
    parent = data["points"][0]["parent_run_id"]
    assert pg.psql("SELECT count(*) FROM runs", db="mlflow") == "4"  # pipeline run, sweep parent, 2 points
    rows = pg.psql(
        f"SELECT count(*) FROM tags WHERE key = 'mlflow.parentRunId' AND value = '{parent}'", db="mlflow"
    )
    assert rows == "2"


def test_two_sweeps_at_once_against_the_same_server_keep_every_run(team_server, team_project):
    pg, server = team_server
    client = client_for(server)
    before = {str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")}
    for name, depths in (("left", [3, 4]), ("right", [5, 7])):
        body = {"name": name, "base": "params/smoke.yaml", "grid": {"model.params.max_depth": depths}}
        (team_project / "params" / "sweeps" / f"{name}.yaml").write_text(yaml.safe_dump(body))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_TRACKING_URI"] = server.uri
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nbops",
                "sweep",
                "--sweep",
                f"params/sweeps/{name}.yaml",
                "--workers",
                "1",
            ],
            cwd=team_project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("left", "right")
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=1200))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err

    experiment = client.get_experiment_by_name(MODEL)
    for name in ("left", "right"):
        data = json.loads((sweep_reports_dir(team_project, name) / "sweep.json").read_text())
        parent = data["points"][0]["parent_run_id"]
        assert client.get_run(parent).info.status == "FINISHED"
        children = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
        )
        assert sorted(r.info.run_id for r in children) == sorted(
            p["challenger"]["run_id"] for p in data["points"]
        )
        assert all(r.info.status == "FINISHED" for r in children)
    after = {str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'")}
    assert len(after - before) == 4  # four new, distinct versions: none lost, none overwritten
    assert client.get_model_version_by_alias(MODEL, "champion") is not None
