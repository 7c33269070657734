"""Kernels started ahead of their steps: warmed now, or kept warm by the last run (spares)."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbops.layout import NOTEBOOKS_DIR, build_root
from nbops.runner.codehash import notebook_code_hash
from nbops.runner.notebook import PRELOADER, read_notebook_source, warmup_code
from nbops.runner.plan import Plan, RunResult, Step
from nbops.runner.progress import say

if TYPE_CHECKING:
    from nbops.runner.forks import KernelPool

# A step that nothing waits for and that waits for nothing else in the run (EDA beside train ->
# evaluate) runs at a lower CPU priority: on a 2-core machine its kernel otherwise takes half the
# CPU from the chain that decides when the run ends. It still gets every idle cycle.
SIDE_BRANCH_NICE = 10

# (step name, warm-up code, kernel folder) -> a kernel with WarmKernel's interface (take, cancel,
# shutdown, cancelled), or None to warm one here as usual
KernelSupply = Callable[[str, str, Path], Any]


def is_side_branch(step: Step, steps: list[Step]) -> bool:
    names = {s.name for s in steps}
    has_downstream = any(step.name in s.needs for s in steps)
    has_upstream = any(n in names for n in step.needs)
    return len(steps) > 1 and not has_downstream and not has_upstream


class WarmKernel:
    """A kernel started (and its imports loaded) in the background while earlier steps run;
    papermill then executes the step in it (nbclient reuses a kernel manager it is given).

    An *async* kernel manager, as nbclient's own: with a blocking one nbclient's reads block
    its event loop, and the cell timeout never fires.
    """

    def __init__(self, code: str, cwd: Path, nice: int = 0):
        import asyncio

        from nbops.runner.kernels import EncryptedKernelManager

        self.km = EncryptedKernelManager(kernel_name="python3")
        self._code, self._cwd, self._nice = code, cwd, nice
        self.cancelled = threading.Event()  # the run was interrupted: its step must start nothing
        self._thread = threading.Thread(target=lambda: asyncio.run(self._start()), daemon=True)
        self._thread.start()

    async def _start(self) -> None:
        try:
            await self.km.start_kernel(cwd=str(self._cwd))
            if self._nice:
                pid = getattr(self.km.provisioner, "pid", None)  # a local provisioner's
                with contextlib.suppress(OSError, AttributeError, TypeError):
                    if pid is not None:
                        nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + self._nice)
                        os.setpriority(os.PRIO_PROCESS, pid, nice)
            client = self.km.client()
            client.start_channels()
            try:
                await client.wait_for_ready(timeout=120)
                if self._code:
                    await self._while_alive(
                        client.execute_interactive(self._code, silent=True, store_history=False, timeout=300)
                    )
            finally:
                client.stop_channels()
        except Exception as exc:  # the step starts its own kernel instead; say why
            say(f"! could not warm a kernel ahead of time ({type(exc).__name__}: {exc})")

    async def _while_alive(self, coro, poll_s: float = 0.5) -> None:
        """Await `coro` while the kernel lives: a kernel stopped mid-warm-up (an interrupted
        run stops its children) would leave execute_interactive waiting for its timeout."""
        import asyncio

        task = asyncio.ensure_future(coro)
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                task.result()
                return
            if not await self.km.is_alive():
                task.cancel()
                raise RuntimeError("the kernel stopped while warming up")

    def cancel(self) -> None:
        """Called when the run is interrupted, before its children are stopped."""
        self.cancelled.set()

    def take(self):
        """The kernel manager, once warm; None if warming failed (papermill starts one)."""
        from jupyter_core.utils import run_sync

        self._thread.join()
        return self.km if self.km.has_kernel and run_sync(self.km.is_alive)() else None

    def shutdown(self) -> None:
        from jupyter_core.utils import run_sync

        self._thread.join()
        if self.km.has_kernel:
            with contextlib.suppress(Exception):
                run_sync(self.km.shutdown_kernel)(now=True)


class Kernels:
    """Each step's kernel, started ahead of the step: the caller's (`supply`, a sweep worker's
    pool) when it gives one, else a spare kept warm by the last run when one matches
    (nbops.runner.spares), else a WarmKernel started now. After the run,
    `keep_warm_for_next_run` leaves a spare for each step that executed, for the next
    edit-and-rerun."""

    def __init__(self, plan: Plan, steps: list[Step], keep_warm_s: float, user_env: dict[str, str]):
        """Each step's warm-up code and spare key, from its notebook read once; `start` starts
        the kernels."""
        from nbops.runner import spares

        self.plan, self.keep_warm_s = plan, keep_warm_s
        self.cwd = plan.root / NOTEBOOKS_DIR
        self.env = dict(os.environ)  # what kernels inherit (the tracking URI is exported by now)
        # the key: the user's environment and the tracking settings, not the variables that
        # libraries imported by this process set for themselves (pandera, scikit-learn do)
        keyed_env = {**user_env, **{k: v for k, v in self.env.items() if k.startswith("MLFLOW_")}}
        self.code: dict[str, str] = {}
        self.keys: dict[str, dict[str, str]] = {}
        self.nice: dict[str, int] = {}
        self.warm: dict[str, Any] = {}  # a step's kernel: supplied, a claimed spare or a WarmKernel
        self.pool: KernelPool | None = None  # the kernel parent of the forked ones, closed with them
        for s in steps:
            nb = read_notebook_source(plan.root / s.notebook)
            self.code[s.name] = warmup_code(nb)
            # the package modules this kernel loads (the notebook's and the preloader), not the
            # whole package: an edit under serve/ keeps the spares
            package = notebook_code_hash(nb, extra=(PRELOADER,))
            self.keys[s.name] = spares.spare_key(s.name, self.code[s.name], self.cwd, keyed_env, package)
            self.nice[s.name] = SIDE_BRANCH_NICE if is_side_branch(s, steps) else 0

    def start(self, supply: KernelSupply | None = None, pool: KernelPool | None = None) -> Kernels:
        """Start each step's kernel: `supply`'s when it gives one (a sweep worker's pool, a run's
        forks from `pool`, closed with them), else a spare that matches, else a WarmKernel."""
        from nbops.runner import spares

        self.pool = pool
        for name, code in self.code.items():
            kernel = supply(name, code, self.cwd) if supply else None
            if kernel is None and self.keep_warm_s:
                kernel = spares.claim(build_root(self.plan.root), name, self.keys[name], self.nice[name])
            self.warm[name] = kernel or WarmKernel(code, self.cwd, nice=self.nice[name])
        return self

    def shutdown(self) -> None:
        for kernel in self.warm.values():
            kernel.shutdown()
        if self.pool is not None:
            self.pool.close()

    def keep_warm_for_next_run(self, result: RunResult) -> None:
        from nbops.runner import spares

        failed = result.failure.step if result.failure else None
        executed = [name for name in self.warm if name in result.ran or name == failed]
        for name in executed:
            spares.spawn(
                build_root(self.plan.root),  # build/.spares/: one spare per step for every params file
                name,
                self.code[name],
                self.cwd,
                self.env,
                self.keys[name],
                self.keep_warm_s,
                nice=self.nice[name],
                after_pid=os.getpid(),
            )
        if executed:
            say(
                f"kept {len(executed)} kernel(s) warm for the next run ({', '.join(executed)}; idle "
                f"{self.keep_warm_s:.0f}s, {spares.KEEP_WARM_ENV}=0 turns this off)"
            )
