"""The edit-a-param-and-rerun loop with kernels kept warm (nbops.runner.spares), through the real CLI:
the rerun's steps run in the kernels the last run left, give the same results a fresh kernel
gives, a run of another params file adopts them too (build/.spares/ serves every params file),
and nothing is left running once spares are turned off. Each stage needs the kernels the stage
before left running (live processes: a copied project cannot have them), so the loop is one test
whose stages are the functions below, in the order a person meets them."""

import json
import time

import pytest
from jupyter_client import BlockingKernelClient

from nbops.layout import build_dir, build_root
from nbops.runner import spares
from nbops.runner.kernels import connection_is_encrypted
from tests.conftest import make_project, nbops, write_params

pytestmark = pytest.mark.e2e
ON = {"NBOPS_KEEP_WARM_S": "300"}


def spare_pids(build):
    out = {}
    for rec in spares.folder_of(build).glob("*.spare*") if spares.folder_of(build).exists() else []:
        try:
            info = json.loads(rec.read_text())
        except (OSError, ValueError):
            continue
        out[info["step"]] = (info["pid"], info["token"])
    return out


def wait_for(pred, within_s=60):
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def proj(tmp_path):
    root = make_project(tmp_path / "project")
    depth(root, 3)
    write_params(root, "other", lambda p: p["model"]["params"].update(max_depth=5))
    yield root
    spares.stop_all(build_root(root))  # whatever a failed stage left


def test_the_edit_and_rerun_loop_with_kernels_kept_warm(proj):
    a_run_leaves_a_warm_kernel_for_each_step_it_executed(proj)
    the_one_param_rerun_adopts_them_and_trains_with_the_new_value(proj)
    a_changed_environment_is_not_served_by_an_old_kernel(proj)
    another_params_file_adopts_the_kernels_kept_warm(proj)
    turning_spares_off_stops_the_ones_left(proj)


def depth(root, max_depth):
    """params/depth.yaml, the file the loop edits, with that max_depth."""
    write_params(root, "depth", lambda p: p["model"]["params"].update(max_depth=max_depth))


def a_run_leaves_a_warm_kernel_for_each_step_it_executed(proj):
    res = nbops(proj, "run", "--params", "params/depth.yaml", env=ON)
    assert res.returncode == 0, res.stderr
    assert "kept 3 kernel(s) warm for the next run (01_eda, 02_train, 03_evaluate" in res.stdout
    assert "kernel kept warm by the last run" not in res.stdout  # nothing to adopt yet
    assert wait_for(lambda: set(spare_pids(build_root(proj))) == {"01_eda", "02_train", "03_evaluate"})
    for pid, token in spare_pids(build_root(proj)).values():
        assert spares.is_spare_process(pid, token)
    # every kernel talks CurveZMQ: no unencrypted-TCP warning from the run's kernels or the spares
    assert "without encryption" not in res.stdout + res.stderr
    folder = spares.folder_of(build_root(proj))
    connections = sorted(folder.glob("*.conn.json"))
    assert len(connections) == 3 and all(connection_is_encrypted(c) for c in connections)
    for connection in connections:  # a client with the file's keys gets answers: the kernel is up
        client = BlockingKernelClient()
        client.load_connection_file(str(connection))
        client.start_channels()
        try:
            client.wait_for_ready(timeout=120)
        finally:
            client.stop_channels()
    for log in folder.glob("*.log"):
        assert "without encryption" not in log.read_text(), log


def the_one_param_rerun_adopts_them_and_trains_with_the_new_value(proj):
    before = spare_pids(build_root(proj))
    depth(proj, 4)
    # as `make pipeline PARAMS=... ARGS=...` runs it: make exports its command-line variables
    made = {
        "MAKEFLAGS": " -- PARAMS=params/depth.yaml ARGS=",
        "MAKELEVEL": "1",
        "PARAMS": "params/depth.yaml",
    }
    res = nbops(proj, "run", "--params", "params/depth.yaml", env={**ON, **made, "ARGS": ""})
    assert res.returncode == 0, res.stderr
    assert "not using the kernel kept warm" not in res.stdout
    assert "02_train      started (kernel kept warm by the last run)" in res.stdout, res.stdout + str(before)
    assert "03_evaluate   started (kernel kept warm by the last run)" in res.stdout
    assert "01_eda        skipped (unchanged)" in res.stdout
    # the adopted kernels ran their step and were stopped; the EDA spare still waits
    for step in ("02_train", "03_evaluate"):
        pid, token = before[step]
        assert not spares.is_spare_process(pid, token)
    assert spares.is_spare_process(*before["01_eda"])
    # the step really ran in that kernel with this run's parameters
    train = json.loads((build_dir(proj, "depth") / "02_train" / "02_train.ipynb").read_text())
    injected = next(c for c in train["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    assert '"max_depth": 4' in "".join(injected["source"])
    model = json.loads((build_dir(proj, "depth") / "02_train" / "model.json").read_text())
    assert str(model["version"]) == "2", model
    assert "kept 2 kernel(s) warm for the next run (02_train, 03_evaluate" in res.stdout


def a_changed_environment_is_not_served_by_an_old_kernel(proj):
    depth(proj, 3)
    res = nbops(proj, "run", "--params", "params/depth.yaml", env={**ON, "NBOPS_TEST_MARKER": "x"})
    assert res.returncode == 0, res.stderr
    said = "02_train: not using the kernel kept warm by the last run: environment variable NBOPS_TEST_MARKER"
    assert f"{said} changed since it started" in res.stdout
    assert "kernel kept warm by the last run)" not in res.stdout


def another_params_file_adopts_the_kernels_kept_warm(proj):
    """The run before (the same environment) left train and evaluate kernels; another params file
    adopts them, in folders of its own where every step runs."""
    assert wait_for(lambda: {"02_train", "03_evaluate"} <= set(spare_pids(build_root(proj))))
    before = spare_pids(build_root(proj))
    res = nbops(proj, "run", "--params", "params/other.yaml", env={**ON, "NBOPS_TEST_MARKER": "x"})
    assert res.returncode == 0, res.stderr
    for step in ("02_train", "03_evaluate"):
        assert f"{step:<12}  started (kernel kept warm by the last run)" in res.stdout, res.stdout + str(
            before
        )
        assert not spares.is_spare_process(*before[step])
    assert "▶ 01_eda" in res.stdout  # nothing of params/depth.yaml's folder is reused
    assert (build_dir(proj, "other") / "02_train" / "model.json").is_file()


def turning_spares_off_stops_the_ones_left(proj):
    # the kernels the run before (params/other.yaml, every step) left, once they run
    assert wait_for(lambda: set(spare_pids(build_root(proj))) == {"01_eda", "02_train", "03_evaluate"})
    left = spare_pids(build_root(proj))
    depth(proj, 4)
    res = nbops(proj, "run", "--params", "params/depth.yaml", env={"NBOPS_KEEP_WARM_S": "0"})
    assert res.returncode == 0, res.stderr
    assert "kept" not in res.stdout and "kernel kept warm by the last run" not in res.stdout
    assert spare_pids(build_root(proj)) == {}
    for pid, token in left.values():
        assert wait_for(lambda pid=pid, token=token: not spares.is_spare_process(pid, token), 10)
