"""Ports, process groups and kernels for the tests and the benchmarks: a free 127.0.0.1 port,
stopping a process group this code started (by that group's id only), and the Jupyter kernels
under a process (psutil, imported where used); the environment the suite's `mlflow server`s run in."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

# `mlflow server` starts job runners (a process per kind of server-side job, about 3 s of CPU
# each to start) unless told not to; the project's runs and sweeps submit no such jobs
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(
    proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30, linger: float = 30
) -> None:
    """Stop the process group `proc` leads (it was started with `start_new_session=True`):
    `sig`, then SIGKILL after `timeout` s; then wait up to `linger` s for the group's other
    members (workers, kernels, which may shut down on their own) and SIGKILL what is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
    deadline = time.monotonic() + linger
    while time.monotonic() < deadline:
        if not group_alive(proc.pid):
            return
        time.sleep(0.2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def voila_answers(url: str, timeout: float = 10) -> bool:
    """Whether the Voila server at `url` answers (any status below 500) a static path: a probe
    that starts no kernel, so it never takes a preheated one from the page views."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/voila/static/main.js", timeout=timeout) as resp:
            return resp.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


KERNEL_PARENT = "nbops.kernel_parent"


def is_kernel_command(cmd: list[str], parent_cmd: list[str]) -> bool:
    """A Jupyter kernel's command line: ipykernel's launcher, or a kernel forked by a kernel parent
    (a fork keeps its parent's command line; the kernel parent's own parent is not one)."""
    launched = any("ipykernel_launcher" in part for part in cmd)
    return launched or (KERNEL_PARENT in cmd and KERNEL_PARENT in parent_cmd)


def kernel_processes(pid: int) -> list:
    """The kernels under process `pid` (psutil processes), started or forked, leaving out any
    that exit while they are read."""
    import psutil

    try:
        below = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    kernels = []
    for proc in below:
        try:
            if is_kernel_command(proc.cmdline(), proc.parent().cmdline()):
                kernels.append(proc)
        except (psutil.Error, AttributeError):  # gone, or its parent gone (parent() is None)
            continue
    return kernels


def rss_mb(procs) -> float:
    """Resident memory of `procs` (psutil processes) in MB; a process gone meanwhile counts 0."""
    import psutil

    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def ready_or_stopped(server):
    """`server.wait_ready()`, or `server.stop()` and the error: a server that never became
    ready is not left running."""
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server
