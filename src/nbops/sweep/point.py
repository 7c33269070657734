"""One sweep point, run on a worker (a local process or a Dask task), and the executors that
run them. The tracking URI never reaches a file: logs and reasons are scrubbed of it."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nbops.exceptions import NbopsError, _one_line
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
    supply = kernels.process_pool(spec) if spec.get("warm") else kernels.ColdKernels()
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
    return _point_result(
        result, seconds, time_split(build, seconds, sum(k.waited for k in supply.take_handed()))
    )


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


class LocalWorker:
    """One long-lived worker process (nbops.sweep.worker): points in on its stdin, one spec file
    path a line; the same path back on a pipe of its own once `result.json` is written."""

    def __init__(self, root: str, env: dict[str, str], log: Path):
        read_fd, write_fd = os.pipe()
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nbops.sweep.worker", str(write_fd)],
                stdin=subprocess.PIPE,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=root,
                env=env,
                pass_fds=(write_fd,),
                text=True,
            )
        os.close(write_fd)  # the worker holds the only write end: its death is end of file here
        self.replies = os.fdopen(read_fd, encoding="utf-8")

    def run(self, spec_file: Path) -> dict | None:
        """The point's result, or None when the worker died while running it."""
        try:
            self.proc.stdin.write(f"{spec_file}\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except OSError:
            return None
        reply = self.replies.readline()
        result = spec_file.with_name("result.json")
        return read_json(result) if reply.strip() == str(spec_file) and result.is_file() else None

    def close(self, grace_s: float = 30.0) -> int:
        """End the worker (stdin closed: it stops its kernels and exits); its exit code."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            code = self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.proc.terminate()  # SIGTERM: it stops its kernels as on Ctrl-C
            try:
                code = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        self.replies.close()
        return code


def _write_spec(spec: dict) -> tuple[Path, Path]:
    """The point's folder and its spec.json (no result.json of an earlier attempt left)."""
    build = Path(spec["build"])
    build.mkdir(parents=True, exist_ok=True)
    (build / "result.json").unlink(missing_ok=True)
    write_json(build / "spec.json", spec)
    return build, build / "spec.json"


def _run_one(
    worker: LocalWorker | None, spec: dict, env: dict[str, str], n: int, live: list[LocalWorker]
) -> tuple[LocalWorker | None, dict]:
    """Run a point on `worker` (worker `n`, started first when None). Returns the worker for the
    next point (None when it died or could not start or talk: this point fails, the next one
    starts a new worker) and the point's record. `live` lists the workers running."""
    build, spec_file = _write_spec(spec)
    try:
        if worker is None:
            worker = LocalWorker(spec["root"], env, build.parent / ".workers" / f"worker-{n}.log")
            live.append(worker)
        out = worker.run(spec_file)
    except Exception as exc:
        reason = f"could not run the point on a worker: {type(exc).__name__}: {_one_line(str(exc))}"
        if worker is not None:
            live.remove(worker)
            worker.close(5)
        return None, {"status": "failed", "reason": reason}
    if out is None:  # it died with this point
        live.remove(worker)
        return None, {"status": "failed", "reason": _death_reason(worker.close(5), build / "point.log")}
    return worker, out


def run_local(
    specs: dict[str, dict],
    workers: int,
    on_done: Callable[[str, dict], None],
    tracking_uri: str | None = None,
) -> None:
    """At most `workers` points at once on long-lived worker processes (LocalWorker), given the
    tracking URI in their environment (spec.json never holds it).

    Not a ProcessPoolExecutor: when one of its workers dies, every pending future fails with
    BrokenProcessPool, and a dead worker must fail its own point only: here its point fails
    with the reason and a new worker takes the next point."""
    env = dict(os.environ)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    todo: queue.Queue[str] = queue.Queue()
    for pid in specs:
        todo.put(pid)
    done: queue.Queue[tuple[str, dict]] = queue.Queue()
    stopping = threading.Event()
    live: list[LocalWorker] = []

    def serve(n: int) -> None:
        worker = None
        while not stopping.is_set():
            try:
                point_id = todo.get_nowait()
            except queue.Empty:
                break
            worker, out = _run_one(worker, specs[point_id], env, n, live)
            done.put((point_id, out))
        if worker is not None:
            live.remove(worker)
            worker.close()

    threads = [threading.Thread(target=serve, args=(n,), daemon=True) for n in range(max(1, workers))]
    for t in threads:
        t.start()
    try:
        for _ in specs:
            on_done(*done.get())
    finally:  # also on Ctrl-C: no worker, kernel parent or kernel is left running
        stopping.set()
        for worker in list(live):
            worker.close(grace_s=10)
        for t in threads:
            t.join(timeout=30)


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
    `distributed.scheduler.allowed-failures` retries on other workers). Each worker keeps a
    kernel pool from its first warm point on (nbops.sweep.kernels), stopped at the end.

    A URI with credentials is not sent over the scheduler: the workers' environment holds it."""
    from distributed import Client
    from distributed import as_completed as dask_completed

    from nbops.sweep.kernels import close_process_pool

    store = redact_uri(tracking_uri) if tracking_uri else None
    sent = tracking_uri if tracking_uri and store == tracking_uri else None
    with Client(scheduler, timeout="30s") as client:
        futures = {
            client.submit(
                run_point, spec, sent, store, key=f"nbops-sweep-{pid}-{time.time_ns()}", pure=False
            ): pid
            for pid, spec in specs.items()
        }
        try:
            for fut in dask_completed(futures):
                pid = futures[fut]
                try:
                    out = fut.result()
                except Exception as exc:  # whatever the worker raised or how it died: this point only
                    out = {"status": "failed", "reason": f"{type(exc).__name__}: {_one_line(str(exc))}"}
                on_done(pid, out)
        finally:  # each worker's kernel pool (its kernel parent and the kernels forked ahead)
            with contextlib.suppress(Exception):  # a worker gone meanwhile has none left
                client.cancel(list(futures))
                client.run(close_process_pool)
