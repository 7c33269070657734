"""Running the steps as their upstream steps finish, within the run's time budget."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbops.exceptions import StepError
from nbops.runner.execute import execute_step
from nbops.runner.plan import VALIDATE, Plan, RunResult, Step
from nbops.runner.progress import Progress, say

if TYPE_CHECKING:  # the no-op path imports this module and starts no thread pool
    from concurrent.futures import Future, ThreadPoolExecutor


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
        Scheduler(plan, steps, result, jobs, progress, warm, budget=budget).run()


Execute = Callable[[Plan, Step, Progress, Any], None]
Render = Callable[[Path, Path, str], None]


class Scheduler:
    """Start each step once its upstream steps are done. A finished step's report renders after
    the steps waiting for it have started, so rendering is never on their path. Once the run's
    `budget` is spent, no step starts and the ones it stopped fail with its reason.
    `execute` and `render` default to the real ones (tests give stand-ins)."""

    def __init__(
        self,
        plan: Plan,
        steps: list[Step],
        result: RunResult,
        jobs: int,
        progress: Progress,
        warm: dict[str, Any],
        *,
        execute: Execute | None = None,
        render: Render | None = None,
        budget: RunBudget | None = None,
    ):
        from nbops.runner.report import render_step

        self.plan, self.result, self.jobs, self.progress, self.warm = plan, result, jobs, progress, warm
        self.execute, self.render, self.budget = execute or execute_step, render or render_step, budget
        self.pending = list(steps)
        self.done: set[str] = {VALIDATE} | set(result.skipped)
        self.failed: set[str] = set()
        self.running: dict[Future, Step] = {}

    def run(self) -> None:
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        with ThreadPoolExecutor(max_workers=max(1, self.jobs)) as pool:
            try:
                self._start_ready(pool)
                while self.running:
                    finished, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
                    names = [self._finish(fut) for fut in finished]
                    self._start_ready(pool)
                    for name in names:  # while the steps just started run
                        self.render(self.plan.build, self.plan.reports, name)
            except KeyboardInterrupt:
                # Still inside the pool: stop the kernels (our children) so the worker threads
                # return now instead of finishing their steps. An interrupted step writes no
                # stamp, so the next run does it again.
                say("interrupted: stopping kernels")
                for kernel in self.warm.values():  # a step still waiting for its kernel starts nothing
                    kernel.cancel()
                stop_children()
                raise

    def _not_run(self, step: Step, why: str) -> None:
        self.pending.remove(step)
        self.result.not_run.append(step.name)
        say(f"✗ {step.name:<12}  not run ({why})")

    def _start_ready(self, pool: ThreadPoolExecutor) -> None:
        for step in list(self.pending):
            if self.budget is not None and self.budget.expired.is_set():
                self._not_run(step, self.budget.reason)
            elif any(n in self.failed for n in step.needs):
                self._not_run(step, ", ".join(n for n in step.needs if n in self.failed) + " failed")
            elif all(n in self.done for n in step.needs):
                self.pending.remove(step)
                kernel = self.warm.get(step.name)
                kept = " (kernel kept warm by the last run)" if getattr(kernel, "adopted", False) else ""
                say(f"▶ {step.name:<12}  started{kept}")
                self.running[pool.submit(_timed, self.execute, self.plan, step, self.progress, kernel)] = step

    def _finish(self, fut: Future) -> str:
        """Record a finished step's outcome; returns its name (its report renders next)."""
        step = self.running.pop(fut)
        try:
            seconds = fut.result()
        except StepError as exc:
            if self.budget is not None and self.budget.expired.is_set():  # stopped by the budget
                exc = StepError(step.name, exc.cell_index, "RunTimeoutError", self.budget.reason)
            self.failed.add(step.name)
            self.result.failure = self.result.failure or exc
            say(f"✗ {step.name:<12}  {exc}")
            return step.name
        self.done.add(step.name)
        self.result.ran.append(step.name)
        say(f"✓ {step.name:<12} {seconds:5.1f}s")
        return step.name


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
