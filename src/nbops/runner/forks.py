"""Kernels forked from a process that has done the steps' imports once.

Starting a kernel and importing mlflow, scikit-learn and skops costs 3-4 s of CPU per step. A
*kernel parent* (`python -m nbops.runner.forks <spec>`) runs the steps' warm-up imports once and
then forks a kernel per request: ~0.15 s of CPU, ready in ~0.4 s. A forked kernel is a new
process with its own, fresh namespace; it runs its step's warm-up lines (cached imports, as a
spare does) and serves one step, handed out as a claimed spare (nbops.runner.spares.SpareKernel:
adopted by PID, stopped once its step is done).

Used by a cold pipeline run for 02_train and 03_evaluate (one import instead of two, while
01_eda's kernel starts on its own) and by each sweep worker (nbops.sweep.kernels), whose pool
keeps one kernel per step forked ahead for the next point.

Nothing outlives its owner: the kernel parent ignores Ctrl-C (the owner gets it and stops what
it holds) and, when its stdin closes (the owner exited or died) or on SIGTERM, stops every
kernel it forked and exits; each kernel also exits when the kernel parent goes (ipykernel's
parent poller).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from nbops.layout import MODEL_STEPS
from nbops.products import write_json
from nbops.runner.spares import SpareKernel, is_spare_process, kernel_env, stop_process

# as ipykernel sets it for its kernels, before the kernel parent imports matplotlib
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
KERNELS_FOLDER = ".kernels"  # in a run's build folder: the kernel parent's spec, log, connection files


class _TimedTake:
    """`waited`: how long the step waited for its kernel in `take`."""

    adopted = False  # not "kept warm by the last run": the runner says nothing about it
    supply_wait = 0.0  # before the run could have it (a pool still starting)
    waited = 0.0

    def take(self):
        t = time.perf_counter()
        try:
            return super().take()  # type: ignore[misc]
        finally:
            self.waited = self.supply_wait + time.perf_counter() - t


def _import_kernel_clients() -> None:
    """What forking and adopting a kernel import (jupyter_client), imported by the caller before
    the pool's threads start: jupyter_client imported by two threads at once can hand one of
    them a partly initialised module (ImportError: cannot import name 'AsyncKernelManager')."""
    import jupyter_client.connect  # noqa: F401
    import jupyter_client.manager  # noqa: F401

    from nbops.runner import kernels  # noqa: F401


class PoolKernel(_TimedTake, SpareKernel):
    """A forked kernel handed to one step."""

    kind = "a forked kernel"


class KernelPool:
    """One worker's kernels (thread-safe): `supply` is the runner's `kernel_supply`."""

    def __init__(self, folder: Path, ahead: bool = True):
        self.folder = Path(folder)
        self.ahead = ahead  # fork the next kernel of a step when one is handed out (a sweep's next point)
        self.token = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._key: tuple | None = None
        self._ahead: dict[str, tuple[str, PoolKernel]] = {}

    def start(self, codes: dict[str, str], cwd: Path) -> threading.Thread:
        """In the background: start the kernel parent for these steps' warm-up code, and fork
        one kernel per step ahead. The first point validates and plans meanwhile; its steps
        wait for the kernels in `supply`."""

        _import_kernel_clients()
        holds = threading.Event()

        def work() -> None:
            with self._lock:
                holds.set()
                self._ensure_parent(list(codes.values()), cwd)
                for step, code in codes.items():
                    self._fork_ahead(step, code, cwd)

        thread = threading.Thread(target=work, daemon=True, name="nbops-kernel-pool")
        thread.start()
        holds.wait()  # the lock is the thread's: no supply slips in before the kernel parent
        return thread

    def supply(self, step: str, code: str, cwd: Path) -> PoolKernel | None:
        """The kernel forked ahead for `step` (or one forked now), and the next one forked
        ahead; None when the kernel parent is gone (the step then starts its own kernel)."""
        t = time.perf_counter()
        with self._lock:
            self._ensure_parent([code], cwd)
            ahead = self._ahead.pop(step, None)
            kernel = ahead[1] if ahead and ahead[0] == code and ahead[1].alive() else None
            if ahead and kernel is None:
                ahead[1].stop()
            kernel = kernel or self._fork(step, code, cwd)
            if kernel is None:
                return None
            if self.ahead:
                self._fork_ahead(step, code, cwd)
        kernel.supply_wait = time.perf_counter() - t
        kernel.start_waiting()
        return kernel

    def close(self) -> None:
        """Stop the kernels forked ahead and the kernel parent (which stops any kernel left)."""
        if not self._lock.acquire(timeout=1.0):  # still importing (an interrupted first point)
            proc = self._proc
            if proc is not None:
                proc.terminate()  # its SIGTERM handler stops what it forked; the start then ends
            self._lock.acquire()
        try:
            self._stop_parent()
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ inside, under the lock

    def _ensure_parent(self, codes: list[str], cwd: Path) -> None:
        key = (str(cwd), kernel_env(dict(os.environ)))
        if self._proc is not None and self._proc.poll() is None and self._key == key:
            return
        self._stop_parent()  # gone, or the environment kernels inherit changed
        self.folder.mkdir(parents=True, exist_ok=True)
        self.token = uuid.uuid4().hex[:12]
        spec = self.folder / f"kernels.{self.token}.spec.json"
        write_json(spec, {"token": self.token, "codes": codes})
        with open(self.folder / f"kernels.{self.token}.log", "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "nbops.runner.forks", str(spec)],
                cwd=cwd,
                # a copy made here, not the process's live environ: this runs beside threads that
                # import scikit-learn or mlflow, which set variables on import, and a vfork child
                # exec'ing with an environ another thread is growing fails (EFAULT: Bad address)
                env=dict(os.environ),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        self._key = key

    def _stop_parent(self) -> None:
        proc, self._proc = self._proc, None
        for _, kernel in self._ahead.values():
            kernel.stop()
        self._ahead.clear()
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]  # it stops its kernels and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for path in self.folder.glob(f"kernels.{self.token}.*"):
            path.unlink(missing_ok=True)

    def _fork_ahead(self, step: str, code: str, cwd: Path) -> None:
        kernel = self._fork(step, code, cwd)
        if kernel is not None:
            self._ahead[step] = (code, kernel)

    def _fork(self, step: str, code: str, cwd: Path) -> PoolKernel | None:
        from jupyter_client.connect import write_connection_file

        from nbops.runner.kernels import curve_keys

        proc = self._proc
        if proc is None or proc.poll() is not None:
            print(f"! the kernel parent stopped (see {self.folder}/kernels.{self.token}.log)", flush=True)
            return None
        base = self.folder / f"{step}.{uuid.uuid4().hex[:12]}"
        conn = f"{base}.conn.json"
        keys = curve_keys()
        write_connection_file(
            conn,
            ip="127.0.0.1",
            key=uuid.uuid4().hex.encode(),
            kernel_name="python3",
            curve_publickey=keys.get("curve_publickey"),
            curve_secretkey=keys.get("curve_secretkey"),
        )
        request = {"connection_file": conn, "code": code, "cwd": str(cwd), "env": dict(os.environ)}
        try:
            proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            reply = proc.stdout.readline()  # type: ignore[union-attr]  # first: once imported
            pid = int(json.loads(reply)["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            print(f"! the kernel parent stopped (see {self.folder}/kernels.{self.token}.log)", flush=True)
            Path(conn).unlink(missing_ok=True)
            return None
        info = {"pid": pid, "token": self.token, "connection_file": conn}
        return PoolKernel(info, Path(f"{base}.spare.claimed-{os.getpid()}"))


class ForkedKernel:
    """A step's kernel from `pool`, forked in the background once the kernel parent has
    imported; the runner's kernel interface (take, cancel, shutdown)."""

    adopted = False

    def __init__(self, pool: KernelPool, step: str, code: str, cwd: Path):
        self.step = step
        self.cancelled = threading.Event()
        self.kernel: PoolKernel | None = None
        self._thread = threading.Thread(
            target=lambda: setattr(self, "kernel", pool.supply(step, code, cwd)), daemon=True
        )
        self._thread.start()

    def take(self):
        """The forked kernel's manager; None when there is none (the pool said why) or it died
        before its step (said here): the step then starts a kernel of its own."""
        self._thread.join()
        if self.kernel is None or self.cancelled.is_set():
            return None
        km = self.kernel.take()
        if km is None and not self.cancelled.is_set():
            print(
                f"! {self.step}: its forked kernel stopped before the step; it starts a kernel of its own",
                flush=True,
            )
        return km

    def cancel(self) -> None:
        self.cancelled.set()
        if self.kernel is not None:
            self.kernel.cancel()

    def shutdown(self) -> None:
        self._thread.join()
        if self.kernel is not None:
            self.kernel.shutdown()


# ------------------------------------------------------------------ a pipeline run's forks


def forks_supported() -> bool:
    """Linux only: macOS forks unsafely once some libraries are loaded, Windows cannot fork."""
    return sys.platform.startswith("linux")


def start_run_forks(plan, step_codes: dict[str, str]) -> tuple[Callable | None, KernelPool | None]:
    """For a run starting fresh kernels (`step_codes`: each step's warm-up code): a kernel parent
    importing what 02_train and 03_evaluate import, forking each of them a kernel when it is
    needed (started now, in the background). Returns the runner's `kernel_supply` for it and the
    pool (closed with the run's kernels); (None, None) when fewer than two of those steps run or
    the platform cannot fork."""
    from nbops.layout import NOTEBOOKS_DIR

    codes = {name: code for name, code in step_codes.items() if name in MODEL_STEPS}
    if len(codes) < 2 or not forks_supported():
        return None, None
    pool = KernelPool(plan.build / KERNELS_FOLDER, ahead=False)
    pool.start(codes, plan.root / NOTEBOOKS_DIR)

    def supply(step: str, code: str, cwd: Path) -> ForkedKernel | None:
        return ForkedKernel(pool, step, code, cwd) if step in codes else None

    return supply, pool


# ------------------------------------------------------------------ the kernel parent's process


def _stop_kernels(children: set[int], token: str, grace_s: float = 2.0) -> None:
    """SIGTERM every kernel still running, SIGKILL what is left after grace_s."""
    alive = [pid for pid in children if is_spare_process(pid, token)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in alive:
        stop_process(pid, token, grace_s)


def _serve_kernel(request: dict) -> None:
    """In the forked child: become the kernel (a session of its own, as jupyter_client starts
    kernels), in the worker's folder and environment; never returns."""
    try:
        parent = os.getppid()
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1):  # the kernel parent's pipes are not the kernel's
            os.dup2(null, fd)
        from ipykernel.kernelapp import IPKernelApp

        argv = ["-f", request["connection_file"], f"--IPKernelApp.parent_handle={parent}"]
        IPKernelApp.launch_instance(argv=argv, exec_lines=[request["code"]] if request["code"] else [])
    finally:
        os._exit(0)


def serve(spec_path: Path) -> None:
    """The kernel parent: import, say so, then fork one kernel per request line on stdin."""
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    token, children = spec["token"], set()

    def reap(*_):
        with contextlib.suppress(ChildProcessError):
            while (pid := os.waitpid(-1, os.WNOHANG)[0]) > 0:
                children.discard(pid)

    def stop(*_):
        # no reap() while the set is read, no second stop() inside this one
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM})
        _stop_kernels(set(children), token)
        os._exit(0)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's: it closes our stdin
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGCHLD, reap)
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
    if sys.path and sys.path[0] == "":
        del sys.path[0]  # as ipykernel_launcher does: the kernel's sys.path is a started kernel's
    import ipykernel.kernelapp  # noqa: F401  (what every kernel needs first)

    for code in spec["codes"]:
        exec(compile(code, "<warm-up>", "exec"), {})  # noqa: S102  (the steps' own import lines)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _serve_kernel(request)
        children.add(pid)
        print(json.dumps({"pid": pid}), flush=True)
    stop()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
