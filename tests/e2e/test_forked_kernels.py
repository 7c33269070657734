"""A run that starts fresh kernels: 02_train and 03_evaluate are forked from one kernel parent
(nbops.kernel_parent, through nbops.runner.forks) while 01_eda starts its own kernel, and nothing
is left once the run ends;
a model the params refuse stops the kernels already started, before any step ran."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import make_project, write_params

FRESH = {"NBOPS_KEEP_WARM_S": "0"}  # no spares: every kernel of the run starts fresh


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
    except OSError:
        return ""


def parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def watched_run(root: Path, params: str) -> tuple[subprocess.CompletedProcess, dict[int, str]]:
    """`nbops run` in `root`, and every kernel it started (pid → command line): its own
    children running ipykernel, and the kernel parent and its forks (named by the run's folder)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | FRESH
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbops", "run", "--params", params],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: dict[int, tuple[str, int]] = {}  # pid -> (command line, parent pid) when first seen
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            for name in os.listdir("/proc"):
                if not name.isdigit() or int(name) in seen:
                    continue
                pid, line = int(name), cmdline(int(name))
                if "ipykernel_launcher" in line or ("nbops.kernel_parent" in line and str(root) in line):
                    seen[pid] = (line, parent_of(pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, _ = proc.communicate(timeout=600)
    done.set()
    watcher.join()
    # the kernel parent is the run's child, its kernels the kernel parent's; a child a kernel
    # forks (git, say) shows the kernel's command line until it execs: not a kernel
    parents = {
        pid for pid, (line, ppid) in seen.items() if "nbops.kernel_parent" in line and ppid == proc.pid
    }
    kernels = {
        pid: line
        for pid, (line, ppid) in seen.items()
        if ppid == proc.pid or ("nbops.kernel_parent" in line and ppid in parents)
    }
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, ""), kernels


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_train_and_evaluate_are_forked_from_one_parent_and_nothing_outlives_the_run(tmp_path):
    root = make_project(tmp_path / "project")
    run, kernels = watched_run(root, "params/smoke.yaml")
    assert run.returncode == 0, run.stdout
    forks = [pid for pid, line in kernels.items() if "nbops.kernel_parent" in line]
    launched = [pid for pid, line in kernels.items() if "ipykernel_launcher" in line]
    assert len(launched) == 1, kernels  # 01_eda's own kernel
    # the kernel parent and one fork per step: forks keep their parent's command line
    assert len(forks) == 3 and len({kernels[pid] for pid in forks}) == 1, kernels
    deadline = time.monotonic() + 10  # a fork's parent poller notices within a second or so
    while time.monotonic() < deadline and any(alive(pid) for pid in kernels):
        time.sleep(0.1)
    assert [pid for pid in kernels if alive(pid)] == []
    assert "✓ 03_evaluate" in run.stdout and "could not warm" not in run.stdout
    assert list((root / "build" / "smoke" / ".kernels").iterdir()) == []  # spec, log, connection files gone


def test_a_model_the_params_refuse_stops_the_kernels_started_for_the_run(tmp_path):
    root = make_project(tmp_path / "project")
    params = write_params(root, "refused", lambda p: p["model"]["params"].update(max_depth="deep"))
    run, kernels = watched_run(root, str(params.relative_to(root)))
    assert run.returncode == 1
    assert "key 'model.params.max_depth'" in run.stdout and "▶" not in run.stdout  # no step started
    time.sleep(2)
    assert [pid for pid in kernels if alive(pid)] == []
