"""`search: optuna`: Optuna's TPE sampler asks for trials, each trial runs as a sweep point on the
same executors, and its primary metric is told back to the study.

The study lives in an Optuna RDB storage beside the tracking store, never inside MLflow's own
database: both keep their schema revision in a table named `alembic_version`, and Optuna refuses
a database whose `alembic_version` holds MLflow's revision (after creating its tables there).
So: `optuna.db` beside a sqlite `mlflow.db`; for PostgreSQL, the schema `optuna` of the same
database (its own `alembic_version`); `NBOPS_OPTUNA_STORAGE` (a database URL) for any other
store, such as an MLflow server over HTTP.

The study is named after the sweep: running the sweep again with a higher `n_trials` (or
`--trials N`) keeps its finished trials and runs only the new ones. A trial counts once it has
a result or failed on its own; one an interrupt stopped, or one a stopped search left running
(told failed when the study is next opened to run), is run again. A resumed study's sampler is
seeded with `seed + trials so far`, so it does not draw the first trials' values again.

Every trial of one search runs on one executor (a LocalPool or one Dask client), so the
workers and their warm kernels serve trial after trial, as they serve a grid's points.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbops.exceptions import NbopsError
from nbops.params import params_hash
from nbops.products import read_json
from nbops.sweep.executors import DaskPool, LocalPool
from nbops.sweep.point import redact_uri, scrub
from nbops.sweep.runs import (
    finish_parent,
    finish_point,
    pick_best,
    point_spec,
    prepare_tracking,
    record_of,
)
from nbops.sweep.space import Search
from nbops.sweep.spec import (
    Point,
    Sweep,
    SweepError,
    format_overrides,
    rank_direction,
    rank_metric,
    say,
    validate_overrides,
)

if TYPE_CHECKING:
    import optuna

ENV_STORAGE = "NBOPS_OPTUNA_STORAGE"
RUNNER_ATTR = "runner"  # host:pid of the search running a trial
INTERRUPTED_ATTR = "interrupted"  # a trial an interrupt stopped: run again on resume
STUDY_FILE = "optuna.db"  # beside a sqlite mlflow.db
STUDY_SCHEMA = "optuna"  # in a PostgreSQL store's database

# (value of the primary metric or None for a failed trial, user attributes to keep on it)
TrialOutcome = tuple[float | None, dict[str, Any]]


def study_storage(tracking_uri: str, shown: str) -> tuple[str, dict[str, Any]]:
    """The study's database URL and SQLAlchemy engine options, beside the tracking store."""
    if os.environ.get(ENV_STORAGE):
        return os.environ[ENV_STORAGE], {}
    scheme = tracking_uri.split(":", 1)[0]
    if scheme == "sqlite" and tracking_uri.startswith("sqlite:///"):
        store = Path(tracking_uri.removeprefix("sqlite:///"))
        return f"sqlite:///{store.with_name(STUDY_FILE)}", {}
    if scheme.split("+", 1)[0] == "postgresql":
        return tracking_uri, {"connect_args": {"options": f"-c search_path={STUDY_SCHEMA}"}}
    raise SweepError(
        f"{shown}: search: optuna keeps its study beside a sqlite or PostgreSQL tracking store, and "
        f"{redact_uri(tracking_uri)} is neither: set {ENV_STORAGE} to a database URL for the study"
    )


def open_study(sweep: Sweep, tracking_uri: str, run: bool = True) -> optuna.Study:
    """The sweep's study (created on first use), its sampler seeded for the trials to come.
    To `run` it, trials a stopped search left running are told failed first."""
    import optuna
    import sqlalchemy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if sweep.search is None:
        raise SweepError(f"{sweep.shown}: not a search")
    url, engine_kwargs = study_storage(tracking_uri, sweep.shown)
    metric = rank_metric(sweep)
    direction = rank_direction(metric)
    try:
        if "connect_args" in engine_kwargs:  # PostgreSQL: the schema first, then Optuna's tables in it
            engine = sqlalchemy.create_engine(url)
            with engine.begin() as conn:
                conn.execute(sqlalchemy.text(f"CREATE SCHEMA IF NOT EXISTS {STUDY_SCHEMA}"))
            engine.dispose()
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        seed = sweep.search.seed
        study = optuna.create_study(
            study_name=sweep.name,
            storage=storage,
            sampler=optuna.samplers.TPESampler(seed=seed),
            direction=direction,
            load_if_exists=True,
        )
    except (sqlalchemy.exc.SQLAlchemyError, RuntimeError, ValueError) as exc:
        reason = scrub(f"{type(exc).__name__}: {exc}".splitlines()[0], url)
        raise SweepError(f"{sweep.shown}: cannot open the study at {redact_uri(url)}: {reason}") from None
    if study.direction.name.lower() != direction:
        raise SweepError(f"{sweep.shown}: study {sweep.name} does not {direction} {metric}")
    if run:
        fail_stale_trials(study)
    done = len(study.trials)
    if done:
        study = optuna.load_study(
            study_name=sweep.name, storage=storage, sampler=optuna.samplers.TPESampler(seed=seed + done)
        )
    return study


def fail_stale_trials(study: optuna.Study) -> None:
    """Trials a stopped search left running are told failed (they have no result to tell); a
    trial another search is running (its process alive here, or on another machine) is left."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if not runner_alive(trial.user_attrs.get(RUNNER_ATTR)):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def runner_alive(runner: str | None) -> bool:
    """Whether the search `host:pid` may still run its trial: its process is alive on this
    machine, or it is another machine's (which cannot be told from here)."""
    host, _, pid = (runner or "").rpartition(":")
    if not host:
        return False
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def counted_trials(study: optuna.Study) -> int:
    """Trials toward n_trials: those with a result, those that failed on their own (a mix of
    values the estimator refuses, a failed step) and those another search is running. Not those
    an interrupt stopped or a stopped search left running: a resumed search runs them again."""
    from optuna.trial import TrialState

    def counts(t) -> bool:
        attrs = t.user_attrs
        if t.state == TrialState.RUNNING:
            return runner_alive(attrs.get(RUNNER_ATTR))
        if t.state == TrialState.FAIL:
            return "reason" in attrs and not attrs.get(INTERRUPTED_ATTR)
        return t.state == TrialState.COMPLETE

    return sum(counts(t) for t in study.get_trials(deepcopy=False))


def drive(
    study: optuna.Study,
    search: Search,
    n_new: int,
    slots: int,
    run_trial: Callable[[int, dict[str, Any]], TrialOutcome],
    on_interrupt: Callable[[], None] | None = None,
) -> list[int]:
    """Ask-and-tell: ask as many trials as there are slots, tell each as it finishes and ask the
    next in its place. `run_trial(number, params)` runs one trial; a None value is told failed
    and the study goes on. Asks and tells are serialised; returns the trial numbers asked.
    On Ctrl-C (or a trial that raised) no more are asked, `on_interrupt` stops the executor
    and the trials still running are told failed as interrupted."""
    from optuna.trial import TrialState

    distributions = search.distributions()
    lock = threading.Lock()
    left = [n_new]
    stopped = threading.Event()
    asked: list[int] = []
    runner = f"{socket.gethostname()}:{os.getpid()}"

    def loop() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
                trial = study.ask(distributions)
                trial.set_user_attr(RUNNER_ATTR, runner)
                asked.append(trial.number)
            value: float | None = None
            attrs: dict[str, Any] = {}
            raised = True
            try:
                value, attrs = run_trial(trial.number, dict(trial.params))
                raised = False
            finally:  # a trial that raised is told failed too, never left running
                with lock:
                    if raised or (stopped.is_set() and value is None):  # no result of its own
                        attrs = {**attrs, INTERRUPTED_ATTR: True}
                    for key, item in attrs.items():
                        trial.set_user_attr(key, item)
                    # skip_if_finished: another search may have told it failed meanwhile
                    if value is None:
                        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                    else:
                        study.tell(trial, value, skip_if_finished=True)

    def stop() -> None:  # Ctrl-C or a trial that raised: no more asks, the running ones end
        with lock:
            left[0] = 0
            stopped.set()
        if on_interrupt is not None:
            on_interrupt()

    _in_threads(loop, max(1, min(slots, n_new)), stop)
    return asked


def _in_threads(loop: Callable[[], None], width: int, stop: Callable[[], None]) -> None:
    """`loop` in `width` threads until each returns; `stop` first when one raises (or Ctrl-C)."""
    pool = ThreadPoolExecutor(max_workers=width)
    futures = [pool.submit(loop) for _ in range(width)]
    try:
        for fut in futures:
            fut.result()
    except BaseException:
        stop()
        raise
    finally:
        pool.shutdown(wait=True)


def trial_point(sweep: Sweep, number: int, overrides: dict[str, Any]) -> Point:
    """A trial as a sweep point: validated once; its folder names the trial and its params."""
    where = f"{sweep.shown}: trial {number} ({format_overrides(overrides)})"
    params = validate_overrides(sweep.base_params, overrides, where)
    return Point(number + 1, f"t{number:04d}-{params_hash(overrides)[:8]}", overrides, params)


def _executor(scheduler: str | None, workers: int | None, uri: str) -> tuple[LocalPool | DaskPool, int]:
    """The one executor every trial of the search runs on, and how many trials run at once:
    the workers asked for, else the cores or the Dask cluster's workers."""
    if scheduler:
        dask = DaskPool(scheduler, uri)
        return dask, workers or dask.workers()
    slots = workers or os.cpu_count() or 1
    return LocalPool(slots, uri), slots


def _trial_runner(
    sweep: Sweep, executor: LocalPool | DaskPool, uri: str, parent_run_id: str, records: list[dict]
) -> Callable[[int, dict[str, Any]], TrialOutcome]:
    metric = rank_metric(sweep)

    def run_trial(number: int, overrides: dict[str, Any]) -> TrialOutcome:
        try:
            point = trial_point(sweep, number, overrides)
        except NbopsError as exc:  # a mix of values the estimator refuses: no kernel for it
            reason = "; ".join(exc.problems)
            say(f"✗ trial {number}: {reason}")
            records.append(record_of(number + 1, f"t{number:04d}", overrides, None, {"reason": reason}, None))
            return None, {"reason": reason}
        out = executor.run(point_spec(sweep, point, parent_run_id))
        rec = finish_point(sweep, point, out, uri, parent_run_id)
        records.append(rec)
        ok = rec["status"] == "ok"
        value = rec["challenger"]["metrics"][metric] if ok else None
        return value, {"point_id": point.id, **({} if ok else {"reason": rec["reason"]})}

    return run_trial


def run_search(
    sweep: Sweep,
    scheduler: str | None = None,
    workers: int | None = None,
    trials: int | None = None,
    run: bool = True,
) -> tuple[list[dict], set[str], optuna.Study]:
    """Run the study up to `trials` (default n_trials) counted trials (`counted_trials`); returns
    every trial's record, the point ids of those run here and the study. Fills `sweep.points`
    (for the gate)."""
    from nbops.ml import tracking

    search = sweep.search
    if search is None:
        raise SweepError(f"{sweep.shown}: not a search")
    if trials is not None and trials < 1:
        raise SweepError(f"{sweep.shown}: --trials {trials}: must be at least 1")
    target = trials or search.n_trials
    uri = tracking.configure_tracking(sweep.root)
    study = open_study(sweep, uri, run=run)
    counted = counted_trials(study)
    n_new = target - counted if run else 0
    ran: set[str] = set()
    if n_new <= 0:
        say(f"search {sweep.name}: the study has {counted} trial(s) of {target}: none to run")
    else:
        base = Point(0, "base", {}, validate_overrides(sweep.base_params, {}, sweep.shown))
        uri, parent_run_id = prepare_tracking(sweep, [base])
        executor, slots = _executor(scheduler, workers, uri)
        where = f"Dask at {scheduler}" if scheduler else "a local pool"
        say(
            f"search {sweep.name}: {n_new} new trial(s) after {counted}, {slots} at once on "
            f"{where}; parent run {parent_run_id}"
        )
        new: list[dict] = []
        t0 = time.perf_counter()
        try:
            run_trial = _trial_runner(sweep, executor, uri, parent_run_id, new)
            drive(study, search, n_new, slots, run_trial, on_interrupt=executor.close)
        finally:  # also when interrupted: the workers, the parent run and the trials' runs are closed
            executor.close()
            ran = {r["id"] for r in new}
            tags = study_tags(study, trial_records(sweep, study), len(new), rank_metric(sweep))
            finish_parent(parent_run_id, sweep, new, time.perf_counter() - t0, tags)
    return trial_records(sweep, study), ran, study


def trial_records(sweep: Sweep, study: optuna.Study) -> list[dict]:
    """Every finished trial's record (its point.json, or what the study knows of a trial that
    never ran a kernel); the completed ones become `sweep.points` (for the gate)."""
    from optuna.trial import TrialState

    records, points = [], []
    keys = list(sweep.search.space) if sweep.search else []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        pid = t.user_attrs.get("point_id")
        # the space's order (the storage gives a trial's params sorted by name)
        overrides = {
            k: t.params[k] for k in sorted(t.params, key=lambda k: keys.index(k) if k in keys else len(keys))
        }
        rec = None
        if pid and (sweep.build / pid / "point.json").is_file():
            rec = read_json(sweep.build / pid / "point.json")
        if rec is None:
            reason = t.user_attrs.get("reason") or "no result for this trial in build/"
            shown_id = pid or f"t{t.number:04d}"
            rec = record_of(t.number + 1, shown_id, overrides, None, {"reason": reason}, None)
        elif t.state == TrialState.COMPLETE:
            points.append(trial_point(sweep, t.number, overrides))
        rec["trial"] = t.number
        records.append(rec)
    sweep.points = points
    return records


def study_tags(study: optuna.Study, records: list[dict], ran: int, metric: str) -> dict[str, str]:
    """The study's summary for the parent run: the best trial (as the sweep ranks it), counts."""
    ok = sum(r["status"] == "ok" for r in records)
    tags = {
        "nbops.points": str(ran),
        "nbops.optuna.study": study.study_name,
        "nbops.optuna.trials_complete": str(ok),
        "nbops.optuna.trials_failed": str(len(records) - ok),
    }
    best = pick_best(records, metric)
    if best is not None:
        tags["nbops.optuna.best_trial"] = str(best["trial"])
        tags["nbops.optuna.best_value"] = repr(best["challenger"]["metrics"][metric])
        tags["nbops.optuna.best_params"] = json.dumps(best["overrides"], sort_keys=True)
    return tags
