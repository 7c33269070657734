"""Running a sweep: its points on the executors, the parent run, the best point through the gate."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from nbops.exceptions import NbopsError, print_problems
from nbops.params import params_hash
from nbops.products import read_json
from nbops.sweep.executors import run_dask, run_local
from nbops.sweep.kernels import WARM_ENV, warm_enabled
from nbops.sweep.point import redact_uri
from nbops.sweep.runs import (
    close_interrupted,
    finish_parent,
    finish_point,
    make_record,
    pick_best,
    point_spec,
    prepare_tracking,
)
from nbops.sweep.spec import (
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
    uri, parent_run_id = prepare_tracking(sweep, selected)
    by_id = {p.id: p for p in selected}
    specs = {p.id: point_spec(sweep, p, parent_run_id, warm) for p in selected}
    workers = workers or os.cpu_count() or 1
    where = f"Dask at {scheduler}" if scheduler else f"a local pool of {min(workers, len(specs))}"
    kernels = "warm kernels" if warm else f"warm kernels off ({WARM_ENV}=0)"
    say(f"sweep {sweep.name}: {len(selected)} point(s) on {where}, {kernels}; parent run {parent_run_id}")
    records: list[dict] = []

    def on_done(pid: str, out: dict) -> None:
        records.append(finish_point(sweep, by_id[pid], out, uri, parent_run_id))

    t0 = time.perf_counter()
    try:
        if scheduler:
            run_dask(specs, scheduler, on_done, uri)
        else:
            run_local(specs, workers, on_done, uri)
    except KeyboardInterrupt:
        close_interrupted(parent_run_id)
        raise
    finish_parent(parent_run_id, sweep, records, time.perf_counter() - t0)
    return sorted(records, key=lambda r: r["index"])


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
            rec = make_record(p, {"status": "not run", "reason": "no result for these params"}, None)
        records.append(rec)
    return records


def gate_best(sweep: Sweep, best: dict, allow_promotion: bool) -> dict:
    """The best point through the same gate as a normal run: decide, record, move aliases."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from nbops.ml import registry, tracking
    from nbops.ml.gate import decide_promotion, gate_arguments

    params = next(p for p in sweep.points if p.id == best["id"]).valid
    base_promote = bool(sweep.base_params.get("promote", True))
    champion = best["champion"] or {}
    # the paired interval the point's own evaluation drew against this champion on the same rows
    interval = (best.get("decision") or {}).get("interval") if params.gate.paired else None
    decision = decide_promotion(
        best["challenger"]["metrics"],
        champion.get("metrics") if champion.get("version") else None,
        **gate_arguments(params.gate),
        interval=interval,
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
    trials: int | None = None,
) -> SweepResult:
    """Validate every point, run them (unless `aggregate_only`), then (unless `shard`) rank,
    gate the best point and write reports/sweep/<name>/index.html (and the reports listing). A
    search (`search: optuna`) runs its trials instead, up to `trials` (default: the file's
    n_trials) in the study."""
    sweep = load_sweep(sweep_file, root)
    result = SweepResult(sweep)
    study = None
    if sweep.search is not None:
        from nbops.sweep.search import run_search

        if shard:
            raise SweepError(f"{sweep.shown}: --shard does not apply to a search (one study asks the trials)")
        result.records, result.ran, study = run_search(
            sweep, scheduler, workers, trials, run=not aggregate_only
        )
    else:
        if trials is not None:
            raise SweepError(f"{sweep.shown}: --trials applies only to a sweep with search: optuna")
        if not aggregate_only:
            result.records = run_points(sweep, scheduler, workers, shard)
        if shard:
            return result
        result.records = collect_records(sweep)
    from nbops.sweep.report import render_sweep_report

    result.best = pick_best(result.records, rank_metric(sweep))
    if result.best is not None:
        result.decision = gate_best(sweep, result.best, allow_promotion)
    result.report = render_sweep_report(sweep, result.records, result.best, result.decision, study)
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
    trials: int | None = None,
) -> int:
    try:
        result = run_sweep(
            sweep_file, root, scheduler, workers, shard, aggregate_only, allow_promotion, trials
        )
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
    print(f"trials={sweep.search.n_trials}" if sweep.search else f"points={len(sweep.points)}")
    return 0
