"""Running the steps as their upstream steps finish, within the run's time budget."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

from nbops.exceptions import StepError
from nbops.runner.execute import execute_step
from nbops.runner.plan import VALIDATE, Plan, RunResult, Step
from nbops.runner.progress import Progress, say


class RunBudget:
    """`run.timeout_s`: the wall-clock budget of the whole run, counted from its start. Once it
    is spent, the run's kernels are stopped as an interrupt stops them (`stop_children`, until
    the run is over: a step that was starting its kernel is stopped too); the steps they ran fail
    with `reason`, no step starts after, and the run ends with its failed-run report. In-process
    work (reading the CSV) is not interrupted: it is bounded by `data.max_mb`."""

    def __init__(self, seconds: float, started: float):
        self.seconds, self.started = seconds, started
        self.reason = f"run exceeded run.timeout_s={seconds}"
        self.expired = threading.Event()
        self._over = threading.Event()
        self._warm: dict = {}
        self._timer: threading.Timer | None = None

    def watch(self, warm: dict) -> None:
        """The run's warm kernels: cancelled when the budget is spent (a step waiting for one
        must not start a kernel of its own)."""
        self._warm = warm
        if self.expired.is_set():
            self._cancel()

    def _cancel(self) -> None:
        for kernel in list(self._warm.values()):
            kernel.cancel()

    def _expire(self) -> None:
        if self._over.is_set():
            return
        self.expired.set()
        say(f"! {self.reason}: stopping kernels")
        self._cancel()
        while not self._over.is_set():
            stop_children(grace_s=2.0)
            self._over.wait(1.0)

    def __enter__(self) -> RunBudget:
        left = max(0.0, self.seconds - (time.perf_counter() - self.started))
        self._timer = threading.Timer(left, self._expire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._over.set()
        if self._timer is not None:
            self._timer.cancel()


def _execute_all(plan: Plan, steps: list[Step], result: RunResult, jobs: int, warm, budget=None) -> None:
    """Run steps as their upstream steps finish, up to `jobs` at a time, each in its warm kernel."""
    with Progress() as progress:
        _schedule(plan, steps, result, jobs, progress, warm, budget=budget)


def _schedule(plan, steps, result, jobs, progress, warm, execute=None, render=None, budget=None) -> None:
    """Start each step once its upstream steps are done. A finished step's report renders after
    the steps waiting for it have started, so rendering is never on their path. Once the run's
    `budget` is spent, no step starts and the ones it stopped fail with its reason."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from nbops.runner.report import render_step

    execute = execute or execute_step
    render = render or render_step
    pending = list(steps)
    done: set[str] = {VALIDATE} | set(result.skipped)
    failed: set[str] = set()
    running = {}

    def start_ready(pool) -> None:
        for step in list(pending):
            if budget is not None and budget.expired.is_set():
                pending.remove(step)
                result.not_run.append(step.name)
                say(f"✗ {step.name:<12}  not run ({budget.reason})")
            elif any(n in failed for n in step.needs):
                pending.remove(step)
                result.not_run.append(step.name)
                upstream = ", ".join(n for n in step.needs if n in failed)
                say(f"✗ {step.name:<12}  not run ({upstream} failed)")
            elif all(n in done for n in step.needs):
                pending.remove(step)
                kept = getattr(warm.get(step.name), "adopted", False)
                say(f"▶ {step.name:<12}  started" + (" (kernel kept warm by the last run)" if kept else ""))
                future = pool.submit(_timed, execute, plan, step, progress, warm.get(step.name))
                running[future] = step

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        try:
            start_ready(pool)
            while running:
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                to_render = []
                for fut in finished:
                    step = running.pop(fut)
                    to_render.append(step.name)
                    try:
                        seconds = fut.result()
                    except StepError as exc:
                        if budget is not None and budget.expired.is_set():  # stopped by the budget
                            exc = StepError(step.name, exc.cell_index, "RunTimeoutError", budget.reason)
                        failed.add(step.name)
                        result.failure = result.failure or exc
                        say(f"✗ {step.name:<12}  {exc}")
                        continue
                    done.add(step.name)
                    result.ran.append(step.name)
                    say(f"✓ {step.name:<12} {seconds:5.1f}s")
                start_ready(pool)
                for name in to_render:  # while the steps just started run
                    render(plan.build, plan.reports, name)
        except KeyboardInterrupt:
            # Still inside the pool: stop the kernels (our children) so the worker threads
            # return now instead of finishing their steps. An interrupted step writes no
            # stamp, so the next run does it again.
            say("interrupted: stopping kernels")
            for kernel in warm.values():  # a step still waiting for its kernel starts nothing
                kernel.cancel()
            stop_children()
            raise


def child_pids(parent: int | None = None) -> list[int]:
    """PIDs of a process's direct children (default: ours, the kernels we started), from /proc."""
    me, pids = parent or os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                pids.append(int(entry))
    return pids


def stop_children(grace_s: float = 3.0) -> None:
    """SIGTERM our child processes, then SIGKILL what is left after `grace_s`."""
    children = child_pids()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in child_pids()):
        time.sleep(0.1)
    for pid in child_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t
