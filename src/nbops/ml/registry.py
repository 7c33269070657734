"""The registry: aliases read and moved, models loaded (skops, trusted types only), the gate's
decision recorded on the version, runs left RUNNING closed. Aliases, never stages: `challenger`
= the newest trained version, `champion` = the one that passed the gate."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbops.exceptions import ModelError
from nbops.ml.tracking import (  # the store's client is preloaded as tracking does
    CHAMPION,
    TAG_PREFIX,
    preload_for_environment,  # noqa: F401
    store_lock,
    use_project_store,
)

if TYPE_CHECKING:
    from nbops.ml.gate import Decision

# Heavy libraries imported inside the functions below; warm kernels load them early (nbops.runner.preload).
PRELOAD = ("mlflow", "mlflow.pyfunc", "skops.io")


def get_alias_version(model_name: str, alias: str, client=None):
    """The ModelVersion behind an alias, or None when the model or alias does not exist."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if client is None:
        use_project_store()
    client = client or mlflow.MlflowClient()
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def load_model(model_uri: str, dst: Path | None = None):
    """Load a registered sklearn model, trusting only skops files with TRUSTED_TYPES.

    MLflow would read the trusted-types list from the model itself, and would unpickle a
    pickle/cloudpickle model; both let whoever registered the model run code here. We refuse.
    """
    import mlflow

    # tqdm bars would land in notebooks, reports and logs as text
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    use_project_store()
    # skops reads the whole model into memory: a download of our own is not needed after it
    folder = contextlib.nullcontext(str(dst)) if dst else tempfile.TemporaryDirectory(prefix="nbops-model-")
    with folder as target:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=target))
        return load_model_dir(local, model_uri)


def load_model_dir(local: Path, label: str = ""):
    """Load a downloaded MLflow sklearn model folder with the skops allow-list fixed in code."""
    import skops.io
    import yaml
    from skops.io.exceptions import UntrustedTypesFoundException

    from nbops.ml.models import TRUSTED_TYPES

    label = label or str(local)
    try:
        mlmodel = yaml.safe_load((local / "MLmodel").read_text())
        conf = mlmodel["flavors"]["sklearn"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        raise ModelError(f"{label}: not an MLflow scikit-learn model folder") from None
    fmt = conf.get("serialization_format")
    if fmt != "skops":
        raise ModelError(f"{label}: refusing to load a {fmt!r} model: only skops models are trusted")
    file = local / conf.get("pickled_model", "model.skops")
    if file.resolve().parent != local.resolve() or not file.is_file():
        raise ModelError(f"{label}: model file {conf.get('pickled_model')!r} is missing")
    try:
        return skops.io.load(file, trusted=TRUSTED_TYPES)
    except UntrustedTypesFoundException as exc:
        raise ModelError(f"{label}: refusing to load: {exc}") from None


def run_artifact_json(run_id: str, path: str) -> dict:
    import mlflow

    use_project_store()
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")


def _record_decision(client, model_name: str, decision: Decision, move_alias: bool = True) -> None:
    """The gate's record on the challenger version, then the alias move if it promotes (and
    `move_alias`). Callers hold the store's promote lock."""
    version = str(decision.challenger_version)
    tags = {
        "gate.verdict": decision.verdict,
        "gate.reasons": "; ".join(decision.reasons)[:4000],
        "gate.deltas": json.dumps(decision.deltas),
        "gate.compared_with": str(decision.champion_version or "none"),
    }
    if decision.interval:
        from nbops.ml.bootstrap import describe

        tags["gate.interval"] = describe(decision.interval)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, TAG_PREFIX + key, value)
    if decision.promote and move_alias:
        if decision.champion_version is not None:
            client.set_model_version_tag(
                model_name, version, TAG_PREFIX + "previous_champion", str(decision.champion_version)
            )
        client.set_registered_model_alias(model_name, CHAMPION, version)


def promote_if_better(
    model_name: str,
    challenger_version: str,
    challenger_metrics: dict,
    *,
    gate: dict[str, Any],
    allow_promotion: bool,
    score_version: Callable[[str], dict | None],
    known: dict[str, dict | None] | None = None,
    client=None,
    move_alias: bool = True,
    record: bool = True,
    interval_for: Callable[[str], dict | None] | None = None,
) -> Decision:
    """Read the champion, compare, record, and move `champion` only if the gate says so.

    With `move_alias=False` the decision is made and recorded but the alias stays: the
    pipeline's evaluate step decides, and the runner moves `champion` (apply_decision) once
    every step of the run has succeeded. With `record=False` (a hand run in Lab) nothing at
    all is written: the decision is only shown.

    MLflow has no compare-and-set for aliases, so the whole read-compare-set holds a lock on
    the store: a second evaluation waits, then compares against whatever is champion by
    then (re-scored on its own held-out rows with `score_version`), so racing promotions end
    with the better model. `known` holds metrics already computed per version. `interval_for`
    (the paired gate) gives the bootstrap record of Δ against a version.
    """
    import mlflow

    from nbops.ml.gate import decide_promotion

    if client is None:
        use_project_store()
    client = client or mlflow.MlflowClient()
    with store_lock(mlflow.get_tracking_uri(), "promote"):
        champion_version, champion_metrics = _champion_now(client, model_name, known, score_version)
        interval = None
        if interval_for is not None and champion_version is not None and champion_metrics:
            interval = interval_for(champion_version)
        decision = decide_promotion(
            challenger_metrics,
            (champion_metrics or {}) if champion_version else None,
            **gate,
            interval=interval,
            allow_promotion=allow_promotion,
            challenger_version=str(challenger_version),
            champion_version=champion_version,
        )
        if known is not None and champion_version is not None and champion_version not in known:
            decision.reasons.append(
                f"champion moved to v{champion_version} during evaluation: compared with it"
            )
        if record:
            _record_decision(client, model_name, decision, move_alias)
    return decision


def _champion_now(
    client, model_name: str, known: dict[str, dict | None] | None, score_version: Callable[[str], dict | None]
) -> tuple[str | None, dict | None]:
    """(the champion's version as the registry has it now, its metrics): from `known` when
    they were computed already, else scored now."""
    current = get_alias_version(model_name, CHAMPION, client)
    if current is None:
        return None, None
    version = str(current.version)
    if known and version in known:
        return version, known[version]
    return version, score_version(version)


def apply_decision(model_name: str, decision: Decision, client=None) -> Decision:
    """Record an already-made decision and move `champion` if it promotes; refuse to promote if
    `champion` moved since the decision was made (the runner after a run, the sweep aggregator)."""
    import mlflow

    if client is None:
        use_project_store()
    client = client or mlflow.MlflowClient()
    with store_lock(mlflow.get_tracking_uri(), "promote"):
        current = get_alias_version(model_name, CHAMPION, client)
        current_version = str(current.version) if current else None
        if decision.promote and current_version != (
            str(decision.champion_version) if decision.champion_version else None
        ):
            decision.promote = False
            decision.verdict = "keep champion"
            decision.reasons.append(
                f"champion moved to v{current_version} during evaluation: not overwritten"
            )
        _record_decision(client, model_name, decision)
    return decision


def rollback_champion(model_name: str, client=None) -> tuple[str, str]:
    """Move `champion` back to the version it replaced. Returns (from_version, to_version)."""
    import mlflow

    if client is None:
        use_project_store()
    client = client or mlflow.MlflowClient()
    current = get_alias_version(model_name, CHAMPION, client)
    if current is None:
        raise ModelError(f"registered model {model_name!r} has no champion to roll back")
    previous = current.tags.get(TAG_PREFIX + "previous_champion")
    if not previous:
        raise ModelError(f"{model_name} v{current.version} is the first champion: there is no previous one")
    client.set_registered_model_alias(model_name, CHAMPION, previous)
    client.set_model_version_tag(model_name, current.version, TAG_PREFIX + "rolled_back", "true")
    client.set_model_version_tag(model_name, previous, TAG_PREFIX + "restored_from", current.version)
    return current.version, previous


def fail_runs_tagged(key: str, value: str) -> list[str]:
    """Mark FAILED every RUNNING run tagged nbops.<key>=<value> (left behind by a dead kernel)."""
    uri = use_project_store()
    import mlflow

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return []  # no store yet, so no runs; creating one here would race a step that is creating it
    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    runs = client.search_runs(
        experiments, filter_string=f"tags.`{TAG_PREFIX}{key}` = '{value}' and attributes.status = 'RUNNING'"
    )
    for run in runs:
        client.set_terminated(run.info.run_id, status="FAILED")
    return [run.info.run_id for run in runs]
