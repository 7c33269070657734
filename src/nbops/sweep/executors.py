"""The executors that run sweep points: a local pool of long-lived worker processes and a
Dask cluster. Either serves a whole sweep (a grid's points, a search's trials, from any thread);
a worker that dies fails its own point only."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from nbops.exceptions import _one_line
from nbops.products import read_json, write_json
from nbops.sweep.point import redact_uri, run_point


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


class LocalPool:
    """Up to `workers` long-lived worker processes (LocalWorker) for the points `run` is given,
    from any number of threads: a point takes an idle worker, or starts one. A worker that dies
    fails its own point only; the next point starts a new one. `close` ends them all (the
    sweep's end, or Ctrl-C): a point started after it fails, no worker is started."""

    def __init__(self, workers: int, tracking_uri: str | None = None):
        self.env = dict(os.environ)
        if tracking_uri:
            self.env["MLFLOW_TRACKING_URI"] = tracking_uri
        self.slots = threading.BoundedSemaphore(max(1, workers))
        self.lock = threading.Lock()
        self.idle: list[LocalWorker] = []
        self.live: list[LocalWorker] = []
        self.started = 0
        self.closed = False

    def run(self, spec: dict) -> dict:
        """The point's record (its result, or why it has none); never raises for a worker."""
        with self.slots:
            build, spec_file = _write_spec(spec)
            try:
                worker = self._take(spec["root"], build.parent / ".workers")
            except Exception as exc:
                return {"status": "failed", "reason": f"could not start a worker: {_failure(exc)}"}
            if worker is None:
                return {"status": "failed", "reason": "the sweep stopped before this point ran"}
            try:
                out = worker.run(spec_file)
            except Exception as exc:
                self._drop(worker)
                return {"status": "failed", "reason": f"could not run the point on a worker: {_failure(exc)}"}
            if out is None:  # it died with this point
                return {"status": "failed", "reason": _death_reason(self._drop(worker), build / "point.log")}
            with self.lock:
                if not self.closed:
                    self.idle.append(worker)
            return out

    def close(self, grace_s: float = 30.0) -> None:
        """End every worker (each stops its kernels); a running point ends within grace_s."""
        with self.lock:
            self.closed = True
            workers, self.live, self.idle = self.live, [], []
        for worker in workers:
            worker.close(grace_s)

    def _take(self, root: str, logs: Path) -> LocalWorker | None:
        with self.lock:
            if self.closed:
                return None
            if self.idle:
                return self.idle.pop()
            worker = LocalWorker(root, self.env, logs / f"worker-{self.started}.log")
            self.started += 1
            self.live.append(worker)
            return worker

    def _drop(self, worker: LocalWorker) -> int:
        with self.lock:
            if worker in self.live:
                self.live.remove(worker)
        return worker.close(5)


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_one_line(str(exc))}"


def run_local(
    specs: dict[str, dict],
    workers: int,
    on_done: Callable[[str, dict], None],
    tracking_uri: str | None = None,
) -> None:
    """At most `workers` points at once on a LocalPool, given the tracking URI in the workers'
    environment (spec.json never holds it).

    Not a ProcessPoolExecutor: when one of its workers dies, every pending future fails with
    BrokenProcessPool, and a dead worker must fail its own point only."""
    pool = LocalPool(workers, tracking_uri)
    todo: queue.Queue[str] = queue.Queue()
    for pid in specs:
        todo.put(pid)
    done: queue.Queue[tuple[str, dict]] = queue.Queue()
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                point_id = todo.get_nowait()
            except queue.Empty:
                return
            done.put((point_id, pool.run(specs[point_id])))

    width = max(1, min(workers, len(specs)))
    threads = [threading.Thread(target=serve, daemon=True) for _ in range(width)]
    for t in threads:
        t.start()
    finished = False
    try:
        for _ in specs:
            on_done(*done.get())
        finished = True
    finally:  # also on Ctrl-C: no worker, kernel parent or kernel is left running
        stopping.set()
        pool.close(grace_s=30 if finished else 10)
        for t in threads:
            t.join(timeout=30)


class DaskPool:
    """One client to the cluster at `scheduler` for a whole sweep: a Dask task per point, from
    any number of threads (`run`) or all at once (`submit`). A worker that dies while running a
    point fails that point with Dask's reason (KilledWorker, after the scheduler's
    `distributed.scheduler.allowed-failures` retries on other workers). Each worker keeps a
    kernel pool from its first warm point on (nbops.sweep.kernels), stopped by `close`.

    A URI with credentials is not sent over the scheduler: the workers' environment holds it."""

    def __init__(self, scheduler: str, tracking_uri: str | None = None):
        from distributed import Client

        self.store = redact_uri(tracking_uri) if tracking_uri else None
        self.sent = tracking_uri if tracking_uri and self.store == tracking_uri else None
        self.client = Client(scheduler, timeout="30s")
        self.pending: set = set()
        self.closed = False

    def workers(self) -> int:
        return max(1, len(self.client.nthreads()))

    def submit(self, point_id: str, spec: dict):
        fut = self.client.submit(
            run_point, spec, self.sent, self.store, key=f"nbops-sweep-{point_id}-{time.time_ns()}", pure=False
        )
        self.pending.add(fut)
        return fut

    def outcome(self, fut) -> dict:
        """The point's record; whatever the worker raised or how it died fails this point only."""
        try:
            return fut.result()
        except Exception as exc:
            return {"status": "failed", "reason": _failure(exc)}
        finally:
            self.pending.discard(fut)

    def run(self, spec: dict) -> dict:
        return self.outcome(self.submit(Path(spec["build"]).name, spec))

    def close(self) -> None:
        """Cancel what is left and stop each worker's kernel pool (its kernel parent and the
        kernels forked ahead)."""
        from nbops.sweep.kernels import close_process_pool

        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):  # a worker gone meanwhile has none left
            self.client.cancel(list(self.pending))
            self.client.run(close_process_pool)
        self.client.close()


def run_dask(
    specs: dict[str, dict],
    scheduler: str,
    on_done: Callable[[str, dict], None],
    tracking_uri: str | None = None,
) -> None:
    """Every point as a Dask task on the cluster at `scheduler` (a DaskPool), each told to
    `on_done` as it completes."""
    from distributed import as_completed as dask_completed

    pool = DaskPool(scheduler, tracking_uri)
    try:
        futures = {pool.submit(pid, spec): pid for pid, spec in specs.items()}
        for fut in dask_completed(futures):
            on_done(futures[fut], pool.outcome(fut))
    finally:
        pool.close()
