"""Executing one notebook step: papermill in a kernel started ahead of it."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import uuid
from pathlib import Path

from nbops.exceptions import StepError
from nbops.layout import EVALUATE, NOTEBOOKS_DIR, executed_notebook
from nbops.runner.plan import Plan, Step
from nbops.runner.progress import Progress, say
from nbops.runner.stamps import write_stamp
from nbops.runner.warm import SIDE_BRANCH_NICE, WarmKernel


def _register_engine() -> str:
    """papermill's nbclient engine, plus a hook that reports each cell as it starts."""
    from papermill.engines import NBClientEngine, papermill_engines

    class TrackedEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, on_cell=None, **kwargs):
            if on_cell is not None:
                start = nb_man.cell_start

                def cell_start(cell, cell_index=None, **kw):
                    on_cell(cell_index, len(nb_man.nb.cells))
                    return start(cell, cell_index, **kw)

                nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register("nbops", TrackedEngine)
    return "nbops"


def execute_step(
    plan: Plan, step: Step, progress: Progress | None = None, warm: WarmKernel | None = None
) -> None:
    """Run one pipeline step's notebook into build/<name>/<step>/ and stamp it; raise StepError naming
    the failing cell (its MLflow runs left RUNNING are closed first)."""
    if step.name == EVALUATE:
        # the runner needs mlflow after this step (move champion, attach the reports): about
        # 2 s of CPU, spent while the kernel works, in a thread at the side branch's priority
        _import_in_background("mlflow", nice=SIDE_BRANCH_NICE)
    out_dir = plan.build / step.name
    plan.stamp_path(step.name).unlink(missing_ok=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    parameters = dict(plan.injected[step.name])
    attempt = None
    if "run_tags" in parameters:  # lets the runner find and close this step's MLflow runs
        attempt = uuid.uuid4().hex
        parameters["run_tags"] = {**parameters["run_tags"], "attempt": attempt}
    try:
        execute_notebook(
            plan.root / step.notebook,
            executed_notebook(plan.build, step.name),
            parameters,
            step=step.name,
            cwd=plan.root / NOTEBOOKS_DIR,
            timeout_s=plan.params.run.cell_timeout_s,
            progress=progress,
            warm=warm,
        )
    except BaseException:  # a failed or interrupted step leaves no run RUNNING
        _close_runs(attempt)
        raise
    write_stamp(plan.build, step.name, plan.keys[step.name])


def execute_notebook(
    notebook: Path,
    executed: Path,
    parameters: dict,
    *,
    step: str,
    cwd: Path,
    timeout_s: float,
    progress: Progress | None = None,
    warm: WarmKernel | None = None,
) -> None:
    """Run `notebook` with papermill into `executed`, its kernel in `cwd` (a warm one when
    given); raise StepError naming the failing cell, counted from 1.

    Success is papermill returning; any exception is a failure, whatever the written notebook's
    metadata says (after a timeout or a dead kernel papermill can mark every cell completed).
    """
    from nbops.runner.preload import skip_unused_imports

    skip_unused_imports()
    import papermill
    from papermill.exceptions import PapermillExecutionError

    progress = progress or Progress()
    km, own = _kernel_manager(warm, step)
    try:
        papermill.execute_notebook(
            str(notebook),
            str(executed),
            parameters=parameters,
            engine_name=_register_engine(),
            on_cell=lambda index, total: progress.on_cell(step, index, total),
            kernel_name="python3",
            km=km,
            # no cwd=: papermill would chdir the whole runner process (every thread); a kernel
            # nbclient starts gets the folder from `resources` (a warm one started in it)
            resources={"metadata": {"path": str(cwd)}},
            progress_bar=False,
            execution_timeout=timeout_s,
        )
    except PapermillExecutionError as exc:  # papermill counts cells from 0
        raise StepError(step, exc.cell_index + 1, exc.ename, exc.evalue) from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # timeout, dead kernel: papermill raises others
        raise _step_error(exc, step, progress.current_cell(step), timeout_s) from None
    finally:
        progress.done(step)
        if warm:
            warm.shutdown()
        if own:  # nbclient leaves a kernel it was handed running: stop it before saying why
            _shutdown(km)


def _kernel_manager(warm: WarmKernel | None, step: str):
    """(the kernel manager for a step, whether this step owns it): the warm kernel's when one
    was started for it, else a new one nbclient starts."""
    km = warm.take() if warm else None
    if warm and warm.cancelled.is_set():  # interrupted while this step waited for its kernel
        warm.shutdown()
        raise StepError(step, None, "KeyboardInterrupt", "the run was interrupted")
    if km is not None:
        return km, False
    # no warm kernel, or warming failed (it said why)
    from nbops.runner.kernels import EncryptedKernelManager

    return EncryptedKernelManager(kernel_name="python3"), True


def _step_error(exc: BaseException, step: str, cell: int | None, timeout_s: float) -> StepError:
    """A step's failure other than a cell's exception, in words: a timeout names the params key."""
    ename = type(exc).__name__
    evalue = str(exc) or ename
    if ename == "CellTimeoutError":
        evalue = f"cell exceeded run.cell_timeout_s={timeout_s}"
    elif ename == "DeadKernelError":
        evalue = "the kernel died"
    return StepError(step, cell, ename, evalue)


def _shutdown(km) -> None:
    from jupyter_core.utils import run_sync

    if km.has_kernel:
        with contextlib.suppress(Exception):
            run_sync(km.shutdown_kernel)(now=True)


def _close_runs(attempt: str | None) -> None:
    """Mark FAILED any MLflow run this attempt left RUNNING (a kernel that died mid-run)."""
    if attempt is None:
        return
    from nbops.ml import registry

    try:
        registry.fail_runs_tagged("attempt", attempt)
    except Exception as exc:  # the store itself may be what failed: say so, keep the step's error
        say(f"! could not close this step's MLflow runs ({type(exc).__name__}: {exc})")


def _import_in_background(*modules: str, nice: int = 0) -> threading.Thread:
    """Import `modules` in a daemon thread at `nice` (Linux niceness is per thread); a later
    import of the same module waits for it instead of doing the work again."""
    import importlib

    def work() -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, os.nice(0) + nice))
        for name in modules:
            with contextlib.suppress(Exception):  # the real import, later, reports any error
                importlib.import_module(name)

    thread = threading.Thread(target=work, daemon=True, name="nbops-preimport")
    thread.start()
    return thread
