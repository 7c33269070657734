"""The run: plan, validate, the steps that are not current, promotion, reports."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from nbops.exceptions import NbopsError, StepError, print_problems
from nbops.layout import (
    EVALUATE,
    EVALUATION,
    INDEX_FILE,
    MODEL_FILE,
    SUMMARY_FILE,
    TABLE_FILE,
    TRAIN,
    VALIDATE,
    build_dir,
    build_root,
    executed_notebook,
    params_name,
    reports_dir,
)
from nbops.products import read_json, write_json
from nbops.runner.folders import claim_folders, params_folders
from nbops.runner.noop import LAST_RUN, _say_data, build_lock, remember_run, unchanged_since_last_run
from nbops.runner.plan import STEPS, Plan, RunResult, check_step_names, make_plan
from nbops.runner.progress import say
from nbops.runner.reports_index import gate_line, render_reports_index
from nbops.runner.schedule import RunBudget, _execute_all
from nbops.runner.stamps import tracking_uri_for_key, write_stamp
from nbops.runner.warm import Kernels, KernelSupply

# ------------------------------------------------------------------ steps


def run_validate(plan: Plan) -> None:
    """Read and validate the CSV once, in-process, and hand the table on as parquet."""
    from nbops.ml.data import check_table, read_table

    params = plan.params
    shown = (
        plan.data_path.relative_to(plan.root) if plan.data_path.is_relative_to(plan.root) else plan.data_path
    )
    df = check_table(read_table(plan.data_path, params.data, shown), params, shown)
    out = plan.build / VALIDATE
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (TABLE_FILE + ".tmp")
    df.to_parquet(tmp)
    tmp.replace(out / TABLE_FILE)


def preflight(plan: Plan, to_run: list[str]) -> None:
    """Checks that need heavier imports, only when a step will actually run."""
    if TRAIN in to_run:
        from nbops.ml.models import make_estimator

        source = str(
            plan.params_file.relative_to(plan.root)
            if plan.params_file.is_relative_to(plan.root)
            else plan.params_file
        )
        make_estimator(plan.params.model.name, plan.params.model.params, source, plan.params.task)
        from nbops.ml.models import size_warnings

        for line in size_warnings(plan.params.model.params, source, plan.params.run.timeout_s):
            print(f"warning: {line}", file=sys.stderr, flush=True)


def run_pipeline(
    params_file: str | Path,
    root: str | Path = ".",
    force: bool = False,
    only: list[str] | None = None,
    jobs: int = 2,
    build: str | Path | None = None,
    reports: str | Path | None = None,
    provenance: dict | None = None,
    kernel_supply: KernelSupply | None = None,
) -> RunResult:
    """Run (or skip) every step; render reports even when a step failed.

    `build`/`reports` default to the params file's own, build/<name>/ and reports/<name>/
    (nbops.runner.folders; sweeps give each point its own); `provenance` overrides runner
    parameters that are not cache inputs (`parent_run_id`, `run_tags`); `kernel_supply` hands
    each step a kernel started ahead by the caller (a sweep worker's pool), else the step's
    kernel is warmed as usual."""
    t0 = time.perf_counter()
    check_step_names(only)
    user_env = dict(os.environ)  # before any library this process imports sets its own
    root = Path(root).resolve()
    params_file = Path(params_file)
    params_file = params_file if params_file.is_absolute() else (root / params_file)
    # build/<name>/ and reports/<name>/ unless given (sweeps give each point its own)
    folders = params_folders(root, params_file) if build is None or reports is None else None
    build = Path(build).resolve() if build else build_dir(root, params_name(params_file))
    reports = Path(reports).resolve() if reports else reports_dir(root, params_name(params_file))
    # (a first run, or a bad params file, must not even create build/: only look when a record is there)
    if not force and not only and provenance is None and (build / LAST_RUN).is_file():
        with build_lock(build):
            unchanged = unchanged_since_last_run(params_file, root, build, reports)
        if unchanged is not None:
            if folders is not None:
                render_reports_index(root)
            say(f"done in {time.perf_counter() - t0:.1f}s")
            return unchanged
    from nbops.runner.spares import keep_warm_seconds

    plan = make_plan(params_file, root, build, reports, provenance)
    # sweeps (provenance) give each point a build folder of its own: no spares there
    keep_warm_s = keep_warm_seconds() if provenance is None else 0
    if provenance is None and not keep_warm_s:
        from nbops.runner.spares import stop_all

        stop_all(build_root(root))  # turned off: no kernel of an earlier run stays behind
    with build_lock(plan.build):
        if folders is not None and plan.build == folders.build:
            claim_folders(folders, root, params_file)
        result = _run(plan, root, force, only, jobs, t0, keep_warm_s, user_env, kernel_supply)
        if result.ok and not only and provenance is None:  # every step is current now
            remember_run(plan)
    if folders is not None:
        render_reports_index(root)
    return result


def _run(
    plan: Plan,
    root: Path,
    force: bool,
    only,
    jobs: int,
    t0: float,
    keep_warm_s: float = 0.0,
    user_env: dict[str, str] | None = None,
    kernel_supply: KernelSupply | None = None,
) -> RunResult:
    result = RunResult()
    wanted = [s for s in STEPS if not only or s.name in only]
    if only:
        # an explicitly asked step still needs its upstream products
        names = set(only)
        for step in reversed(STEPS):
            if step.name in names:
                names.update(n for n in step.needs if n != VALIDATE)
        wanted = [s for s in STEPS if s.name in names]
    _say_data(plan.data_path, root, plan.params.data.path, plan.synthetic)
    with RunBudget(plan.params.run.timeout_s, t0) as budget:
        kernels = _run_steps(plan, wanted, result, force, jobs, keep_warm_s, user_env, budget, kernel_supply)

    from nbops.runner.report import render_reports

    result.reports = render_reports(plan, result)
    if TRAIN in result.ran:
        attach_reports(plan, result)
    eval_path = plan.build / EVALUATION
    if result.ok and eval_path.exists():
        result.evaluation = read_json(eval_path)
    if kernels is not None and keep_warm_s:
        kernels.keep_warm_for_next_run(result)
    say(f"done in {time.perf_counter() - t0:.1f}s")
    return result


def _run_steps(
    plan, wanted, result, force, jobs, keep_warm_s, user_env, budget, kernel_supply=None
) -> Kernels | None:
    """Validate, then run the steps that are not current, within the run's budget; returns the
    steps' kernels (None when no step ran)."""
    root = plan.root
    # validate
    why = None if force else plan.stale_products(VALIDATE)  # hashed once: the table can be large
    if force or why or not (plan.build / VALIDATE / TABLE_FILE).exists():
        t = time.perf_counter()
        _say_stale(VALIDATE, why)
        plan.stamp_path(VALIDATE).unlink(missing_ok=True)
        run_validate(plan)
        write_stamp(plan.build, VALIDATE, plan.keys[VALIDATE])
        say(f"✓ {VALIDATE:<12} {time.perf_counter() - t:5.1f}s  table validated")
        result.ran.append(VALIDATE)
    else:
        say(f"- {VALIDATE:<12}  skipped (unchanged)")
        result.skipped.append(VALIDATE)

    stale = {s.name: None if force else plan.stale_products(s.name) for s in wanted}
    to_run = [s.name for s in wanted if force or stale[s.name]]
    for name in to_run:
        _say_stale(name, stale[name])
    # anything downstream of a step that runs must run too
    for step in wanted:
        if any(n in to_run for n in step.needs) and step.name not in to_run:
            to_run.append(step.name)
    for step in wanted:
        if step.name not in to_run:
            say(f"- {step.name:<12}  skipped (unchanged)")
            result.skipped.append(step.name)

    if to_run and budget.expired.is_set():  # spent while validating: no kernel starts
        result.failure = StepError(VALIDATE, None, "RunTimeoutError", budget.reason)
        for name in to_run:
            say(f"✗ {name:<12}  not run ({budget.reason})")
            result.not_run.append(name)
        return None
    kernels = None
    if to_run:
        steps = [s for s in wanted if s.name in to_run]
        if any(s.tracked for s in steps):
            # before any kernel starts, so every kernel inherits the store's URI. The store itself
            # is created by the first step that writes to it, under tracking.store_lock
            from nbops.ml import tracking

            tracking.configure_tracking(root)
        kernels = _kernels_and_preflight(plan, steps, to_run, keep_warm_s, user_env, kernel_supply)
        budget.watch(kernels.warm)
        try:
            _execute_all(plan, steps, result, jobs, kernels.warm, budget)
            settle_promotion(plan, result)
        except BaseException:
            withdraw_pending_promotion(plan)  # interrupted before the alias could move
            raise
        finally:
            kernels.shutdown()  # steps that never ran (upstream failed, store down)
    return kernels


def _kernels_and_preflight(plan, steps, to_run, keep_warm_s, user_env, kernel_supply) -> Kernels:
    """The steps' kernels, once `preflight` has passed. New kernels start first and import
    meanwhile (it imports scikit-learn: 1.5 s with one core idle), and are stopped if it
    refuses: forked from one kernel parent (nbops.runner.forks) when two or more start. Kernels
    kept warm by the last run, or a sweep's, are taken only once it passed (a refused edit
    keeps them for the next try)."""
    from nbops.runner.spares import spares_waiting

    kernels = Kernels(plan, steps, keep_warm_s, user_env or dict(os.environ))
    if kernel_supply is not None or spares_waiting(build_root(plan.root)):
        preflight(plan, to_run)
        return kernels.start(kernel_supply)
    from nbops.runner.forks import start_run_forks

    kernels.start(*start_run_forks(plan, kernels.code, kernels.nice))
    try:
        preflight(plan, to_run)
    except BaseException:
        kernels.shutdown()  # they only imported: no step ran, nothing to undo
        raise
    return kernels


def settle_promotion(plan: Plan, result: RunResult) -> None:
    """Move `champion` as this run's evaluate step decided, now that every step has finished:
    only when all of them succeeded. A failed run moves no alias, and its evaluate step runs
    again next time, so the decision is made anew when the run can succeed."""
    path = plan.build / EVALUATION
    if EVALUATE not in result.ran or not path.is_file():
        return
    record = read_json(path)
    if record.get("promotion") != "pending":
        return
    from nbops.ml import registry
    from nbops.ml.gate import Decision

    decision = Decision(**record["decision"])
    if result.failure is not None:
        decision.promote = False
        decision.verdict = "not promoted (run failed)"
        decision.reasons.append(f"{result.failure.step} failed: a failed run moves no alias")
        plan.stamp_path(EVALUATE).unlink(missing_ok=True)
    try:
        decision = registry.apply_decision(record["model_name"], decision)
    except Exception as exc:  # the store went away after the evaluation: nothing moved
        decision.promote = False
        decision.verdict = "not promoted (run failed)"
        decision.reasons.append(f"could not move champion: {type(exc).__name__}: {exc}")
        plan.stamp_path(EVALUATE).unlink(missing_ok=True)
        result.failure = result.failure or StepError(EVALUATE, None, type(exc).__name__, str(exc))
    record["decision"] = decision.to_dict()
    record["promotion"] = "applied" if decision.promote else "withheld"
    record["champion_after"] = (
        decision.challenger_version if decision.promote else record["champion"]["version"]
    )
    write_json(path, record)
    if plan.stamp_path(EVALUATE).is_file():  # the settled record is the step's product now
        write_stamp(plan.build, EVALUATE, plan.keys[EVALUATE])


def _say_stale(step: str, why: str | None) -> None:
    """Say why a step whose inputs did not change runs again (a product edited or gone)."""
    if why and why not in ("its inputs changed", "not run yet"):
        say(f"↻ {step:<12}  runs again: {why}")


def withdraw_pending_promotion(plan: Plan) -> None:
    """An interrupted run leaves no decided-but-unapplied promotion behind a current stamp."""
    with contextlib.suppress(OSError, ValueError):
        if read_json(plan.build / EVALUATION).get("promotion") == "pending":
            plan.stamp_path(EVALUATE).unlink(missing_ok=True)


def attach_reports(plan: Plan, result: RunResult) -> None:
    """The executed notebooks and HTML reports of this run, on its training run (`reports/`)."""
    try:
        run_id = read_json(plan.build / TRAIN / MODEL_FILE)["run_id"]
    except (OSError, ValueError, KeyError):
        return  # training failed before it registered anything
    steps = [*result.ran, *([result.failure.step] if result.failure else [])]
    files = [executed_notebook(plan.build, s) for s in steps] + [plan.reports / f"{s}.html" for s in steps]
    files += [plan.reports / INDEX_FILE, plan.reports / SUMMARY_FILE]
    from nbops.ml import tracking

    try:
        tracking.log_reports(run_id, [f for f in files if f.is_file()])
    except Exception as exc:  # the run itself succeeded or failed on its own terms: say, go on
        say(f"! could not attach the reports to run {run_id} ({type(exc).__name__}: {exc})")


def render_only(params_file: str | Path, root: str | Path = ".") -> Path:
    """Re-render reports/<name>/ from build/<name>/ without running anything, and the listing."""
    from nbops.runner.report import render_reports

    root = Path(root).resolve()
    params_file = Path(params_file)
    params_file = params_file if params_file.is_absolute() else root / params_file
    folders = params_folders(root, params_file)
    plan = make_plan(params_file, root, folders.build, folders.reports)
    # the last successful execution of each step, even if code changed since (that is what
    # `make report` is for); a step that never succeeded shows as not run
    result = RunResult(skipped=[s.name for s in STEPS if plan.stamp_path(s.name).exists()])
    reports = render_reports(plan, result, rerender=True)
    render_reports_index(root)
    return reports


# ------------------------------------------------------------------ CLI glue


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def _say_registry_champion(root: Path, model_name: str) -> None:
    """The champion as the registry has it now (a local store answers without mlflow)."""
    from nbops.runner import store_probe

    version = store_probe.alias_version(tracking_uri_for_key(root), model_name, "champion")
    if version is None:  # a tracking server: asking it would cost the no-op its speed
        say("gate: not re-evaluated (03_evaluate unchanged); `make champion` reads the registry")
    else:
        say(f"champion: {model_name} v{version} (registry)" if version else "champion: none yet (registry)")


def main_run(params_file: str, root: str, force: bool, only: list[str] | None, jobs: int) -> int:
    try:
        check_step_names(only)
    except NbopsError as exc:
        print_problems(exc)
        return 2
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        result = run_pipeline(params_file, root, force=force, only=only, jobs=jobs)
    except KeyboardInterrupt:
        print("error: interrupted; unfinished steps will run again next time", file=sys.stderr)
        return 130
    except NbopsError as exc:
        print_problems(exc)
        return 1
    index = result.reports / INDEX_FILE if result.reports else None
    if result.evaluation and EVALUATE in result.ran:
        decision = result.evaluation["decision"]
        say(f"gate: {gate_line(decision)}")
        if decision.get("interval"):
            from nbops.ml.bootstrap import describe

            say(f"      {describe(decision['interval'])}")
        after = result.evaluation["champion_after"]
        say(f"champion: {result.evaluation['model_name']} v{after}" if after else "champion: none yet")
    elif result.evaluation:  # the last evaluation's champion may be stale (a rollback since)
        _say_registry_champion(Path(root).resolve(), result.evaluation["model_name"])
    if index:
        say(f"reports: {index}")
    if result.failure:
        print(f"error: {result.failure}", file=sys.stderr)
        return 1
    return 0
