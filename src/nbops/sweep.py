"""Parameter sweeps: many params sets through the same runner, on a local pool or on Dask.

A sweep file (`params/sweeps/*.yaml`) names a base params file and the overrides to try, as
dotted keys:

    name: trees                       # optional; default: the file's stem
    base: params/default.yaml
    grid:                             # every combination; a list of grids expands each one
      model.params.max_depth: [2, 4, 8]
      model.params.min_samples_leaf: [1, 5]
    points:                           # explicit override sets, added after the grid's
      - {model.name: random_forest, model.params.n_estimators: 50}

Every point is merged into the base and validated (params schema, hyperparameter names and
values) before anything runs: a bad point stops the sweep naming the point and the key.

Each point runs the train and evaluate notebooks through `run_pipeline` in its own
`build/sweeps/<name>/<point>/` folder (so the cache works per point: an unchanged point is
skipped), as an MLflow child run of one parent run for the sweep, tagged with its overrides,
with `promote: false`. The best point by the gate's metric then goes through the same gate
(`decide_promotion` + `apply_decision`) as a normal run, unless promotion is off (pull requests).

Executors: a local pool of worker processes bounded by the cores (default), or Dask
distributed when a scheduler address is given. A worker that dies fails its point only.

The tracking URI can carry credentials (`postgresql://user:password@host/db`), and the sweep's
folders are uploaded as CI artifacts: no point spec, record, log or report holds it. A local
worker gets it in its environment; a Dask task gets it as an argument only when it carries no
credentials, else the worker must have it in its own environment (checked against the
credential-free form). Reasons and logs are scrubbed of it in case an error message quotes it.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nbops.exceptions import NbopsError, _one_line, print_problems
from nbops.params import params_hash, parse_params, read_yaml
from nbops.products import read_json, write_json

# Keys a point may not override: the sweep decides promotion, and every point must be scored on
# the same held-out rows and registered under the same name for the ranking and the gate to be fair.
FIXED_KEYS = {
    "promote": "the sweep decides promotion",
    "data": "every point must be scored on the same held-out rows",
    "split": "every point must be scored on the same held-out rows",
    "registry": "every point must register the same model",
}
RANK_METRIC = "macro_f1"  # the gate's primary metric (nbops.gate.PRIMARY_METRIC)


class SweepError(NbopsError):
    """A sweep file is unreadable or one of its points is invalid."""


class SweepFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=80)
    base: str = Field(min_length=1)
    grid: dict[str, list[Any]] | list[dict[str, list[Any]]] = []
    points: list[dict[str, Any]] = []


@dataclass
class Point:
    index: int  # 1-based, in the order of the sweep file
    id: str  # stable across runs: a hash of the overrides (the cache folder's name)
    overrides: dict[str, Any]
    params: dict[str, Any]  # the merged, validated params (promote: false)

    @property
    def label(self) -> str:
        return format_overrides(self.overrides)


@dataclass
class Sweep:
    name: str
    file: Path
    shown: str
    base: Path
    base_params: dict[str, Any]
    points: list[Point]
    root: Path

    @property
    def build(self) -> Path:
        return self.root / "build" / "sweeps" / self.name

    @property
    def reports(self) -> Path:
        return self.root / "reports" / "sweep" / self.name

    def point_build(self, point: Point) -> Path:
        return self.build / point.id

    def point_reports(self, point: Point) -> Path:
        return self.reports / point.id


@dataclass
class SweepResult:
    sweep: Sweep
    records: list[dict] = field(default_factory=list)
    best: dict | None = None
    decision: dict | None = None
    report: Path | None = None

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r["status"] != "ok"]


def _say(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------ the sweep file


def format_overrides(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items()) or "(base)"


def _set_dotted(raw: dict, key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    if not all(parts):
        raise SweepError(f"{where}: key '{key}': not a dotted params key")
    if parts[0] in FIXED_KEYS:
        raise SweepError(f"{where}: key '{key}' cannot be swept ({FIXED_KEYS[parts[0]]})")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SweepError(f"{where}: key '{key}': '{'.'.join(parts[: depth + 1])}' is not a section")
        node = child
    node[parts[-1]] = value


def expand_overrides(spec: SweepFile, shown: str) -> list[dict[str, Any]]:
    """The grid's combinations (each grid of a list in turn), then the explicit points."""
    grids = spec.grid if isinstance(spec.grid, list) else ([spec.grid] if spec.grid else [])
    out: list[dict[str, Any]] = []
    for g, grid in enumerate(grids, 1):
        for key, values in grid.items():
            if not values:
                where = f"grid {g} " if len(grids) > 1 else "grid "
                raise SweepError(f"{shown}: {where}key '{key}': empty list of values")
        keys = list(grid)
        out += [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]
    out += [dict(p) for p in spec.points]
    if not out:
        raise SweepError(f"{shown}: no points: give a 'grid' and/or 'points'")
    return out


def load_sweep(path: str | Path, root: str | Path = ".") -> Sweep:
    """Read the sweep file and validate every point (schema, hyperparameters) before any run."""
    from nbops.models import make_estimator

    root = Path(root).resolve()
    path = Path(path)
    file = path if path.is_absolute() else root / path
    shown = str(path)
    try:
        raw = read_yaml(file, shown)  # bounded: a regular file of at most 1 MB, no aliases
    except FileNotFoundError:
        raise SweepError(f"{shown}: sweep file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"{shown}: cannot read sweep file ({type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SweepError(f"{shown}: not valid YAML{where}: {getattr(exc, 'problem', '') or exc}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{shown}: expected a mapping with 'base' and 'grid' and/or 'points'")
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as exc:
        raise SweepError(
            [
                f"{shown}: key '{'.'.join(map(str, e['loc'])) or '(top)'}': {e['msg']}"
                if e["type"] != "extra_forbidden"
                else f"{shown}: unknown key '{'.'.join(map(str, e['loc']))}'"
                for e in exc.errors()
            ]
        ) from None
    base = Path(spec.base)
    base_file = base if base.is_absolute() else root / base
    try:
        base_raw = read_yaml(base_file, spec.base)
    except FileNotFoundError:
        raise SweepError(f"{shown}: key 'base': params file not found: {spec.base}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SweepError(f"{shown}: key 'base': {spec.base} is unreadable ({type(exc).__name__})") from None
    parse_params(base_raw, spec.base)  # a broken base names the base file, not a point

    problems: list[str] = []
    points: list[Point] = []
    seen: dict[str, int] = {}
    for index, overrides in enumerate(expand_overrides(spec, shown), 1):
        where = f"{shown}: point {index} ({format_overrides(overrides)})"
        merged = json.loads(json.dumps(base_raw))  # a deep copy of plain YAML data
        try:
            for key, value in overrides.items():
                _set_dotted(merged, key, value, where)
            merged["promote"] = False
            params = parse_params(merged, where)
            make_estimator(params.model.name, params.model.params, where)
        except NbopsError as exc:
            problems += exc.problems
            continue
        point_id = "p" + params_hash(overrides)[:10]
        if point_id in seen:
            problems.append(f"{where}: repeats point {seen[point_id]}")
            continue
        seen[point_id] = index
        points.append(Point(index, point_id, overrides, params.model_dump(mode="json")))
    if problems:
        raise SweepError(problems)
    return Sweep(spec.name or file.stem, file, shown, base_file, base_raw, points, root)


# ------------------------------------------------------------------ one point (runs on a worker)


def redact_uri(uri: str) -> str:
    """The URI without what can carry a secret: the `user:password@` part and the query."""
    parts = urlsplit(uri)
    if not parts.scheme or ("@" not in parts.netloc and not parts.query and not parts.fragment):
        return uri
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


def uri_secrets(uri: str | None) -> list[str]:
    """The strings a file must not contain: the URI itself and its password, when it has any."""
    if not uri or redact_uri(uri) == uri:
        return []
    secrets = [uri]
    parts = urlsplit(uri)
    if parts.password and len(parts.password) >= 4:  # too short to replace without damage
        secrets.append(parts.password)
    return secrets


def scrub(text: str, uri: str | None) -> str:
    """`text` with the URI shown redacted and its password as ***."""
    for secret in uri_secrets(uri):
        text = text.replace(secret, redact_uri(uri) if secret == uri else "***")
    return text


def run_point(spec: dict, tracking_uri: str | None = None, store: str | None = None) -> dict:
    """Run one point's train + evaluate through the runner; never raises for a failed step.

    Runs wherever the executor puts it (a local worker process or a Dask worker): it needs the
    project at the same path and the tracking store. `tracking_uri` (a store without
    credentials) is used as given; otherwise the worker's own MLFLOW_TRACKING_URI must be the
    store `store` names (its credential-free form). Never from the spec file."""
    from nbops.runner import run_pipeline

    build = Path(spec["build"])
    build.mkdir(parents=True, exist_ok=True)
    write_json(
        build / "worker.json", {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    )
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    elif store and redact_uri(os.environ.get("MLFLOW_TRACKING_URI", "")) != store:
        return {
            "status": "failed",
            "reason": f"this worker's MLFLOW_TRACKING_URI is not the sweep's store {store}: set it in "
            "the worker's environment (a URI with credentials never travels with a point)",
        }
    t0 = time.perf_counter()
    try:
        result = run_pipeline(
            spec["params"],
            spec["root"],
            only=["03_evaluate"],
            jobs=1,
            build=build,
            reports=spec["reports"],
            provenance=spec["provenance"],
        )
    except NbopsError as exc:
        reason = scrub("; ".join(exc.problems), os.environ.get("MLFLOW_TRACKING_URI"))
        return {"status": "failed", "reason": reason, "seconds": time.perf_counter() - t0}
    out = {
        "status": "ok" if result.ok else "failed",
        "reason": scrub(str(result.failure), os.environ.get("MLFLOW_TRACKING_URI"))
        if result.failure
        else None,
        "ran": result.ran,
        "skipped": result.skipped,
        "seconds": time.perf_counter() - t0,
    }
    if result.ok and not result.evaluation:
        out.update(status="failed", reason="evaluate step left no metrics.json")
    if result.evaluation:
        ev = result.evaluation
        out["evaluation"] = {
            "model_name": ev["model_name"],
            "challenger": ev["challenger"],
            "champion": {k: ev["champion"].get(k) for k in ("version", "run_id", "metrics", "error")},
            "decision": ev["decision"],
        }
    return out


def _point_main(argv: list[str]) -> int:
    """`python -m nbops.sweep <spec.json>`: one point in its own process (the local pool), with
    the tracking URI in its environment."""
    spec_file = Path(argv[0])
    out = run_point(read_json(spec_file))
    write_json(spec_file.with_name("result.json"), out)
    return 0


# ------------------------------------------------------------------ executors


def _death_reason(returncode: int, log: Path) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"worker process died (killed by {name}) while running the point; log: {log}"
    tail = ""
    if log.exists():
        lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        tail = f": {_one_line(lines[-1])}" if lines else ""
    return f"worker process exited with code {returncode}{tail}; log: {log}"


def run_local(
    specs: dict[str, dict],
    workers: int,
    on_done: Callable[[str, dict], None],
    tracking_uri: str | None = None,
) -> None:
    """At most `workers` points at once, each in a fresh process of its own, given the tracking
    URI in its environment (spec.json never holds it).

    Not a ProcessPoolExecutor: when one of its workers dies, every pending future fails with
    BrokenProcessPool, and a dead worker must fail its own point only."""

    def one(point_id: str) -> dict:
        spec = specs[point_id]
        build = Path(spec["build"])
        build.mkdir(parents=True, exist_ok=True)
        spec_file, result_file, log = build / "spec.json", build / "result.json", build / "point.log"
        result_file.unlink(missing_ok=True)
        write_json(spec_file, spec)
        env = dict(os.environ)
        if tracking_uri:
            env["MLFLOW_TRACKING_URI"] = tracking_uri
        with open(log, "w", encoding="utf-8") as fh:
            proc = subprocess.run(
                [sys.executable, "-m", "nbops.sweep", str(spec_file)],
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=spec["root"],
                env=env,
                check=False,
            )
        if proc.returncode == 0 and result_file.exists():
            return read_json(result_file)
        return {"status": "failed", "reason": _death_reason(proc.returncode, log)}

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(one, pid): pid for pid in specs}
        for fut in as_completed(futures):
            on_done(futures[fut], fut.result())


def scrub_folder(folder: Path, uri: str | None) -> list[Path]:
    """Scrub every text file under `folder` that quotes the URI or its password (a log, an
    executed notebook's traceback); returns the files changed. Binary files are left as they are."""
    secrets = [s.encode("utf-8") for s in uri_secrets(uri)]
    changed = []
    if not secrets or not folder.is_dir():
        return changed
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if not any(secret in data for secret in secrets):
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        path.write_text(scrub(text, uri), encoding="utf-8")
        changed.append(path)
    return changed


def run_dask(
    specs: dict[str, dict],
    scheduler: str,
    on_done: Callable[[str, dict], None],
    tracking_uri: str | None = None,
) -> None:
    """One Dask task per point on the cluster at `scheduler`. A worker that dies while running a
    point fails that point with Dask's reason (KilledWorker, after the scheduler's
    `distributed.scheduler.allowed-failures` retries on other workers).

    A URI with credentials is not sent over the scheduler: the workers' environment holds it."""
    from distributed import Client
    from distributed import as_completed as dask_completed

    store = redact_uri(tracking_uri) if tracking_uri else None
    sent = tracking_uri if tracking_uri and store == tracking_uri else None
    with Client(scheduler, timeout="30s") as client:
        futures = {
            client.submit(
                run_point, spec, sent, store, key=f"nbops-sweep-{pid}-{time.time_ns()}", pure=False
            ): pid
            for pid, spec in specs.items()
        }
        for fut in dask_completed(futures):
            pid = futures[fut]
            try:
                out = fut.result()
            except Exception as exc:  # whatever the worker raised or how it died: this point only
                out = {"status": "failed", "reason": f"{type(exc).__name__}: {_one_line(str(exc))}"}
            on_done(pid, out)


# ------------------------------------------------------------------ the sweep


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

    from nbops import tracking
    from nbops.data import resolve_data_path
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
        "parent_run_id": parent_run_id,
        "model_name": ev.get("model_name"),
        "challenger": ev.get("challenger"),
        "champion": ev.get("champion"),
        "decision": ev.get("decision"),
    }


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
        _say(f"sweep {sweep.name}: no points in shard {shard}")
        return []
    uri, parent_run_id = _prepare_tracking(sweep, selected)
    by_id = {p.id: p for p in selected}
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
            "provenance": {
                "parent_run_id": parent_run_id,
                "run_tags": {
                    "sweep": sweep.name,
                    "sweep_point": p.id,
                    **{f"override.{k}": json.dumps(v) for k, v in p.overrides.items()},
                },
            },
        }
    workers = workers or os.cpu_count() or 1
    where = f"Dask at {scheduler}" if scheduler else f"a local pool of {min(workers, len(specs))}"
    _say(f"sweep {sweep.name}: {len(selected)} point(s) on {where}; parent run {parent_run_id}")
    records: list[dict] = []

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
            f1 = rec["challenger"]["metrics"][RANK_METRIC]
            how = "skipped (unchanged)" if "02_train" in rec["skipped"] else "ran"
            _say(f"✓ point {point.index} [{point.label}]: macro-F1 {f1:.4f} ({how})")
        else:
            _say(f"✗ point {point.index} [{point.label}]: {rec['reason']}")

    t0 = time.perf_counter()
    if scheduler:
        run_dask(specs, scheduler, on_done, uri)
    else:
        run_local(specs, workers, on_done, uri)
    _finish_parent(parent_run_id, sweep, records, time.perf_counter() - t0)
    return sorted(records, key=lambda r: r["index"])


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
    if ok:
        best = max(ok, key=lambda r: r["challenger"]["metrics"][RANK_METRIC])
        client.log_metric(parent_run_id, f"best_{RANK_METRIC}", best["challenger"]["metrics"][RANK_METRIC])
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


def pick_best(records: list[dict]) -> dict | None:
    """Highest macro-F1; ties by accuracy, then the earlier point."""
    ok = [r for r in records if r["status"] == "ok" and r.get("challenger")]
    if not ok:
        return None
    return max(
        ok,
        key=lambda r: (
            r["challenger"]["metrics"][RANK_METRIC],
            r["challenger"]["metrics"]["accuracy"],
            -r["index"],
        ),
    )


def gate_best(sweep: Sweep, best: dict, allow_promotion: bool) -> dict:
    """The best point through the same gate as a normal run: decide, record, move aliases."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from nbops import tracking
    from nbops.gate import decide_promotion
    from nbops.params import Params

    params = Params.model_validate(sweep.points[best["index"] - 1].params)
    base_promote = bool(sweep.base_params.get("promote", True))
    champion = best["champion"] or {}
    decision = decide_promotion(
        best["challenger"]["metrics"],
        champion.get("metrics") if champion.get("version") else None,
        min_macro_f1=params.gate.min_macro_f1,
        min_accuracy=params.gate.min_accuracy,
        tolerance=params.gate.tolerance,
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
    decision = tracking.apply_decision(name, decision, client)
    client.set_registered_model_alias(name, tracking.CHALLENGER, decision.challenger_version)
    client.set_model_version_tag(name, decision.challenger_version, "nbops.sweep", sweep.name)
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
    gate the best point and write reports/sweep/<name>/index.html."""
    sweep = load_sweep(sweep_file, root)
    result = SweepResult(sweep)
    if not aggregate_only:
        result.records = run_points(sweep, scheduler, workers, shard)
    if shard:
        return result
    from nbops.sweep_report import render_sweep_report

    result.records = collect_records(sweep)
    result.best = pick_best(result.records)
    if result.best is not None:
        result.decision = gate_best(sweep, result.best, allow_promotion)
    result.report = render_sweep_report(sweep, result.records, result.best, result.decision)
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
    records = result.records
    failed = result.failed
    if shard:
        _say(f"shard {shard}: {len(records) - len(failed)} ok, {len(failed)} failed")
    else:
        _say(
            f"sweep {result.sweep.name}: {len(records)} points, "
            f"{len(records) - len(failed)} ok, {len(failed)} failed"
        )
        if result.best:
            best = result.best
            f1 = best["challenger"]["metrics"][RANK_METRIC]
            _say(
                f"best: point {best['index']} [{format_overrides(best['overrides'])}] macro-F1 {f1:.4f} "
                f"({best['model_name']} v{best['challenger']['version']})"
            )
            _say(f"gate: {result.decision['verdict']}")
        _say(f"report: {result.report / 'index.html'}")
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


if __name__ == "__main__":
    sys.exit(_point_main(sys.argv[1:]))
