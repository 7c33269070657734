"""Two pipelines at once: on the same project the second waits for the first (one line says
so); on two projects sharing one fresh sqlite store, the store is initialised once. Either
way both finish, both runs are recorded, and the store works afterwards."""

import os
import subprocess
import sys

from mlflow import MlflowClient

from tests.conftest import make_project

# the steps that write the store and the registry (train, evaluate); 01_eda writes neither
STORE_STEPS = ("--only", "03_evaluate")


def start(root, *args, env=None):
    full = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "nbops", "run", "--params", "params/smoke.yaml", *STORE_STEPS, *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
    )


def finish(procs, timeout=900):
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        outs.append((p.returncode, out, err))
    return outs


def finished_runs(uri):
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return client, [r for r in runs if r.info.status == "FINISHED"]


def test_same_project_twice_the_second_waits_then_runs(tmp_path):
    root = make_project(tmp_path / "p")
    a = start(root, "--force")  # --force: the second must train again, not find it cached
    b = start(root, "--force")
    (ra, oa, ea), (rb, ob, eb) = finish([a, b])
    assert ra == 0 and rb == 0, ea + eb
    assert "waiting: another nbops run (pid" in oa + ob
    client, runs = finished_runs(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    assert len(runs) == 2
    assert len(client.search_model_versions("name='drug-classifier'")) == 2


def test_two_projects_initialise_one_fresh_store_safely(tmp_path):
    uri = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    (tmp_path / "shared").mkdir()
    roots = [make_project(tmp_path / name) for name in ("a", "b")]
    results = finish([start(r, env={"MLFLOW_TRACKING_URI": uri}) for r in roots])
    assert [code for code, _, _ in results] == [0, 0], [err[-1500:] for _, _, err in results]
    client, runs = finished_runs(uri)
    assert len(runs) == 2
    assert len(client.search_model_versions("name='drug-classifier'")) == 2
    assert client.get_model_version_by_alias("drug-classifier", "champion") is not None
