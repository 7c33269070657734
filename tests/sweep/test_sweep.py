"""Sweeps end to end: the CLI in a temp project (local pool and a Dask LocalCluster of separate
worker processes on 127.0.0.1), bad points stopped before any kernel, a killed worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nbops.layout import build_root, reports_index, reports_root, sweep_build_dir, sweep_reports_dir
from nbops.sweep.spec import SweepError, load_sweep
from tests.conftest import nbops
from tests.sweep.processes import wait_until_none_left

SMOKE_SWEEP = "params/sweeps/smoke.yaml"


def write_sweep(root: Path, name: str, body: dict) -> str:
    path = root / "params" / "sweeps" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return f"params/sweeps/{name}.yaml"


def mlflow_client(root: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")


def sweep_json(root: Path, name: str = "smoke") -> dict:
    return json.loads((sweep_reports_dir(root, name) / "sweep.json").read_text())


# ------------------------------------------------------------------ validation, no kernel


def test_a_bad_point_stops_the_sweep_before_any_kernel_naming_point_and_key(project):
    sweep = write_sweep(
        project,
        "bad",
        {
            "base": "params/smoke.yaml",
            "grid": {"model.params.max_depth": [3, -1]},
            "points": [{"model.params.max_dept": 4}],
        },
    )
    t = time.perf_counter()
    result = nbops(project, "sweep", "--sweep", sweep, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(
        "error: params/sweeps/bad.yaml: point 2 (model.params.max_depth=-1): key 'model.params.max_depth': "
    ), result.stderr
    assert lines[1] == (
        "error: params/sweeps/bad.yaml: point 3 (model.params.max_dept=4): unknown key "
        "'model.params.max_dept' for decision_tree (did you mean 'max_depth'?)"
    ), result.stderr
    assert len(lines) == 2
    # nothing ran, nothing was written: no build folder, no store, no report
    assert not build_root(project).exists()
    assert not (project / "mlflow").exists()
    assert not reports_root(project).exists()
    assert time.perf_counter() - t < 60


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"base": "params/smoke.yaml", "grid": {"split.seed": [1, 2]}},
            r"point 1 \(split\.seed=1\): key 'split\.seed' cannot be swept "
            r"\(every point must be scored on the same held-out rows\)",
        ),
        (
            {"base": "params/smoke.yaml", "points": [{"promote": True}]},
            r"point 1 \(promote=true\): key 'promote' cannot be swept",
        ),
        (
            {"base": "params/smoke.yaml", "points": [{"model.name": "svm"}]},
            r"point 1 \(model\.name=\"svm\"\): key 'model\.name': Input should be",
        ),
        (
            {"base": "params/smoke.yaml", "points": [{"model.cv_folds.x": 2}]},
            r"point 1 \(model\.cv_folds\.x=2\): key 'model\.cv_folds\.x': 'model\.cv_folds' is not a section",
        ),
        (
            {"base": "params/smoke.yaml", "grid": {"model.params.max_depth": []}},
            r"grid key 'model\.params\.max_depth': empty list of values",
        ),
        (
            {
                "base": "params/smoke.yaml",
                "points": [{"model.params.max_depth": 2}, {"model.params.max_depth": 2}],
            },
            r"point 2 \(model\.params\.max_depth=2\): repeats point 1",
        ),
        (
            {"base": "params/nope.yaml", "points": [{}]},
            r"key 'base': params file not found: params/nope\.yaml",
        ),
        ({"base": "params/smoke.yaml"}, r"no points: give a 'grid' and/or 'points'"),
        ({"base": "params/smoke.yaml", "grd": {}}, r"unknown key 'grd'"),
    ],
)
def test_sweep_file_problems_are_one_line_naming_file_point_and_key(project, body, message):
    sweep = write_sweep(project, "bad", body)
    with pytest.raises(SweepError, match=r"^params/sweeps/bad\.yaml: " + message):
        load_sweep(sweep, project)


def test_grids_expand_to_every_combination_and_points_follow(project):
    sweep = write_sweep(
        project,
        "grid",
        {
            "base": "params/smoke.yaml",
            "grid": [
                {"model.params.max_depth": [2, 3], "model.params.min_samples_leaf": [1, 4]},
                {"model.name": ["random_forest"], "model.params.n_estimators": [10]},
            ],
            "points": [{"model.name": "logistic_regression", "model.params": {"C": 0.5}}],
        },
    )
    loaded = load_sweep(sweep, project)
    assert [p.label for p in loaded.points] == [
        "model.params.max_depth=2, model.params.min_samples_leaf=1",
        "model.params.max_depth=2, model.params.min_samples_leaf=4",
        "model.params.max_depth=3, model.params.min_samples_leaf=1",
        "model.params.max_depth=3, model.params.min_samples_leaf=4",
        'model.name="random_forest", model.params.n_estimators=10',
        'model.name="logistic_regression", model.params={"C": 0.5}',
    ]
    assert all(p.params["promote"] is False for p in loaded.points)
    assert loaded.points[-1].params["model"]["params"] == {"C": 0.5}
    # random_forest keeps the base's other hyperparameters
    assert loaded.points[4].params["model"]["params"] == {
        "max_depth": 6,
        "random_state": 42,
        "n_estimators": 10,
    }
    assert len({p.id for p in loaded.points}) == 6
    assert load_sweep(sweep, project).points[0].id == loaded.points[0].id  # stable ids: the cache folder


# ------------------------------------------------------------------ end to end


def test_local_pool_sweep_end_to_end_then_every_point_is_cached(project):
    result = nbops(project, "sweep", "--sweep", SMOKE_SWEEP, "--workers", "2", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on a local pool of 2" in result.stdout
    data = sweep_json(project)
    points = data["points"]
    assert [p["status"] for p in points] == ["ok", "ok"]
    assert [p["overrides"] for p in points] == [{"model.params.max_depth": 2}, {"model.params.max_depth": 6}]
    f1 = [p["challenger"]["metrics"]["macro_f1"] for p in points]
    best = data["best"]
    assert best["challenger"]["metrics"]["macro_f1"] == max(f1)
    assert data["decision"]["verdict"] == "promote"  # no champion yet

    client = mlflow_client(project)
    champion = client.get_model_version_by_alias("drug-classifier", "champion")
    assert str(champion.version) == best["challenger"]["version"]
    assert champion.tags["nbops.gate.verdict"] == "promote"
    # one parent run, one child run per point, tagged with its overrides
    parent_id = points[0]["parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.data.tags["nbops.sweep"] == "smoke"
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert sorted(r.data.tags["nbops.override.model.params.max_depth"] for r in children) == ["2", "6"]
    assert sorted(r.info.run_id for r in children) == sorted(p["challenger"]["run_id"] for p in points)

    report = sweep_reports_dir(project, "smoke")
    html = (report / "index.html").read_text()
    assert "Verdict: promote" in html
    for p in points:
        assert f'href="{p["id"]}/03_evaluate.html"' in html
        assert (report / p["id"] / "03_evaluate.html").exists()
        assert (report / p["id"] / "02_train.html").exists()
    assert (report / "macro_f1_vs_params.png").stat().st_size > 1000
    listing = reports_index(project).read_text()  # beside the latest run of each params file
    assert '<li><a href="sweep/smoke/index.html">sweep smoke</a></li>' in listing

    again = nbops(project, "sweep", "--sweep", SMOKE_SWEEP, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("(skipped (unchanged))") == 2, again.stdout
    assert "gate: keep champion" in again.stdout  # the same best version is already champion


def test_no_promote_decides_but_moves_no_alias(project):
    sweep = write_sweep(
        project, "one", {"base": "params/smoke.yaml", "points": [{"model.params.max_depth": 6}]}
    )
    result = nbops(project, "sweep", "--sweep", sweep, "--no-promote", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gate: not promoted (promote: false)" in result.stdout
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        mlflow_client(project).get_model_version_by_alias("drug-classifier", "champion")


# ------------------------------------------------------------------ Dask


@pytest.fixture
def dask_cluster():
    """A LocalCluster of 2 separate worker processes on 127.0.0.1. allowed-failures 0: a worker
    that dies fails its task at once (the default retries it on another worker 3 times). The
    workers are forked from a forkserver that imported distributed once, not each a new
    interpreter importing it."""
    import dask
    from distributed import LocalCluster

    settings = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.worker.multiprocessing-method": "forkserver",
    }
    with dask.config.set(settings):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    try:
        yield cluster
    finally:
        cluster.close(timeout=60)


def worker_pids(cluster) -> set[int]:
    return {w.process.process.pid for w in cluster.workers.values() if w.process and w.process.process}


def test_dask_local_cluster_runs_every_point_on_worker_processes(project, dask_cluster, monkeypatch):
    result = nbops(
        project, "sweep", "--sweep", SMOKE_SWEEP, "--scheduler", dask_cluster.scheduler_address, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"on Dask at {dask_cluster.scheduler_address}" in result.stdout
    data = sweep_json(project)
    assert [p["status"] for p in data["points"]] == ["ok", "ok"]
    ran_on = {
        json.loads((sweep_build_dir(project, "smoke") / p["id"] / "worker.json").read_text())["pid"]
        for p in data["points"]
    }
    assert ran_on <= worker_pids(dask_cluster)
    assert os.getpid() not in ran_on
    assert data["decision"]["verdict"] == "promote"
    champion = mlflow_client(project).get_model_version_by_alias("drug-classifier", "champion")
    assert str(champion.version) == data["best"]["challenger"]["version"]
    # the workers live on (the cluster's), their kernel parents and kernels do not
    wait_until_none_left(project)


def test_a_dask_worker_killed_mid_point_fails_that_point_only(project, dask_cluster):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nbops",
            "sweep",
            "--sweep",
            SMOKE_SWEEP,
            "--scheduler",
            dask_cluster.scheduler_address,
        ],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    try:
        victim = load_sweep(SMOKE_SWEEP, project).points[0]
        build = sweep_build_dir(project, "smoke") / victim.id
        deadline = time.monotonic() + 300
        while not (build / "02_train").exists():  # mid-point: training has started
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "point 1 never started training"
            time.sleep(0.5)
        pid = json.loads((build / "worker.json").read_text())["pid"]
        assert pid in worker_pids(dask_cluster)  # a worker this test started: kill exactly it
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, out + err
    assert "error: point 1 [model.params.max_depth=2]: KilledWorker: " in err, err
    data = sweep_json(project)
    first, second = data["points"]
    assert first["status"] == "failed" and "KilledWorker" in first["reason"]
    assert second["status"] == "ok"
    assert data["best"]["id"] == second["id"]
    html = (sweep_reports_dir(project, "smoke") / "index.html").read_text()
    assert "KilledWorker" in html
    # the killed point's child run (if it got that far) is closed FAILED, never left RUNNING
    client = mlflow_client(project)
    runs = client.search_runs(
        [client.get_experiment_by_name("drug-classifier").experiment_id],
        filter_string=f"tags.`nbops.sweep_point` = '{victim.id}'",
    )
    assert all(r.info.status == "FAILED" for r in runs)
