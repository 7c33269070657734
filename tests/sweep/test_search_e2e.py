"""`search: optuna` end to end on params/smoke.yaml through the CLI: seeded trials repeat in a
fresh project, a resumed study runs only its new trials, the local pool in parallel draws the
same startup trials as serial, the report carries the study's figures, the parent run its summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest

from nbops.sweep import search
from nbops.sweep.spec import load_sweep
from tests.conftest import make_project, nbops
from tests.sweep.test_search import fake_metric
from tests.sweep.test_sweep import dask_cluster, worker_pids  # noqa: F401 (a fixture)

SEARCH = "params/sweeps/smoke-optuna.yaml"  # seed 7, two params, TPE's random startup phase


def sweep_json(root: Path) -> dict:
    return json.loads((root / "reports" / "sweep" / "smoke-optuna" / "sweep.json").read_text())


def run_search(root: Path, *args: str) -> dict:
    result = nbops(root, "sweep", "--sweep", SEARCH, *args, timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    return {"stdout": result.stdout, **sweep_json(root)}


def trials(data: dict) -> list[tuple[int, dict, float]]:
    return [(p["trial"], p["overrides"], p["challenger"]["metrics"]["macro_f1"]) for p in data["points"]]


def client(root: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")


@pytest.fixture(scope="module")
def serial_search(tmp_path_factory) -> tuple[Path, dict]:
    """Two trials, one at a time, in a fresh project: (the project, what the search reported).
    The seeded search test resumes this project; the parallel test reads only the report."""
    one = make_project(tmp_path_factory.mktemp("search") / "one")
    return one, run_search(one, "--trials", "2", "--workers", "1")


def test_seeded_search_repeats_resumes_and_reports(serial_search, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (one, first), two = serial_search, make_project(tmp_path / "two")
    assert "2 new trial(s) after 0, 1 at once on a local pool" in first["stdout"]
    again = run_search(two, "--trials", "2", "--workers", "1")
    assert trials(again) == trials(first)  # same seed, fresh project: the same trials and values
    assert [t for t, _, _ in trials(first)] == [0, 1]
    assert len({json.dumps(o) for _, o, _ in trials(first)}) == 2

    resumed = run_search(one, "--workers", "1")  # n_trials 3 in the file: one more
    assert "1 new trial(s) after 2" in resumed["stdout"]
    assert resumed["points"][:2] == first["points"]  # kept as they were: same runs, same versions
    assert [p["trial"] for p in resumed["points"]] == [0, 1, 2]
    parents = {p["parent_run_id"] for p in resumed["points"]}
    assert len(parents) == 2  # the third trial is a child of the second sweep's parent run
    new_parent = resumed["points"][2]["parent_run_id"]
    c = client(one)
    parent = c.get_run(new_parent)
    children = c.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{new_parent}'"
    )
    assert [r.data.tags["nbops.sweep_point"] for r in children] == [resumed["points"][2]["id"]]
    best = resumed["best"]
    tags = parent.data.tags
    assert tags["nbops.optuna.best_trial"] == str(best["trial"])
    assert float(tags["nbops.optuna.best_value"]) == best["challenger"]["metrics"]["macro_f1"]
    assert json.loads(tags["nbops.optuna.best_params"]) == best["overrides"]
    assert (tags["nbops.optuna.trials_complete"], tags["nbops.optuna.trials_failed"]) == ("3", "0")
    # the best trial went through the gate and is challenger (and champion: there was none before)
    version = c.get_model_version_by_alias("drug-classifier", "challenger").version
    assert str(version) == best["challenger"]["version"]
    assert resumed["decision"]["verdict"] in ("promote", "keep champion")

    done = run_search(one, "--workers", "1")
    assert "the study has 3 trial(s) of 3: none to run" in done["stdout"]
    assert done["points"] == resumed["points"]

    report = one / "reports" / "sweep" / "smoke-optuna"
    html = (report / "index.html").read_text()
    for name in ("optuna_history.png", "optuna_importances.png"):
        assert f'<img src="{name}"' in html
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "3 trials complete, 0 failed" in html
    assert (one / "mlflow" / "optuna.db").is_file()


def test_the_local_pool_in_parallel_asks_the_same_startup_trials_as_serial(
    serial_search, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    a, parallel = serial_search[1], make_project(tmp_path / "parallel")
    b = run_search(parallel, "--trials", "2", "--workers", "2")
    assert re.search(r"2 new trial\(s\) after 0, 2 at once on a local pool", b["stdout"]), b["stdout"]
    assert trials(b) == trials(a)
    assert b["best"]["trial"] == a["best"]["trial"]
    # both trials ran at once: the second started before the first finished
    started = sorted(
        json.loads((parallel / "build" / "sweeps" / "smoke-optuna" / p["id"] / "worker.json").read_text())[
            "started"
        ]
        for p in b["points"]
    )
    assert started[1] - started[0] < min(p["seconds"] for p in b["points"])


def test_dask_runs_the_trials_asked_as_serial_asks_them(project, dask_cluster):  # noqa: F811
    """On a Dask cluster of 2 workers, 2 trials at once: the same trial params as a serial study
    with the same seed draws (TPE's startup draws do not depend on the metric values)."""
    data = run_search(project, "--trials", "2", "--scheduler", dask_cluster.scheduler_address)
    assert f"2 at once on Dask at {dask_cluster.scheduler_address}" in data["stdout"]
    loaded = load_sweep(SEARCH, project)
    assert loaded.search is not None
    serial = optuna.create_study(
        sampler=optuna.samplers.TPESampler(seed=loaded.search.seed), direction="maximize"
    )
    search.drive(serial, loaded.search, 2, 1, fake_metric)
    assert [o for _, o, _ in trials(data)] == [t.params for t in serial.trials]
    ran_on = {
        json.loads((project / "build" / "sweeps" / "smoke-optuna" / p["id"] / "worker.json").read_text())[
            "pid"
        ]
        for p in data["points"]
    }
    assert ran_on <= worker_pids(dask_cluster)
    assert [p["status"] for p in data["points"]] == ["ok", "ok"]
