"""Warm kernels for sweep points (nbops.sweep.kernels): each point's steps get fresh kernels
forked from the worker's pre-imported kernel parent; nothing is left running after a sweep, a
Ctrl-C or a dead worker; the results are those of a sweep with warm kernels off."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbops.exceptions import NbopsError
from nbops.sweep.kernels import warm_enabled
from nbops.sweep.point import time_split
from nbops.sweep.spec import load_sweep
from tests.conftest import make_project, nbops
from tests.sweep.processes import project_processes, wait_until_none_left
from tests.sweep.test_sweep import SMOKE_SWEEP, mlflow_client, sweep_json, write_sweep

# a cell added to the test project's train notebook, after its imports: what its kernel looks
# like when the step starts, then a name set in the namespace; max_depth KILL_DEPTH kills it
PROBE = """import os, sys
probe = {"pid": os.getpid(), "ppid": os.getppid(), "leaked": "sweep_probe" in globals(),
         "mlflow_loaded": "mlflow" in sys.modules, "launcher": os.environ.get("JPY_PARENT_PID")}
print("probe", probe)
sweep_probe = True
if model_params.get("max_depth") == KILL_DEPTH:
    os.kill(os.getpid(), 9)
"""


def launched_by(probe: dict) -> int:
    """The PID that started the probed kernel: its parent, or, for a kernel jupyter_client started
    that the suite forked from its CLI parent (tests/forked_cli.py), its JPY_PARENT_PID."""
    forked = probe["launcher"] is not None and int(probe["launcher"]) != probe["ppid"]
    return int(probe["launcher"]) if forked else probe["ppid"]


def add_probe(root: Path, kill_depth: int | None = None) -> None:
    path = root / "notebooks" / "02_train.ipynb"
    nb = json.loads(path.read_text())
    source = PROBE.replace("KILL_DEPTH", repr(kill_depth))
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
    nb["cells"].insert(3, cell)
    path.write_text(json.dumps(nb))


def probe_of(root: Path, sweep: str, point_id: str) -> dict:
    nb = json.loads(
        (root / "build" / "sweeps" / sweep / point_id / "02_train" / "02_train.ipynb").read_text()
    )
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", ""))
            if text.startswith("probe "):
                return ast.literal_eval(text.removeprefix("probe ").strip())
    raise AssertionError(f"no probe output in point {point_id}")


@contextlib.contextmanager
def running_sweep(root: Path, sweep: str, *args: str):
    """The sweep in a process group of its own, as a terminal runs a command; the group is
    killed if the test leaves while it still runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbops", "sweep", "--sweep", sweep, "--no-promote", *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def wait_for_training(proc: subprocess.Popen, build: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not (build / "02_train").exists():  # mid-point: training has started
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the point never started training"
        time.sleep(0.2)


# ------------------------------------------------------------------ no kernel


@pytest.mark.parametrize(
    ("raw", "warm"), [(None, True), ("1", True), ("yes", True), ("0", False), ("off", False)]
)
def test_nbops_sweep_warm_switches_the_pool(raw, warm):
    assert warm_enabled({} if raw is None else {"NBOPS_SWEEP_WARM": raw}) is warm


def test_a_bad_nbops_sweep_warm_is_one_line_and_touches_no_store(project):
    with pytest.raises(NbopsError, match=r"^NBOPS_SWEEP_WARM: expected 1 .* or 0 \(off\), got 'maybe'$"):
        warm_enabled({"NBOPS_SWEEP_WARM": "maybe"})
    result = nbops(project, "sweep", "--sweep", SMOKE_SWEEP, env={"NBOPS_SWEEP_WARM": "maybe"}, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: NBOPS_SWEEP_WARM: expected 1 (warm kernels, the default) or 0 (off), got 'maybe'"
    ]
    assert not (project / "mlflow").exists()
    assert not (project / "build").exists()


def test_time_split_reads_papermill_cell_durations(tmp_path):
    def cell(source, duration):
        return {"cell_type": "code", "source": source, "metadata": {"papermill": {"duration": duration}}}

    for step, cells in {
        "02_train": [cell("x = 1", 0.5), cell("registered = tracking.log_training(model)", 2.0)],
        "03_evaluate": [cell("tracking.log_holdout_metrics(r, m)", 0.25), cell("plot()", 1.0)],
    }.items():
        (tmp_path / step).mkdir()
        (tmp_path / step / f"{step}.ipynb").write_text(json.dumps({"cells": cells}))
    split = time_split(tmp_path, seconds=6.0, kernel_wait_s=0.75)
    assert split == {"kernel_wait_s": 0.75, "cells_s": 1.5, "mlflow_logging_s": 2.25, "runner_s": 1.5}


# ------------------------------------------------------------------ end to end


def test_points_get_fresh_forked_kernels_and_a_killed_kernel_fails_its_point_only(project):
    add_probe(project, kill_depth=2)
    sweep = write_sweep(
        project, "iso", {"base": "params/smoke.yaml", "grid": {"model.params.max_depth": [2, 3, 6]}}
    )
    result = nbops(project, "sweep", "--sweep", sweep, "--workers", "1", "--no-promote", timeout=900)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "on a local pool of 1, warm kernels;" in result.stdout
    points = sweep_json(project, "iso")["points"]
    assert [p["status"] for p in points] == ["failed", "ok", "ok"]
    assert "02_train" in points[0]["reason"] and "the kernel died" in points[0]["reason"]
    ids = [p["id"] for p in points]
    workers = {
        json.loads((project / "build" / "sweeps" / "iso" / i / "worker.json").read_text())["pid"] for i in ids
    }
    assert len(workers) == 1  # one long-lived worker ran all three, the killed kernel's point included
    # the killed kernel set the name too: the next points' kernels must not have it
    probes = [probe_of(project, "iso", i) for i in ids[1:]]
    assert [p["leaked"] for p in probes] == [False, False]  # a fresh namespace for every point
    assert len({p["pid"] for p in probes}) == 2  # a kernel of its own for every point
    assert all(p["mlflow_loaded"] for p in probes)  # the warm-up's imports were done before the step
    # forked by the worker's kernel parent (one process for the sweep), not started by the worker
    parents = {p["ppid"] for p in probes}
    assert len(parents) == 1 and parents.isdisjoint(workers)
    wait_until_none_left(project)


def test_results_equal_with_warm_kernels_on_and_off(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    metrics = {}
    for warm in ("1", "0"):
        root = make_project(tmp_path / f"warm-{warm}")
        add_probe(root)
        result = nbops(
            root,
            "sweep",
            "--sweep",
            SMOKE_SWEEP,
            "--workers",
            "2",
            env={"NBOPS_SWEEP_WARM": warm},
            timeout=900,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert ("warm kernels off (NBOPS_SWEEP_WARM=0)" in result.stdout) is (warm == "0")
        points = sweep_json(root)["points"]
        metrics[warm] = {p["id"]: p["challenger"]["metrics"] for p in points}
        workers = {
            json.loads((root / "build" / "sweeps" / "smoke" / i / "worker.json").read_text())["pid"]
            for i in metrics[warm]
        }
        started_by_worker = [launched_by(probe_of(root, "smoke", i)) in workers for i in metrics[warm]]
        assert started_by_worker == [warm == "0"] * 2  # off: each step's kernel is the worker's own
        wait_until_none_left(root)
    assert len(metrics["1"]) == 2
    assert metrics["1"] == metrics["0"]


def test_ctrl_c_stops_the_sweep_its_workers_and_their_kernels(project):
    victim = load_sweep(SMOKE_SWEEP, project).points[0]
    with running_sweep(project, SMOKE_SWEEP, "--workers", "2") as proc:
        wait_for_training(proc, project / "build" / "sweeps" / "smoke" / victim.id)
        during = project_processes(project)
        assert any("nbops.sweep.worker" in c for c in during.values()), during
        assert any("nbops.kernel_parent" in c for c in during.values()), during
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "error: interrupted" in err
    wait_until_none_left(project)
    client = mlflow_client(project)
    runs = client.search_runs([client.get_experiment_by_name("drug-classifier").experiment_id])
    assert runs and all(r.info.status != "RUNNING" for r in runs)


def test_a_local_worker_killed_mid_point_fails_that_point_only_and_is_replaced(project):
    first, second = load_sweep(SMOKE_SWEEP, project).points
    with running_sweep(project, SMOKE_SWEEP, "--workers", "1") as proc:
        build = project / "build" / "sweeps" / "smoke" / first.id
        wait_for_training(proc, build)
        pid = json.loads((build / "worker.json").read_text())["pid"]
        assert "nbops.sweep.worker" in project_processes(project)[pid]  # this test's worker: kill exactly it
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=900)
    assert proc.returncode == 1, out + err
    assert "error: point 1 [model.params.max_depth=2]: worker process died (killed by SIGKILL)" in err, err
    data = sweep_json(project)
    assert [p["status"] for p in data["points"]] == ["failed", "ok"]
    replaced = json.loads((project / "build" / "sweeps" / "smoke" / second.id / "worker.json").read_text())[
        "pid"
    ]
    assert replaced != pid
    wait_until_none_left(project)  # the dead worker's kernel parent and kernels went with it
