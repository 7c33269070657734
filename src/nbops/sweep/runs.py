"""A sweep's MLflow runs and point records: the parent run, each point's spec for the
executors and its record when it finishes. Shared by grid sweeps (nbops.sweep.run) and
searches (nbops.sweep.search)."""

from __future__ import annotations

import json

import yaml

from nbops.layout import TRAIN
from nbops.params import params_hash
from nbops.products import write_json
from nbops.sweep.kernels import warm_enabled
from nbops.sweep.point import scrub, scrub_folder
from nbops.sweep.spec import RANK_METRIC, Point, Sweep, rank_metric, say


def prepare_tracking(sweep: Sweep, selected: list[Point]) -> tuple[str, str]:
    """Serially, before parallel work: the store, the experiment, the registered model, the
    synthetic table and the parent run. Returns (tracking URI, parent run id)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from nbops.ml import tracking
    from nbops.ml.data import resolve_data_path

    params = selected[0].valid
    resolve_data_path(params, sweep.root, sweep.shown)  # generate the synthetic table once
    uri = tracking.configure_tracking(sweep.root)
    experiment_id = tracking.ensure_experiment(params.registry.experiment)
    client = mlflow.MlflowClient(uri)
    try:
        client.create_registered_model(params.registry.model_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    parent = client.create_run(
        experiment_id,
        run_name=f"sweep {sweep.name}",
        tags={
            "nbops.sweep": sweep.name,
            "nbops.sweep_file": sweep.shown,
            "nbops.points": str(len(selected)),
            "nbops.git_commit": tracking.git_commit(sweep.root),
        },
    )
    client.log_dict(
        parent.info.run_id,
        {"base": sweep.base_params, "points": {p.id: p.overrides for p in selected}},
        "sweep.json",
    )
    return uri, parent.info.run_id


def point_spec(sweep: Sweep, point: Point, parent_run_id: str, warm: bool | None = None) -> dict:
    """What an executor runs for `point`: its params file (written here), folders, provenance and
    whether its kernels come from the worker's warm pool (default: NBOPS_SWEEP_WARM). Never the
    tracking URI: executors hand that over in the environment."""
    if warm is None:
        warm = warm_enabled()
    build = sweep.point_build(point)
    build.mkdir(parents=True, exist_ok=True)
    params_file = build / "params.yaml"
    params_file.write_text(yaml.safe_dump(point.params, sort_keys=False), encoding="utf-8")
    return {
        "root": str(sweep.root),
        "params": str(params_file),
        "build": str(build),
        "reports": str(sweep.point_reports(point)),
        "warm": warm,
        "provenance": {
            "parent_run_id": parent_run_id,
            "run_tags": {
                "sweep": sweep.name,
                "sweep_point": point.id,
                **{f"override.{k}": json.dumps(v) for k, v in point.overrides.items()},
            },
        },
    }


def make_record(point: Point, out: dict, parent_run_id: str | None) -> dict:
    return record_of(point.index, point.id, point.overrides, params_hash(point.params), out, parent_run_id)


def record_of(
    index: int, point_id: str, overrides: dict, phash: str | None, out: dict, parent_run_id: str | None
) -> dict:
    """A point's record: what it was, how it went, its model version and the gate's view of it."""
    ev = out.get("evaluation") or {}
    return {
        "index": index,
        "id": point_id,
        "overrides": overrides,
        "params_hash": phash,
        "status": out.get("status", "failed"),
        "reason": out.get("reason"),
        "ran": out.get("ran", []),
        "skipped": out.get("skipped", []),
        "seconds": out.get("seconds"),
        "split": out.get("split"),
        "parent_run_id": parent_run_id,
        "model_name": ev.get("model_name"),
        "challenger": ev.get("challenger"),
        "champion": ev.get("champion"),
        "decision": ev.get("decision"),
    }


def finish_point(sweep: Sweep, point: Point, out: dict, uri: str | None, parent_run_id: str) -> dict:
    """A finished point: its folders scrubbed of the URI, its record written and shown."""
    for folder in (sweep.point_build(point), sweep.point_reports(point)):
        scrub_folder(folder, uri)
    rec = make_record(point, {**out, "reason": scrub(out.get("reason") or "", uri) or None}, parent_run_id)
    write_json(sweep.point_build(point) / "point.json", rec)
    if rec["status"] == "ok":
        metric = rank_metric(sweep)
        value = rec["challenger"]["metrics"][metric]
        how = "skipped (unchanged)" if TRAIN in rec["skipped"] else "ran"
        say(f"✓ point {point.index} [{point.label}]: {metric} {value:.4f} ({how})")
    else:
        say(f"✗ point {point.index} [{point.label}]: {rec['reason']}")
    return rec


def close_interrupted(parent_run_id: str) -> None:
    """An interrupted sweep leaves no run RUNNING: its unfinished points' runs and the parent."""
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    running = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
    )
    for run in running:
        client.set_terminated(run.info.run_id, status="KILLED")
    client.set_terminated(parent_run_id, status="KILLED")


def finish_parent(
    parent_run_id: str, sweep: Sweep, records: list[dict], seconds: float, tags: dict[str, str] | None = None
) -> None:
    """Close runs that dead workers left RUNNING, then the parent run with the sweep's figures
    (and `tags`: a search's study summary)."""
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    for rec in records:
        if rec["status"] == "ok":
            continue
        stuck = client.search_runs(
            [parent.info.experiment_id],
            filter_string=(
                f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                f"tags.`nbops.sweep_point` = '{rec['id']}' and attributes.status = 'RUNNING'"
            ),
        )
        for run in stuck:
            client.set_terminated(run.info.run_id, status="FAILED")
    ok = [r for r in records if r["status"] == "ok"]
    client.log_metric(parent_run_id, "points_ok", len(ok))
    client.log_metric(parent_run_id, "points_failed", len(records) - len(ok))
    client.log_metric(parent_run_id, "seconds", seconds)
    best = pick_best(ok, rank_metric(sweep))
    if best is not None:
        metric = rank_metric(sweep)
        client.log_metric(parent_run_id, f"best_{metric}", best["challenger"]["metrics"][metric])
        client.set_tag(parent_run_id, "nbops.best_point", best["id"])
    for key, value in (tags or {}).items():
        client.set_tag(parent_run_id, key, value)
    client.set_terminated(parent_run_id, status="FINISHED" if len(ok) == len(records) else "FAILED")


def pick_best(records: list[dict], metric: str = RANK_METRIC) -> dict | None:
    """The best `metric` in its direction (highest macro-F1, lowest RMSE); ties by accuracy
    (classification), then the earlier point."""
    from nbops.ml.metrics import gain

    ok = [r for r in records if r["status"] == "ok" and r.get("challenger")]
    if not ok:
        return None
    return max(
        ok,
        key=lambda r: (
            gain(metric, r["challenger"]["metrics"][metric]),
            r["challenger"]["metrics"].get("accuracy", 0.0),
            -r["index"],
        ),
    )
