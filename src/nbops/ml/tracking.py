"""MLflow: where runs go, how a model is logged and registered, how aliases move.

Tracking URI: `MLFLOW_TRACKING_URI` when set (any server; credentials from the usual
`MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD`), else `mlflow/mlflow.db` (sqlite) with
artifacts in `mlflow/artifacts/` inside the project. Aliases, never stages:
`challenger` = the newest trained version, `champion` = the one that passed the gate.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbops.exceptions import ModelError

# Heavy libraries imported inside the functions below; warm kernels load them early (nbops.runner.preload).
PRELOAD = ("mlflow", "mlflow.models", "mlflow.pyfunc", "mlflow.sklearn", "skops.io")
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def preload_for_environment() -> tuple[str, ...]:
    """More for a warm kernel, by this process's tracking URI: MLflow imports a database store's
    client (SQLAlchemy models, alembic) on the first call, ~1.3 s inside the step otherwise."""
    scheme = os.environ.get("MLFLOW_TRACKING_URI", "").split(":", 1)[0].split("+", 1)[0]
    if scheme in DATABASE_SCHEMES:
        return ("mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store")
    return ()


if TYPE_CHECKING:
    pass

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_PREFIX = "nbops."
# What a logged model needs to be served: stated, not inferred (inference costs ~3 s and
# picked up test tools).
MODEL_REQUIREMENTS = ("scikit-learn", "skops", "pandas", "numpy", "scipy")


def default_tracking_uri(root: Path) -> str:
    return f"sqlite:///{(root / 'mlflow' / 'mlflow.db').resolve()}"


ENV_ROOT = "NBOPS_ROOT"  # the project root, set by `make lab` (and `make dashboard`)


def find_project_root(start: Path | None = None) -> Path | None:
    """NBOPS_ROOT when set, else the nearest folder at or above `start` (the working folder)
    holding both `params/` and `notebooks/`: a notebook run from notebooks/ finds its project."""
    if os.environ.get(ENV_ROOT):
        return Path(os.environ[ENV_ROOT]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return None


def use_project_store() -> str:
    """The tracking URI every function here talks to: the one already chosen (the env var the
    runner exports, or mlflow.set_tracking_uri), else the project's store, found from the
    project root. Never MLflow's own default, `sqlite:///mlflow.db` in whatever folder a
    notebook happens to run in: that would be a second store."""
    from mlflow.tracking._tracking_service.utils import get_tracking_uri, is_tracking_uri_set

    if is_tracking_uri_set():
        return get_tracking_uri()
    root = find_project_root()
    if root is None:
        raise ModelError(
            f"no nbops project at or above {Path.cwd()} (a folder with params/ and notebooks/): "
            f"set {ENV_ROOT} or MLFLOW_TRACKING_URI"
        )
    return configure_tracking(root)


# MLflow 3 reports usage from every process that imports it: a thread fetches a config from
# the internet and a queue posts events (timeouts of 1 s each). Nothing here talks to anything
# but the tracking store, so it is off unless a user's own environment turns it on.
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true"}


def configure_tracking(root: Path) -> str:
    """Pick the tracking URI and export it, so kernels started afterwards inherit it (and no
    telemetry: MLflow decides at import, so this runs before anything here imports mlflow)."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if uri.startswith(("http://", "https://")):
        # MLflow's defaults (7 retries with backoff, 120 s per request) make a dead server take
        # minutes to fail a step; a user's own settings win, kernels inherit these
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


def _local_artifact_root(uri: str) -> str | None:
    """Artifacts beside a local sqlite store; a server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


# MLflow loggers whose INFO lines are routine, not news: a fresh store announcing its tables
# (alembic's migration steps with it). They would land in the reviewer's HTML as stderr; their
# warnings and errors still show.
ROUTINE_LOGGERS = ("mlflow.store.db.utils", "alembic.runtime.migration")


def quiet_routine_logs() -> None:
    import logging

    for name in ROUTINE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def ensure_experiment(name: str) -> str:
    """Create the store (if fresh) and the experiment once, serially, before parallel work."""
    import mlflow

    quiet_routine_logs()
    uri = use_project_store()
    with store_lock(uri, "init"):  # two processes creating a fresh sqlite store corrupt it
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return client.create_experiment(name, artifact_location=_local_artifact_root(uri))


@contextmanager
def store_lock(uri: str, purpose: str):
    """An exclusive lock per tracking store and purpose, across processes on this machine:
    beside a local sqlite file, else in the temp folder keyed by the URI (a remote server's
    clients on other machines are not covered: run promotions from one place)."""
    import fcntl
    import hashlib

    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///")).with_suffix(f".{purpose}.lock")
    else:
        key = hashlib.sha256(uri.split("?")[0].encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"nbops-{key}.{purpose}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def git_commit(root: Path | None = None) -> str:
    """HEAD's commit, with `-dirty` when the work tree has changes; `unknown` outside git."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def model_requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in MODEL_REQUIREMENTS]


@contextmanager
def _requirements_known_to_match():
    """Skip MLflow's check that a model's pip requirements match the installed packages, run when
    the model is saved and again when log_model loads it back to try its input example. The
    check maps every installed distribution's files to modules (~0.7 s per training run) and
    can only pass: model_requirements() reads those very versions. Where a newer MLflow has
    moved the function, its check stays."""
    import mlflow.pyfunc
    from mlflow.utils import environment

    name = "warn_dependency_requirement_mismatches"
    holders = [m for m in (environment, mlflow.pyfunc) if hasattr(m, name)]
    originals = [getattr(m, name) for m in holders]
    for module in holders:
        setattr(module, name, lambda requirements: None)
    try:
        yield
    finally:
        for module, original in zip(holders, originals, strict=True):
            setattr(module, name, original)


# section.key.name: the params file's deepest mapping (model.params) names its values with three
# parts; a dict below that is a value (class_weight: {drugY: 2})
NAME_PARTS = 3


def flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as MLflow params, each value under its params-file name:
    {"model": {"params": {"max_depth": 6}}} -> {"model.params.max_depth": "6"} (JSON text,
    at most 6000 characters: MLflow's limit)."""
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name.count(".") < NAME_PARTS - 1:
            out.update(flat_params(value, name + "."))
        else:
            out[name] = json.dumps(value)[:6000]
    return out


REFERENCE_ROWS = 10_000
SIGNATURE_ROWS = 1_000


def log_training(
    model,
    *,
    X_example,
    params: dict[str, Any],
    cv_scores: dict[str, float],
    schema: dict[str, Any],
    holdout_ids: list[int],
    tags: dict[str, str],
    model_name: str,
    experiment: str,
    run_name: str,
    reference=None,
    parent_run_id: str | None = None,
    run_tags: dict[str, str] | None = None,
    register: bool = True,
) -> dict[str, Any]:
    """Log params, metrics, artifacts and the model in one run; register it as `challenger`.

    With `register=False` (a hand run in Lab) the run and its logged model are kept but the
    registry is not touched: no version, no alias; `version` is None and `model_uri` names
    the logged model. The run is closed FAILED by MLflow if anything in here raises; the
    registry is touched last, after everything else was logged.
    """
    import mlflow

    # a fresh store is created here, under the store lock: parallel steps and runs may be first
    mlflow.set_experiment(experiment_id=ensure_experiment(experiment))
    client = mlflow.MlflowClient()
    run_tags_all = {TAG_PREFIX + k: str(v) for k, v in tags.items()}
    run_tags_all.update({TAG_PREFIX + k: str(v) for k, v in (run_tags or {}).items()})
    if parent_run_id:  # how MLflow links a child run to its parent (sweeps)
        run_tags_all["mlflow.parentRunId"] = parent_run_id
    with mlflow.start_run(run_name=run_name, tags=run_tags_all) as run:
        mlflow.log_params(flat_params(params))
        mlflow.log_metrics({k: float(v) for k, v in cv_scores.items()})
        mlflow.log_dict(schema, "schema.json")
        mlflow.log_dict({"holdout_ids": holdout_ids}, "holdout_ids.json")
        _log_reference(reference)
        info = _log_model(model, X_example)
        if not register:
            return {
                "run_id": run.info.run_id,
                "version": None,
                "model_name": model_name,
                "model_uri": info.model_uri,
                "experiment": experiment,
            }
        version = register_version(client, model_name, info, run.info.run_id)
        for key, value in {**tags, "run_id": run.info.run_id}.items():
            client.set_model_version_tag(model_name, version, TAG_PREFIX + key, value)
        client.set_registered_model_alias(model_name, CHALLENGER, version)
        return {
            "run_id": run.info.run_id,
            "version": version,
            "model_name": model_name,
            "model_uri": f"models:/{model_name}/{version}",
            "experiment": experiment,
        }


def _log_reference(reference) -> None:
    """Training rows (sampled) for drift checks against this model, on the active run."""
    import mlflow

    if reference is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        sample = reference.sample(min(len(reference), REFERENCE_ROWS), random_state=0)
        sample.to_parquet(Path(tmp) / "reference_sample.parquet")
        mlflow.log_artifact(str(Path(tmp) / "reference_sample.parquet"))


def _log_model(model, X_example):
    """The model as skops with the trusted types fixed in code, on the active run."""
    import mlflow
    from mlflow.models import infer_signature

    from nbops.ml.models import TRUSTED_TYPES

    # the signature needs column types only: a sample, not a prediction over every row
    sample_rows = X_example.head(SIGNATURE_ROWS)
    signature = infer_signature(sample_rows, model.predict(sample_rows))
    with _requirements_known_to_match():
        return mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            pip_requirements=model_requirements(),
            signature=signature,
            input_example=X_example.head(3),
        )


def training_line(registered: dict[str, Any]) -> str:
    """What log_training did, in one markdown line for the train notebook."""
    if registered["version"] is None:
        return (
            f"Logged run `{registered['run_id']}`; not registered (a hand run: set `register = True` "
            f"in the parameters cell to register it as `challenger`)."
        )
    return (
        f"Registered **{registered['model_name']} v{registered['version']}** as `challenger` "
        f"(run `{registered['run_id']}`)."
    )


def register_version(client, model_name: str, info, run_id: str) -> str:
    """A new version of `model_name` (created on first use) for a logged model, through the
    client: `log_model(registered_model_name=...)` prints "Successfully registered model" and
    "Created version" to stderr, where they land in the reviewer's HTML."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    created = client.create_model_version(
        model_name, source=info.model_uri, run_id=run_id, model_id=info.model_id, await_creation_for=60
    )
    return str(created.version)


def log_reports(run_id: str, files: list[Path]) -> None:
    """Attach a run's executed notebooks and HTML reports to its training run (under
    `reports/`), so a registered version leads to the reports it came with."""
    import mlflow

    use_project_store()
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        for file in files:
            (Path(tmp) / file.name).write_bytes(file.read_bytes())
        client.log_artifacts(run_id, tmp, "reports")


def log_holdout_metrics(run_id: str, metrics: dict[str, Any]) -> None:
    """Attach the held-out scores to the training run (model card, dashboard, comparisons)."""
    import mlflow

    use_project_store()
    client = mlflow.MlflowClient()
    from nbops.ml.metrics import shown_metrics

    for name in shown_metrics(metrics):  # the task's: accuracy, macro_f1, ... or rmse, mae, r2
        client.log_metric(run_id, f"holdout_{name}", float(metrics[name]))
    client.log_dict(run_id, metrics, "holdout_metrics.json")
