"""One sweep point, run on a worker (a local process or a Dask task), and the executors that
run them. The tracking URI never reaches a file: logs and reasons are scrubbed of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nbops.exceptions import NbopsError, _one_line
from nbops.layout import EVALUATE
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
    store `store` names (its credential-free form). Never from the spec file."""
    from nbops.runner.pipeline import run_pipeline

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
            only=[EVALUATE],
            jobs=1,
            build=build,
            reports=spec["reports"],
            provenance=spec["provenance"],
        )
    except NbopsError as exc:
        reason = scrub("; ".join(exc.problems), os.environ.get("MLFLOW_TRACKING_URI"))
        return {"status": "failed", "reason": reason, "seconds": time.perf_counter() - t0}
    out: dict[str, Any] = {
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
    """`python -m nbops.sweep.point <spec.json>`: one point in its own process (the local pool), with
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
                [sys.executable, "-m", "nbops.sweep.point", str(spec_file)],
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


if __name__ == "__main__":
    sys.exit(_point_main(sys.argv[1:]))
