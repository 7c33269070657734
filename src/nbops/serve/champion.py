"""The champion the dashboard serves: where it comes from (an exported folder or the registry),
loading it with its schema and model card, and what its pipeline tolerates in a cell."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from nbops.exceptions import ModelError
from nbops.ml.metrics import shown_metrics, task_of

ENV_MODEL_DIR = "NBOPS_MODEL_DIR"
ENV_PARAMS = "NBOPS_PARAMS"
ENV_ROOT = "NBOPS_ROOT"
DEFAULT_PARAMS = "params/default.yaml"
MODEL_CARD_FILE = "model_card.json"
SCHEMA_FILE = "schema.json"
MODEL_SUBDIR = "model"


class NoChampionError(ModelError):
    """The registry has no `champion` yet: the page says what to run."""


# ---------------------------------------------------------------- where the model comes from


@dataclass
class ModelSource:
    """Either an exported champion folder or a registered model's `champion` alias."""

    kind: str  # "folder" | "registry"
    folder: Path | None = None
    model_name: str = ""
    root: Path | None = None

    @property
    def label(self) -> str:
        return str(self.folder) if self.kind == "folder" else f"models:/{self.model_name}@champion"


def find_project_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding `params/` (Voila runs kernels in notebooks/)."""
    for folder in (start, *start.parents):
        if (folder / "params").is_dir():
            return folder
    return start


def resolve_model_source(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> ModelSource:
    """`NBOPS_MODEL_DIR` wins; else the champion of the model named in the params file."""
    env = os.environ if env is None else env
    cwd = cwd or Path.cwd()
    folder = env.get(ENV_MODEL_DIR, "").strip()
    if folder:
        path = Path(folder) if Path(folder).is_absolute() else cwd / folder
        return ModelSource("folder", folder=path)
    from nbops.params import load_params  # not needed (nor installed) in the Space image

    root = Path(env[ENV_ROOT]) if env.get(ENV_ROOT) else find_project_root(cwd)
    params_path = Path(env.get(ENV_PARAMS) or DEFAULT_PARAMS)
    if not params_path.is_absolute():
        params_path = root / params_path
    params = load_params(params_path)
    return ModelSource("registry", model_name=params.registry.model_name, root=root)


@dataclass
class Champion:
    """A loaded model with the schema it was trained on and its model card."""

    model: Any
    schema: dict[str, Any]
    card: dict[str, Any]

    @property
    def features(self) -> list[str]:
        return [*self.schema["numeric"], *self.schema["categorical"]]

    @cached_property
    def tolerance(self) -> ModelTolerance:
        return read_tolerance(self.model, self.schema)


def model_card(model_version, run, holdout: dict[str, Any]) -> dict[str, Any]:
    """What answered: registry name and version, when and from which commit, held-out scores."""
    tags = model_version.tags or {}
    started = datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC)
    return {
        "name": model_version.name,
        "version": str(model_version.version),
        "alias": "champion",
        "run_id": run.info.run_id,
        "trained_at": started.strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": tags.get("nbops.git_commit", "unknown"),
        "params_hash": tags.get("nbops.params_hash", ""),
        "data_hash": tags.get("nbops.data_hash", ""),
        "gate_verdict": tags.get("nbops.gate.verdict", ""),
        "gate_interval": tags.get("nbops.gate.interval", ""),
        "metrics": {k: holdout[k] for k in shown_metrics(holdout)},  # the task's metrics
        "task": task_of(holdout),
        "holdout_rows": holdout.get("rows"),
        "labels": holdout.get("labels", []),
        "confusion_matrix": holdout.get("confusion_matrix", []),
    }


def _mlflow():
    # Imported alone: ruff sorts `mlflow` differently when a local mlflow/ store folder exists.
    import mlflow

    return mlflow


def registry_champion_info(model_name: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(model version, schema, model card) of the current champion; NoChampionError if none."""
    from nbops.ml import registry, tracking

    version = registry.get_alias_version(model_name, tracking.CHAMPION)
    if version is None:
        raise NoChampionError(
            f"No champion model yet for {model_name!r}. Train one with `make pipeline` "
            "(it registers a model and promotes it when it passes the gate), then reload this page."
        )
    mlflow = _mlflow()
    where = f"{model_name} v{version.version} (run {version.run_id})"
    docs = {}
    for name in (SCHEMA_FILE, "holdout_metrics.json"):
        try:
            docs[name] = registry.run_artifact_json(version.run_id, name)
        except mlflow.exceptions.MlflowException:
            raise ModelError(
                f"{where}: the champion's run has no readable {name}, which the evaluate step logs; "
                "train and promote a new champion with `make pipeline`"
            ) from None
    run = mlflow.MlflowClient().get_run(version.run_id)
    return version, docs[SCHEMA_FILE], model_card(version, run, docs["holdout_metrics.json"])


def _quiet_mlflow() -> None:
    # Progress bars and warnings would land on the page as stray output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def load_champion(source: ModelSource) -> Champion:
    """Load the model (skops, trusted types fixed in code), its schema and its model card."""
    from nbops.ml import registry, tracking

    if source.kind == "folder" and source.folder is not None:
        return load_exported_champion(source.folder)
    _quiet_mlflow()
    tracking.configure_tracking(source.root or Path.cwd())
    version, schema, card = registry_champion_info(source.model_name)
    model = registry.load_model(f"models:/{source.model_name}/{version.version}")
    card["source"] = source.label
    return Champion(model, schema, card)


def load_exported_champion(folder: Path) -> Champion:
    """An exported champion: `model/` (MLflow model folder), `schema.json`, `model_card.json`."""
    from nbops.ml import registry

    if not folder.is_dir():
        raise NoChampionError(
            f"No exported champion at {folder}: build the Space folder with `make space` "
            f"or unset {ENV_MODEL_DIR} to use the tracking store."
        )
    docs = {}
    for name in (SCHEMA_FILE, MODEL_CARD_FILE):
        try:
            docs[name] = json.loads((folder / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{folder}: {name} is missing from the exported champion") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise ModelError(f"{folder}: {name} is not valid JSON") from None
    check_schema(docs[SCHEMA_FILE], folder / SCHEMA_FILE)
    model = registry.load_model_dir(folder / MODEL_SUBDIR, f"{folder / MODEL_SUBDIR}")
    card = {**docs[MODEL_CARD_FILE], "source": "exported champion"}
    return Champion(model, docs[SCHEMA_FILE], card)


def check_schema(schema: Any, where: Any) -> None:
    """The schema the widgets are built from must name its columns, ranges and categories."""
    ok = (
        isinstance(schema, dict)
        and isinstance(schema.get("numeric"), dict)
        and isinstance(schema.get("categorical"), dict)
        and all(isinstance(v, dict) and {"min", "max"} <= set(v) for v in schema["numeric"].values())
        and all(isinstance(v, list) and v for v in schema["categorical"].values())
        and (schema["numeric"] or schema["categorical"])
    )
    if not ok:
        raise ModelError(f"{where}: schema must list numeric columns with min/max and categorical values")


@dataclass
class ModelTolerance:
    """What the champion's own pipeline does with a cell unlike its training data, read from its
    fitted steps. Empty (nothing tolerated) for a model whose steps are not recognised."""

    fills: dict[str, Any] = field(default_factory=dict)  # column -> the value its imputer fills in
    imputed: set[str] = field(default_factory=set)  # columns whose missing cells are filled in
    unknown_ok: set[str] = field(default_factory=set)  # categorical columns ignoring unseen values
    modes: dict[str, Any] = field(default_factory=dict)  # column -> most frequent training value


# An unseen category is encoded as "none of the known ones" by these settings (scikit-learn's own).
_UNKNOWN_OK = {
    "OneHotEncoder": {"ignore", "infrequent_if_exist", "warn"},
    "OrdinalEncoder": {"use_encoded_value"},
}


def _column_steps(model) -> dict[str, list[tuple[Any, int]]]:
    """Input column -> the fitted steps applied to it, each with the column's position among the
    columns of its branch, for a Pipeline with a ColumnTransformer step (as nbops.ml.models makes)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    steps: dict[str, list[tuple[Any, int]]] = {}
    for _, step in getattr(model, "steps", []):
        if not isinstance(step, ColumnTransformer):
            continue
        for _, branch, columns in getattr(step, "transformers_", []):
            if isinstance(branch, str):  # "drop" / "passthrough"
                continue
            parts = [s for _, s in branch.steps] if isinstance(branch, Pipeline) else [branch]
            for pos, column in enumerate([columns] if isinstance(columns, str) else list(columns)):
                steps.setdefault(str(column), []).extend((part, pos) for part in parts)
    return steps


def read_tolerance(model, schema: dict[str, Any]) -> ModelTolerance:
    """Which columns the pipeline imputes (with what: a most-frequent imputer's fill is the
    column's most frequent training value), and where an unseen category is ignored."""
    tolerance = ModelTolerance()
    for column, steps in _column_steps(model).items():
        for step, pos in steps:
            kind = type(step).__name__
            if type(step).__module__.startswith("sklearn.impute"):
                tolerance.imputed.add(column)
                stats = getattr(step, "statistics_", None)
                if stats is not None and pos < len(stats):
                    tolerance.fills[column] = stats[pos]
                if getattr(step, "strategy", "") == "most_frequent" and column in tolerance.fills:
                    tolerance.modes[column] = tolerance.fills[column]
            elif kind in _UNKNOWN_OK and column in schema["categorical"]:
                if getattr(step, "handle_unknown", "error") in _UNKNOWN_OK[kind]:
                    tolerance.unknown_ok.add(column)
    return tolerance
