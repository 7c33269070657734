"""A sweep worker's kernels: one fresh kernel per step of every point, forked from the worker's
kernel parent (nbops.runner.forks), which has done the steps' imports once.

Starting a kernel and importing mlflow, scikit-learn and skops costs 3-4 s of CPU per step, two
steps per point: on 2 cores that alone caps a sweep near 17 points/min, however the kernels are
started ahead. So each worker (a local worker process or a Dask worker) keeps one kernel parent
and its `KernelPool` keeps one kernel per step forked ahead, so the next point finds it ready.
Nothing outlives the worker (see nbops.runner.forks). `NBOPS_SWEEP_WARM=0` turns the pool off
(each step starts its own kernel).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from nbops.exceptions import NbopsError
from nbops.layout import MODEL_STEPS
from nbops.runner.forks import KernelPool, PoolKernel, _TimedTake
from nbops.runner.warm import WarmKernel

WARM_ENV = "NBOPS_SWEEP_WARM"


def warm_enabled(env=None) -> bool:
    """NBOPS_SWEEP_WARM: unset, 1, true or yes keeps the workers' kernels warm; 0, false or no
    starts each step's kernel from scratch."""
    env = os.environ if env is None else env
    raw = env.get(WARM_ENV, "").strip().lower()
    if raw in ("", "1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise NbopsError(f"{WARM_ENV}: expected 1 (warm kernels, the default) or 0 (off), got {env[WARM_ENV]!r}")


class TimedWarmKernel(_TimedTake, WarmKernel):
    """A kernel started for one step when its point starts (warm kernels off)."""


class PointKernels:
    """One point's kernels: from the worker's pool (shared by the points a multi-threaded Dask
    worker runs at once), or, with no pool (warm kernels off), started when its steps start.
    `handed` are this point's own, for its kernel wait."""

    def __init__(self, pool: KernelPool | None = None) -> None:
        self.pool = pool
        self.handed: list[PoolKernel | TimedWarmKernel] = []

    def supply(self, step: str, code: str, cwd: Path) -> PoolKernel | TimedWarmKernel | None:
        kernel = self.pool.supply(step, code, cwd) if self.pool else TimedWarmKernel(code, cwd)
        if kernel is not None:
            self.handed.append(kernel)
        return kernel

    def waited(self) -> float:
        return sum(k.waited for k in self.handed)


_POOL: dict[str, KernelPool] = {}
_POOL_LOCK = threading.Lock()


def process_pool(spec: dict) -> KernelPool:
    """This process's pool (a local worker's, a Dask worker's), started at its first point:
    its kernel parent imports what the sweep's steps import, with the tracking settings
    exported (as the runner exports them before its kernels start)."""
    with _POOL_LOCK:
        pool = _POOL.get("pool")
        if pool is None:
            from nbops.layout import NOTEBOOKS_DIR
            from nbops.ml import tracking
            from nbops.runner.notebook import read_notebook_source, warmup_code
            from nbops.runner.plan import STEPS

            root = Path(spec["root"])
            tracking.configure_tracking(root)
            folder = Path(spec["build"]).parent / ".workers" / f"{socket.gethostname()}-{os.getpid()}"
            pool = _POOL["pool"] = KernelPool(folder)
            steps = [s for s in STEPS if s.name in MODEL_STEPS]
            codes = {s.name: warmup_code(read_notebook_source(root / s.notebook)) for s in steps}
            pool.start(codes, root / NOTEBOOKS_DIR)
        return pool


def close_process_pool() -> bool:
    """Stop this process's pool, if it has one (a sweep's end, on every Dask worker)."""
    with _POOL_LOCK:
        pool = _POOL.pop("pool", None)
    if pool is not None:
        pool.close()
    return pool is not None
