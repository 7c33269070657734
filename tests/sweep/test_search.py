"""`search: optuna` without kernels: bad spaces refused before anything runs, the ask-and-tell
loop (failed trials, parallel asks), the study's storage beside the tracking store, resuming,
and the report's figures."""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml

from nbops.sweep import search
from nbops.sweep.report import plot_study
from nbops.sweep.spec import SweepError, load_sweep
from tests.conftest import nbops

SPACE = {
    "model.params.max_depth": {"type": "int", "low": 2, "high": 8},
    "model.params.criterion": {"type": "categorical", "choices": ["gini", "entropy"]},
}


def write_search(root: Path, name: str = "bad", **changes) -> str:
    body = {"base": "params/smoke.yaml", "search": "optuna", "n_trials": 3, "seed": 7, "space": SPACE}
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not None}
    (root / "params" / "sweeps" / f"{name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))
    return f"params/sweeps/{name}.yaml"


def space(**dims) -> dict:
    return {**SPACE, **dims}


BAD_SPACES = [
    (
        {"space": space(**{"model.params.max_depth": {"type": "int", "low": 8, "high": 2}})},
        r"space key 'model\.params\.max_depth': low 8 is above high 2",
    ),
    (
        {"space": space(**{"model.params.ccp_alpha": {"type": "float", "low": 0, "high": 0.1, "log": True}})},
        r"space key 'model\.params\.ccp_alpha': log: true needs bounds above 0, got low 0\.0",
    ),
    (
        {"space": space(**{"model.params.max_dept": {"type": "int", "low": 2, "high": 4}})},
        r"space key 'model\.params\.max_dept' value 2: unknown key 'model\.params\.max_dept' for "
        r"decision_tree \(did you mean 'max_depth'\?\)",
    ),
    (
        {"space": space(**{"model.params.max_depth": {"type": "float", "low": 2, "high": 6}})},
        r"space key 'model\.params\.max_depth' value 2\.0: key 'model\.params\.max_depth': The 'max_depth' "
        r"parameter of DecisionTreeClassifier must be an int in the range \[1, inf\) or None\. Got 2\.0",
    ),
    (
        {"space": space(**{"model.params.criterion": {"type": "categorical", "choices": ["gini", 3]}})},
        r"space key 'model\.params\.criterion' value 3: key 'model\.params\.criterion': The 'criterion' "
        r"parameter of DecisionTreeClassifier must be a str among",
    ),
    ({"n_trials": 0}, r"key 'n_trials': Input should be greater than or equal to 1 \(got 0\)"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_SPACES)
def test_a_bad_search_space_is_one_line_naming_file_key_and_value(project, changes, message):
    sweep = write_search(project, **changes)
    with pytest.raises(SweepError, match=r"^params/sweeps/bad\.yaml: " + message) as err:
        load_sweep(sweep, project)
    assert len(err.value.problems) == 1, err.value.problems


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"space": space(**{"model.params.max_depth": {"type": "int", "low": 2, "high": 9, "step": 2}})},
            r"space key 'model\.params\.max_depth': high 9 - low 2 is not a multiple of step 2",
        ),
        (
            {"space": space(**{"split.seed": {"type": "int", "low": 1, "high": 3}})},
            r"space key 'split\.seed' value 1: key 'split\.seed' cannot be swept",
        ),
        ({"grid": {"model.params.max_depth": [2, 3]}}, r"key 'grid': not with search: optuna"),
        ({"seed": None}, r"key 'seed': required with search: optuna"),
        ({"search": None}, r"key 'space': only with search: optuna"),
        (
            {"space": space(**{"model.params.max_depth": {"type": "normal", "low": 2, "high": 3}})},
            r"key 'space\.model\.params\.max_depth': Input tag 'normal' found using 'type' does not match",
        ),
    ],
)
def test_other_search_file_problems_are_refused_naming_the_key(project, changes, message):
    sweep = write_search(project, **changes)
    with pytest.raises(SweepError, match=r"^params/sweeps/bad\.yaml: " + message):
        load_sweep(sweep, project)


@pytest.mark.parametrize(("changes", "message"), [BAD_SPACES[0], BAD_SPACES[3], BAD_SPACES[5]])
def test_the_cli_refuses_a_bad_space_before_any_kernel_or_store(project, changes, message):
    sweep = write_search(project, **changes)
    result = nbops(project, "sweep", "--sweep", sweep, timeout=300)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.match(r"error: params/sweeps/bad\.yaml: " + message, lines[0]), lines
    for folder in ("build", "mlflow", "reports"):  # no kernel ran, no store or registry was touched
        assert not (project / folder).exists(), folder


def test_the_cli_refuses_trials_below_one_before_any_store(project):
    result = nbops(project, "sweep", "--sweep", write_search(project, "ok"), "--trials", "0", timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: params/sweeps/ok.yaml: --trials 0: must be at least 1"
    assert not (project / "mlflow").exists() and not (project / "build").exists()


def test_a_good_space_loads_as_a_search_with_its_distributions(project):
    sweep = load_sweep(write_search(project, "ok"), project)
    assert sweep.points == [] and sweep.search is not None
    assert (sweep.search.n_trials, sweep.search.seed) == (3, 7)
    dists = sweep.search.distributions()
    assert dists["model.params.max_depth"] == optuna.distributions.IntDistribution(2, 8)
    assert dists["model.params.criterion"] == optuna.distributions.CategoricalDistribution(
        ["gini", "entropy"]
    )


# ------------------------------------------------------------------ storage


def test_the_study_lives_beside_the_tracking_store_never_in_mlflows_database(monkeypatch):
    monkeypatch.delenv(search.ENV_STORAGE, raising=False)
    assert search.study_storage("sqlite:////p/mlflow/mlflow.db", "s.yaml") == (
        "sqlite:////p/mlflow/optuna.db",
        {},
    )
    pg = "postgresql+psycopg2://u:pw@127.0.0.1:5432/mlflow"
    assert search.study_storage(pg, "s.yaml") == (pg, {"connect_args": {"options": "-c search_path=optuna"}})
    with pytest.raises(
        SweepError, match=r"^s\.yaml: .*http://127\.0\.0\.1:5000 is neither: set NBOPS_OPTUNA"
    ):
        search.study_storage("http://u:pw@127.0.0.1:5000", "s.yaml")
    monkeypatch.setenv(search.ENV_STORAGE, "sqlite:////elsewhere/study.db")
    assert search.study_storage("http://127.0.0.1:5000", "s.yaml") == ("sqlite:////elsewhere/study.db", {})


def test_optuna_refuses_mlflows_database_which_is_why_the_study_has_its_own(tmp_path):
    """Both keep their schema revision in `alembic_version`: Optuna reads MLflow's and refuses."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(uri).search_experiments()  # creates MLflow's tables
    with pytest.raises(RuntimeError, match="no longer compatible with the table schema"):
        optuna.create_study(storage=uri, study_name="clash")


# ------------------------------------------------------------------ ask and tell


def fake_metric(number: int, params: dict) -> search.TrialOutcome:
    time.sleep(random.uniform(0, 0.05))  # parallel trials finish out of order
    return params["model.params.max_depth"] / 10 + (params["model.params.criterion"] == "gini") / 100, {}


def in_memory_study(seed: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), direction="maximize")


def a_search(project) -> search.Search:
    loaded = load_sweep(write_search(project, "ok"), project).search
    assert loaded is not None
    return loaded


def test_a_failed_trial_is_told_failed_and_the_study_goes_on(project):
    study = in_memory_study(7)

    def run_trial(number, params):
        if number == 1:
            return None, {"reason": "boom"}
        if number == 2:
            raise RuntimeError("the executor broke")
        return fake_metric(number, params)

    with pytest.raises(RuntimeError, match="the executor broke"):
        search.drive(study, a_search(project), 5, 1, run_trial)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "FAIL"]  # the raise stopped this serial loop; nothing left running
    study2 = in_memory_study(7)
    search.drive(study2, a_search(project), 4, 1, lambda n, p: (None, {}) if n == 1 else fake_metric(n, p))
    assert [t.state.name for t in study2.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    runner = f"{socket.gethostname()}:{os.getpid()}"
    assert study.trials[1].user_attrs == {"reason": "boom", "runner": runner}
    assert study.trials[2].user_attrs == {"interrupted": True, "runner": runner}  # no result of its own


def test_parallel_asks_draw_the_same_startup_trials_as_serial(project):
    """TPE samples its first n_startup_trials (10) at random from its seeded generator, in the
    order trials are asked: with asks serialised, trial n gets the same params serial or not."""
    serial, parallel = in_memory_study(11), in_memory_study(11)
    assert search.drive(serial, a_search(project), 8, 1, fake_metric) == list(range(8))
    assert sorted(search.drive(parallel, a_search(project), 8, 3, fake_metric)) == list(range(8))
    assert [t.params for t in parallel.trials] == [t.params for t in serial.trials]
    assert parallel.best_trial.number == serial.best_trial.number
    assert len({str(t.params) for t in serial.trials}) > 1  # the draws differ from trial to trial


def test_a_resumed_study_keeps_its_trials_and_draws_new_ones(project, tmp_path, monkeypatch):
    monkeypatch.delenv(search.ENV_STORAGE, raising=False)
    sweep = load_sweep(write_search(project, "ok"), project)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = search.open_study(sweep, uri)
    search.drive(study, sweep.search, 3, 1, fake_metric)
    first = [t.params for t in study.trials]
    resumed = search.open_study(sweep, uri)
    assert (tmp_path / "optuna.db").is_file() and not (tmp_path / "mlflow.db").exists()
    assert [t.params for t in resumed.trials] == first
    search.drive(resumed, sweep.search, 3, 1, fake_metric)
    again = search.open_study(sweep, uri)
    assert [t.params for t in again.trials][:3] == first
    # seeded with seed + trials so far: the new trials are not the first three drawn again
    assert [t.params for t in again.trials][3:] != first


def test_a_trial_left_running_by_a_stopped_sweep_is_told_failed_on_resume(project, tmp_path, monkeypatch):
    monkeypatch.delenv(search.ENV_STORAGE, raising=False)
    sweep = load_sweep(write_search(project, "ok"), project)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    search.open_study(sweep, uri).ask()  # the sweep stopped mid-trial
    assert [t.state.name for t in search.open_study(sweep, uri).trials] == ["FAIL"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_opening_the_study_fails_only_trials_whose_search_is_gone(project, tmp_path, monkeypatch):
    monkeypatch.delenv(search.ENV_STORAGE, raising=False)
    sweep = load_sweep(write_search(project, "ok"), project)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = search.open_study(sweep, uri)
    here = socket.gethostname()
    runners = [f"{here}:{os.getpid()}", f"{here}:{dead_pid()}", f"elsewhere.example:{os.getpid()}"]
    for runner in runners:
        study.ask().set_user_attr(search.RUNNER_ATTR, runner)
    # looking (nbops sweep --aggregate-only) tells nothing, even about the gone search's trial
    assert [t.state.name for t in search.open_study(sweep, uri, run=False).trials] == ["RUNNING"] * 3
    # a search about to run: the live one here and the other machine's keep running
    assert [t.state.name for t in search.open_study(sweep, uri).trials] == ["RUNNING", "FAIL", "RUNNING"]


def test_interrupted_and_stale_trials_do_not_count_toward_n_trials(project):
    study = in_memory_study(3)
    outcomes = iter([(0.5, {}), (None, {"reason": "the estimator refused it"})])
    search.drive(study, a_search(project), 2, 1, lambda n, p: next(outcomes))
    assert search.counted_trials(study) == 2  # a result, a failure of its own

    def interrupted(number, params):
        raise KeyboardInterrupt

    stops = []
    with pytest.raises(KeyboardInterrupt):
        search.drive(study, a_search(project), 3, 1, interrupted, on_interrupt=lambda: stops.append(1))
    assert stops == [1]
    study.ask().set_user_attr(search.RUNNER_ATTR, f"{socket.gethostname()}:{dead_pid()}")
    search.fail_stale_trials(study)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "FAIL", "FAIL"]
    assert search.counted_trials(study) == 2  # the interrupted and the stale one are run again


def test_trials_running_when_the_search_is_interrupted_are_told_interrupted(project):
    study = in_memory_study(5)
    closed = threading.Event()

    def run_trial(number, params):
        if number == 0:
            time.sleep(0.2)
            raise KeyboardInterrupt
        closed.wait(10)  # as a LocalPool's point ends once the pool is closed: failed, no value
        return None, {"reason": "the sweep stopped before this point ran"}

    with pytest.raises(KeyboardInterrupt):
        search.drive(study, a_search(project), 4, 2, run_trial, on_interrupt=closed.set)
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert all(t.user_attrs["interrupted"] for t in study.trials)
    assert search.counted_trials(study) == 0


# ------------------------------------------------------------------ report figures


def test_the_figures_are_drawn_or_say_why_not(project, tmp_path):
    study = in_memory_study(3)
    search.drive(study, a_search(project), 1, 1, fake_metric)
    view = plot_study(study, tmp_path, 3, 2)
    assert [f["file"] for f in view["figures"]] == ["optuna_history.png", None]
    assert view["figures"][1]["note"] == (
        "Not drawn: needs at least 2 completed trial(s) and 2 searched parameter(s); "
        "this study has 1 completed, the space 2 parameter(s)."
    )
    search.drive(study, a_search(project), 3, 1, fake_metric)
    view = plot_study(study, tmp_path, 3, 2)
    assert [f["file"] for f in view["figures"]] == ["optuna_history.png", "optuna_importances.png"]
    for name in ("optuna_history.png", "optuna_importances.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert (view["complete"], view["failed"]) == (4, 0)
    one_param = plot_study(study, tmp_path, 3, 1)
    assert one_param["figures"][1]["file"] is None and not (tmp_path / "optuna_importances.png").exists()


def test_an_interrupt_stops_the_asks_and_leaves_no_trial_running(project):
    study = in_memory_study(5)

    def run_trial(number, params):
        if number == 0:
            raise KeyboardInterrupt
        time.sleep(0.3)  # the other slot's trial is running when the interrupt comes
        return fake_metric(number, params)

    with pytest.raises(KeyboardInterrupt):
        search.drive(study, a_search(project), 6, 2, run_trial)
    assert len(study.trials) < 6  # it stopped asking
    assert study.trials[0].state.name == "FAIL"
    assert "RUNNING" not in [t.state.name for t in study.trials]


def test_the_study_optimises_the_gates_metric_in_its_direction(project):
    from nbops.sweep.spec import rank_direction, rank_metric

    sweep = load_sweep(write_search(project, "ok"), project)
    assert rank_metric(sweep) == "macro_f1"
    assert [rank_direction(m) for m in ("macro_f1", "rmse", "mae", "r2")] == [
        "maximize",
        "minimize",
        "minimize",
        "maximize",
    ]
