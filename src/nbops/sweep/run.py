"""Running a sweep: its points on the executors, the parent run, the best point through the gate."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import yaml

from nbops.exceptions import NbopsError, print_problems
from nbops.layout import TRAIN
from nbops.params import params_hash
from nbops.products import read_json, write_json
from nbops.sweep.kernels import WARM_ENV, warm_enabled
from nbops.sweep.point import redact_uri, run_dask, run_local, scrub, scrub_folder
from nbops.sweep.spec import (
    RANK_METRIC,
    Point,
    Sweep,
    SweepError,
    SweepResult,
    format_overrides,
    load_sweep,
    rank_metric,
    say,
)


def _parse_shard(shard: str | None) -> tuple[int, int] | None:
    if not shard:
        return None
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise SweepError(f"--shard {shard!r}: expected I/N, e.g. 1/4") from None
    if not 1 <= i <= n:
        raise SweepError(f"--shard {shard!r}: I must be between 1 and N")
    return i, n


def _prepare_tracking(sweep: Sweep, selected: list[Point]) -> tuple[str, str]:
    """Serially, before parallel work: the store, the experiment, the registered model, the
    synthetic table and the parent run. Returns (tracking URI, parent run id)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from nbops.ml import tracking
    from nbops.ml.data import resolve_data_path
    from nbops.params import Params

    params = Params.model_validate(selected[0].params)
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


def _record(sweep: Sweep, point: Point, out: dict, parent_run_id: str | None) -> dict:
    ev = out.get("evaluation") or {}
    return {
        "index": point.index,
        "id": point.id,
        "overrides": point.overrides,
        "params_hash": params_hash(point.params),
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


def _point_specs(sweep: Sweep, selected: list[Point], parent_run_id: str, warm: bool) -> dict[str, dict]:
    """What each point's worker needs (spec.json): folders, params file, provenance. Never the
    tracking URI: executors hand that over in the environment."""
    specs = {}
    for p in selected:
        build = sweep.point_build(p)
        build.mkdir(parents=True, exist_ok=True)
        params_file = build / "params.yaml"
        params_file.write_text(yaml.safe_dump(p.params, sort_keys=False), encoding="utf-8")
        specs[p.id] = {
            "root": str(sweep.root),
            "params": str(params_file),
            "build": str(build),
            "reports": str(sweep.point_reports(p)),
            "warm": warm,
            "provenance": {
                "parent_run_id": parent_run_id,
                "run_tags": {
                    "sweep": sweep.name,
                    "sweep_point": p.id,
                    **{f"override.{k}": json.dumps(v) for k, v in p.overrides.items()},
                },
            },
        }
    return specs


def _recorder(sweep: Sweep, selected: list[Point], uri: str, parent_run_id: str, records: list[dict]):
    """The executors' `on_done`: scrub the point's folders, write and keep its record, say it."""
    by_id = {p.id: p for p in selected}

    def on_done(pid: str, out: dict) -> None:
        point = by_id[pid]
        for folder in (sweep.point_build(point), sweep.point_reports(point)):
            scrub_folder(folder, uri)
        rec = _record(
            sweep, point, {**out, "reason": scrub(out.get("reason") or "", uri) or None}, parent_run_id
        )
        write_json(sweep.point_build(point) / "point.json", rec)
        records.append(rec)
        if rec["status"] == "ok":
            metric = rank_metric(sweep)
            value = rec["challenger"]["metrics"][metric]
            how = "skipped (unchanged)" if TRAIN in rec["skipped"] else "ran"
            say(f"✓ point {point.index} [{point.label}]: {metric} {value:.4f} ({how})")
        else:
            say(f"✗ point {point.index} [{point.label}]: {rec['reason']}")

    return on_done


def run_points(
    sweep: Sweep,
    scheduler: str | None = None,
    workers: int | None = None,
    shard: str | None = None,
) -> list[dict]:
    """Run this shard's points (all by default); write each point's record to its build folder."""
    parsed = _parse_shard(shard)
    selected = [p for p in sweep.points if parsed is None or (p.index - 1) % parsed[1] == parsed[0] - 1]
    if not selected:
        say(f"sweep {sweep.name}: no points in shard {shard}")
        return []
    warm = warm_enabled()  # a bad NBOPS_SWEEP_WARM stops the sweep before the store is touched
    uri, parent_run_id = _prepare_tracking(sweep, selected)
    specs = _point_specs(sweep, selected, parent_run_id, warm)
    workers = workers or os.cpu_count() or 1
    where = f"Dask at {scheduler}" if scheduler else f"a local pool of {min(workers, len(specs))}"
    kernels = "warm kernels" if warm else f"warm kernels off ({WARM_ENV}=0)"
    say(f"sweep {sweep.name}: {len(selected)} point(s) on {where}, {kernels}; parent run {parent_run_id}")
    records: list[dict] = []
    on_done = _recorder(sweep, selected, uri, parent_run_id, records)
    t0 = time.perf_counter()
    try:
        if scheduler:
            run_dask(specs, scheduler, on_done, uri)
        else:
            run_local(specs, workers, on_done, uri)
    except KeyboardInterrupt:
        _close_interrupted(parent_run_id)
        raise
    _finish_parent(parent_run_id, sweep, records, time.perf_counter() - t0)
    return sorted(records, key=lambda r: r["index"])


def _close_interrupted(parent_run_id: str) -> None:
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


def _finish_parent(parent_run_id: str, sweep: Sweep, records: list[dict], seconds: float) -> None:
    """Close runs that dead workers left RUNNING, then the parent run with the sweep's figures."""
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
    client.set_terminated(parent_run_id, status="FINISHED" if len(ok) == len(records) else "FAILED")


def collect_records(sweep: Sweep) -> list[dict]:
    """Every point's record from the build folder (also shards' products copied there by CI)."""
    records = []
    for p in sweep.points:
        file = sweep.point_build(p) / "point.json"
        rec = None
        if file.exists():
            try:
                rec = read_json(file)
            except (OSError, ValueError):
                rec = None
        if rec is None or rec.get("params_hash") != params_hash(p.params):
            rec = _record(sweep, p, {"status": "not run", "reason": "no result for these params"}, None)
        records.append(rec)
    return records


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


def gate_best(sweep: Sweep, best: dict, allow_promotion: bool) -> dict:
    """The best point through the same gate as a normal run: decide, record, move aliases."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from nbops.ml import registry, tracking
    from nbops.ml.gate import decide_promotion, gate_arguments
    from nbops.params import Params

    params = Params.model_validate(sweep.points[best["index"] - 1].params)
    base_promote = bool(sweep.base_params.get("promote", True))
    champion = best["champion"] or {}
    decision = decide_promotion(
        best["challenger"]["metrics"],
        champion.get("metrics") if champion.get("version") else None,
        **gate_arguments(params.gate),
        allow_promotion=allow_promotion and base_promote,
        challenger_version=best["challenger"]["version"],
        champion_version=champion.get("version"),
    )
    if allow_promotion and not base_promote:
        decision.reasons.append(f"{sweep.base.name} has promote: false")
    tracking.configure_tracking(sweep.root)
    client = mlflow.MlflowClient()
    name = best["model_name"]
    try:
        version = client.get_model_version(name, best["challenger"]["version"])
    except MlflowException:
        version = None
    if version is None or version.run_id != best["challenger"]["run_id"]:
        # e.g. CI shards that each used a throwaway store: decide and report, touch nothing
        decision.promote = False
        decision.verdict = "not promoted (model not in this registry)"
        decision.reasons.append(
            f"{name} v{best['challenger']['version']} of run {best['challenger']['run_id']} is not in "
            f"the registry at {redact_uri(mlflow.get_tracking_uri())}: no alias moved"
        )
        return decision.to_dict()
    decision = registry.apply_decision(name, decision, client)
    client.set_registered_model_alias(name, tracking.CHALLENGER, version.version)
    client.set_model_version_tag(name, version.version, "nbops.sweep", sweep.name)
    return decision.to_dict()


def run_sweep(
    sweep_file: str | Path,
    root: str | Path = ".",
    scheduler: str | None = None,
    workers: int | None = None,
    shard: str | None = None,
    aggregate_only: bool = False,
    allow_promotion: bool = True,
) -> SweepResult:
    """Validate every point, run them (unless `aggregate_only`), then (unless `shard`) rank,
    gate the best point and write reports/sweep/<name>/index.html (and the reports listing)."""
    sweep = load_sweep(sweep_file, root)
    result = SweepResult(sweep)
    if not aggregate_only:
        result.records = run_points(sweep, scheduler, workers, shard)
    if shard:
        return result
    from nbops.sweep.report import render_sweep_report

    result.records = collect_records(sweep)
    result.best = pick_best(result.records, rank_metric(sweep))
    if result.best is not None:
        result.decision = gate_best(sweep, result.best, allow_promotion)
    result.report = render_sweep_report(sweep, result.records, result.best, result.decision)
    from nbops.runner.reports_index import render_reports_index

    render_reports_index(sweep.root)  # reports/index.html links every sweep report
    return result


def main_sweep(
    sweep_file: str,
    root: str,
    scheduler: str | None,
    workers: int | None,
    shard: str | None,
    aggregate_only: bool,
    allow_promotion: bool,
) -> int:
    try:
        result = run_sweep(sweep_file, root, scheduler, workers, shard, aggregate_only, allow_promotion)
    except NbopsError as exc:
        print_problems(exc)
        return 1
    except KeyboardInterrupt:
        print(
            "error: interrupted; the points that finished are kept, the others run next time", file=sys.stderr
        )
        return 130
    records = result.records
    failed = result.failed
    if shard:
        say(f"shard {shard}: {len(records) - len(failed)} ok, {len(failed)} failed")
    else:
        say(
            f"sweep {result.sweep.name}: {len(records)} points, "
            f"{len(records) - len(failed)} ok, {len(failed)} failed"
        )
        if result.best:
            best = result.best
            metric = rank_metric(result.sweep)
            value = best["challenger"]["metrics"][metric]
            say(
                f"best: point {best['index']} [{format_overrides(best['overrides'])}] {metric} {value:.4f} "
                f"({best['model_name']} v{best['challenger']['version']})"
            )
            if result.decision is not None:  # set with best, like report below
                say(f"gate: {result.decision['verdict']}")
        if result.report is not None:
            say(f"report: {result.report / 'index.html'}")
    for rec in failed:
        print(
            f"error: point {rec['index']} [{format_overrides(rec['overrides'])}]: {rec['reason']}",
            file=sys.stderr,
        )
    return 1 if failed else 0


def main_check(sweep_file: str, root: str) -> int:
    """Validate every point (no kernel, no store); print `points=<n>` for CI's shard matrix."""
    try:
        sweep = load_sweep(sweep_file, root)
    except NbopsError as exc:
        print_problems(exc)
        return 1
    print(f"points={len(sweep.points)}")
    return 0
