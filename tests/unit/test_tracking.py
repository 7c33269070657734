"""Tracking set-up: what every process that talks to MLflow inherits."""

import os
import subprocess
import sys

from nbops.ml import tracking

# mlflow switches telemetry off by itself where these are set (CI, pytest): a child without
# them shows what a user's `make pipeline` does.
CI_MARKERS = ("CI", "GITHUB_ACTIONS", "PYTEST_CURRENT_TEST")

ASK = "import mlflow.telemetry.utils as t; print(t.is_telemetry_disabled())"


def _telemetry_disabled_in_child(env: dict) -> str:
    env = {k: v for k, v in env.items() if k not in CI_MARKERS}
    out = subprocess.run([sys.executable, "-c", ASK], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_processes_started_after_configure_tracking_send_no_telemetry(tmp_path, monkeypatch):
    for key in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    # the control: without configure_tracking, a user's process would report usage
    assert _telemetry_disabled_in_child(dict(os.environ)) == "False"
    tracking.configure_tracking(tmp_path)
    assert _telemetry_disabled_in_child(dict(os.environ)) == "True"


def test_a_users_own_telemetry_setting_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    tracking.configure_tracking(tmp_path)
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"


def _log_a_small_tree() -> tuple:
    """A four-row tree logged and registered as `t-model` in the configured store."""
    import pandas as pd
    from sklearn.tree import DecisionTreeClassifier

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    model = DecisionTreeClassifier(max_depth=2).fit(X, ["x", "y", "x", "y"])
    registered = tracking.log_training(
        model, X_example=X, params={"model": {"name": "t"}}, cv_scores={"cv_accuracy": 1.0},
        schema={"classes": ["x", "y"]}, holdout_ids=[0], tags={}, model_name="t-model",
        experiment="t-exp", run_name="t",
    )  # fmt: skip
    return X, registered


def test_logging_a_model_skips_the_scan_of_installed_packages_and_pins_them(tmp_path, monkeypatch):
    """MLflow's requirements check maps every installed distribution to modules (~0.7 s); ours
    are the installed versions by construction. The model still records them, exactly."""
    import importlib_metadata
    import mlflow
    import mlflow.pyfunc
    import mlflow.utils.environment as environment

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.configure_tracking(tmp_path)
    scans = []
    real_scan = importlib_metadata.packages_distributions
    monkeypatch.setattr(importlib_metadata, "packages_distributions", lambda: scans.append(1) or real_scan())
    name = "warn_dependency_requirement_mismatches"
    checks = getattr(environment, name), getattr(mlflow.pyfunc, name)

    X, registered = _log_a_small_tree()

    assert scans == []
    assert checks == (getattr(environment, name), getattr(mlflow.pyfunc, name))  # put back
    local = tmp_path / "dl"
    mlflow.artifacts.download_artifacts(artifact_uri=registered["model_uri"], dst_path=str(local))
    pinned = (local / "requirements.txt").read_text().split()
    assert set(tracking.model_requirements()) <= set(pinned)


def test_loading_a_registered_model_leaves_no_download_behind(tmp_path, monkeypatch):
    """A served dashboard loads the champion for every page: each load's download is removed
    once skops has the model in memory."""
    import tempfile

    from nbops.ml import registry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.configure_tracking(tmp_path / "store")
    X, registered = _log_a_small_tree()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    for _ in range(2):
        loaded = registry.load_model(registered["model_uri"])
        assert list(loaded.predict(X)) == ["x", "y", "x", "y"]
    assert list(scratch.iterdir()) == []


def test_params_are_logged_under_their_params_file_names_however_deep():
    nested = {
        "model": {
            "name": "decision_tree",
            "params": {"max_depth": 6, "class_weight": {"drugY": 2}},
            "cv_folds": 5,
        },
        "split": {"test_size": 0.2},
        "data": {"numeric": ["Age"], "empty": {}},
    }
    assert tracking.flat_params(nested) == {
        "model.name": '"decision_tree"',
        "model.params.max_depth": "6",
        "model.params.class_weight": '{"drugY": 2}',
        "model.cv_folds": "5",
        "split.test_size": "0.2",
        "data.numeric": '["Age"]',
    }
    assert len(tracking.flat_params({"data": {"categories": "x" * 10_000}})["data.categories"]) == 6000
