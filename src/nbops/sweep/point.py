"""One sweep point, run on a worker (a local process or a Dask task; nbops.sweep.executors), and
where its seconds went. The tracking URI never reaches a file: logs and reasons are scrubbed of it."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nbops.exceptions import NbopsError
from nbops.layout import EVALUATE, TRAIN, executed_notebook
from nbops.products import read_json, write_json


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
    store `store` names (its credential-free form). Never from the spec file. With
    `spec["warm"]`, the steps' kernels come from this process's pool (nbops.sweep.kernels)."""
    from nbops.runner.pipeline import run_pipeline
    from nbops.sweep import kernels

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
    supply = kernels.PointKernels(kernels.process_pool(spec) if spec.get("warm") else None)
    t0 = time.perf_counter()
    try:
        result = run_pipeline(
            spec["params"],
            spec["root"],
            only=[EVALUATE],
            jobs=1,
            build=build,
            reports=spec["reports"],
            provenance=spec["provenance"],
            kernel_supply=supply.supply,
        )
    except NbopsError as exc:
        reason = scrub("; ".join(exc.problems), os.environ.get("MLFLOW_TRACKING_URI"))
        return {"status": "failed", "reason": reason, "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    return _point_result(result, seconds, time_split(build, seconds, supply.waited()))


def _point_result(result, seconds: float, split: dict) -> dict:
    """A point's record from the runner's RunResult: its status, why it failed, its evaluation."""
    out: dict[str, Any] = {
        "status": "ok" if result.ok else "failed",
        "reason": scrub(str(result.failure), os.environ.get("MLFLOW_TRACKING_URI"))
        if result.failure
        else None,
        "ran": result.ran,
        "skipped": result.skipped,
        "seconds": seconds,
        "split": split,
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


# a cell that calls one of these spends its time logging to MLflow (the model, metrics, reports)
MLFLOW_LOGGING_CALLS = ("tracking.log_",)


def time_split(build: Path, seconds: float, kernel_wait_s: float) -> dict[str, float]:
    """Where a point's seconds went: waiting for kernels, its steps' cells (from papermill's
    per-cell durations in the executed notebooks), the cells that log to MLflow, and the rest
    (the runner: validating, starting papermill, rendering HTML, attaching the reports)."""
    cells = logging = 0.0
    for step in (TRAIN, EVALUATE):
        path = executed_notebook(build, step)
        try:
            nb_cells = read_json(path).get("cells", []) if path.is_file() else []
        except (OSError, ValueError):
            nb_cells = []
        for cell in nb_cells:
            duration = float((cell.get("metadata", {}).get("papermill") or {}).get("duration") or 0.0)
            source = "".join(cell.get("source", ""))
            if any(call in source for call in MLFLOW_LOGGING_CALLS):
                logging += duration
            else:
                cells += duration
    rest = max(0.0, seconds - kernel_wait_s - cells - logging)
    split = {"kernel_wait_s": kernel_wait_s, "cells_s": cells, "mlflow_logging_s": logging, "runner_s": rest}
    return {k: round(v, 3) for k, v in split.items()}


def scrub_folder(folder: Path, uri: str | None) -> list[Path]:
    """Scrub every text file under `folder` that quotes the URI or its password (a log, an
    executed notebook's traceback); returns the files changed. Binary files are left as they are."""
    secrets = [s.encode("utf-8") for s in uri_secrets(uri)]
    changed: list[Path] = []
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
