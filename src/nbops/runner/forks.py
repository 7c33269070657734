"""A run's kernels forked from a kernel parent (nbops.kernel_parent) that has done the steps'
imports once.

Starting a kernel and importing mlflow, scikit-learn and skops costs 3-4 s of CPU per step; a
kernel forked from the kernel parent ~0.15 s, ready in ~0.4 s. A forked kernel runs its step's
warm-up lines (cached imports, as a spare does) and serves one step, handed out as a claimed
spare (nbops.runner.spares.SpareKernel: adopted by PID, stopped once its step is done).

Used by a cold pipeline run for every step that starts a fresh kernel (01_eda, 02_train and
03_evaluate: one import instead of three; 01_eda, a side branch, at a lower CPU priority) and by
each sweep worker (nbops.sweep.kernels), whose pool keeps one kernel per step forked ahead for
the next point.

Nothing outlives the run or the worker: see nbops.kernel_parent.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from nbops.kernel_parent import KernelParent, KernelParentGone, forks_supported
from nbops.runner.spares import SpareKernel, kernel_env

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

    def __init__(self, folder: Path, ahead: bool = True, nice: dict[str, int] | None = None):
        self.folder = Path(folder)
        self.ahead = ahead  # fork the next kernel of a step when one is handed out (a sweep's next point)
        self.nice = nice or {}  # what a step adds to its kernels' CPU niceness (a side branch's)
        self._lock = threading.Lock()
        self._parent: KernelParent | None = None
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
                if ahead[0] == code:  # it died (another code is a changed notebook: no news)
                    print(f"! {step}: the kernel forked ahead for it stopped; forking another", flush=True)
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
            parent = self._parent
            if parent is not None and parent.proc is not None:
                parent.proc.terminate()  # its SIGTERM handler stops what it forked; the start ends
            self._lock.acquire()
        try:
            self._stop_parent()
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ inside, under the lock

    def _ensure_parent(self, codes: list[str], cwd: Path) -> None:
        key = (str(cwd), kernel_env(dict(os.environ)))
        if self._parent is not None and self._parent.alive() and self._key == key:
            return
        self._stop_parent()  # gone, or the environment kernels inherit changed
        self._parent = KernelParent(self.folder, codes, cwd)
        self._parent.start()
        self._key = key

    def _stop_parent(self) -> None:
        parent, self._parent = self._parent, None
        for _, kernel in self._ahead.values():
            kernel.stop()
        self._ahead.clear()
        if parent is not None:
            parent.stop()

    def _fork_ahead(self, step: str, code: str, cwd: Path) -> None:
        kernel = self._fork(step, code, cwd)
        if kernel is not None:
            self._ahead[step] = (code, kernel)

    def _fork(self, step: str, code: str, cwd: Path) -> PoolKernel | None:
        from jupyter_client.connect import write_connection_file

        from nbops.runner.kernels import curve_keys

        parent = self._parent
        if parent is None or not parent.alive():
            where = parent.where() if parent is not None else f"see {self.folder}"
            print(f"! the kernel parent stopped ({where})", flush=True)
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
        try:
            pid = parent.fork(conn, code, cwd, dict(os.environ))
        except KernelParentGone as exc:
            print(f"! {exc}", flush=True)
            Path(conn).unlink(missing_ok=True)
            return None
        info = {"pid": pid, "token": parent.token, "connection_file": conn}
        claimed = Path(f"{base}.spare.claimed-{os.getpid()}")
        return PoolKernel(info, claimed, nice=self.nice.get(step, 0))


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


def start_run_forks(
    plan, step_codes: dict[str, str], nice: dict[str, int] | None = None
) -> tuple[Callable | None, KernelPool | None]:
    """For a run starting fresh kernels (`step_codes`: each step's warm-up code, `nice`: what a
    step adds to its kernel's niceness): a kernel parent importing what those steps import,
    forking each of them a kernel (started now, in the background). Returns the runner's
    `kernel_supply` for it and the pool (closed with the run's kernels); (None, None) when fewer
    than two steps start a kernel (one import either way) or the platform cannot fork."""
    from nbops.layout import NOTEBOOKS_DIR

    codes = dict(step_codes)
    if len(codes) < 2 or not forks_supported():
        return None, None
    pool = KernelPool(plan.build / KERNELS_FOLDER, ahead=False, nice=nice)
    pool.start(codes, plan.root / NOTEBOOKS_DIR)

    def supply(step: str, code: str, cwd: Path) -> ForkedKernel | None:
        return ForkedKernel(pool, step, code, cwd) if step in codes else None

    return supply, pool
