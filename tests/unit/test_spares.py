"""Kernels kept warm between runs (nbops.runner.spares), with real kernel processes: adopted only with
the same key, by one run only, and never left behind (idle time, a claimant gone, make clean)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbops.exceptions import NbopsError
from nbops.layout import build_root
from nbops.runner import spares
from tests.conftest import run_coroutine

CODE = "import json\nwarmed_up = 'yes'"


def key(**changed) -> dict:
    env = {"PATH": os.environ.get("PATH", ""), **changed.pop("env", {})}
    return spares.spare_key("02_train", changed.get("code", CODE), Path("/nb"), env, "pkg")


def record(build: Path) -> Path:
    """The spare's own record, once its process is up."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = list(spares.folder_of(build).glob("02_train.*.spare"))
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no spare record in {spares.folder_of(build)}")


def gone(pid: int, token: str, within_s: float = 15) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not spares.is_spare_process(pid, token):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def build(tmp_path):
    """A build folder; every spare started in it is stopped afterwards, whatever the test did."""
    build = build_root(tmp_path)  # build/.spares: one for every params file
    yield build
    for spec in spares.folder_of(build).glob("*.spec.json") if spares.folder_of(build).exists() else []:
        token = spec.name.split(".")[1]
        for pid in (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()):
            spares.stop_process(pid, token)  # only the process whose command line names the token


def spawn(build: Path, idle_s: float = 120, k: dict | None = None) -> dict:
    spares.spawn(build, "02_train", CODE, build.parent, dict(os.environ), k or key(), idle_s)
    import json

    return json.loads(record(build).read_text())


def execute(km, code: str) -> dict:
    async def go():
        client = km.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=60)
            reply = await client.execute_interactive(code, timeout=60, output_hook=outputs.append)
            return reply["content"]
        finally:
            client.stop_channels()

    outputs: list = []
    content = run_coroutine(go())
    return {"status": content["status"], "out": "".join(m["content"].get("text", "") for m in outputs)}


def test_keep_warm_seconds_default_ci_and_bad_values():
    assert spares.keep_warm_seconds({}) == spares.DEFAULT_KEEP_WARM_S
    assert spares.keep_warm_seconds({"CI": "true"}) == 0
    assert spares.keep_warm_seconds({"CI": "true", "NBOPS_KEEP_WARM_S": "30"}) == 30
    assert spares.keep_warm_seconds({"NBOPS_KEEP_WARM_S": "0"}) == 0
    for bad in ("ten", "-1", "nan"):
        with pytest.raises(NbopsError, match=rf"NBOPS_KEEP_WARM_S: expected idle seconds >= 0.*got '{bad}'"):
            spares.keep_warm_seconds({"NBOPS_KEEP_WARM_S": bad})


def test_the_key_names_what_changed():
    assert spares.what_changed(key(), key()) == []
    assert spares.what_changed(key(), key(env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})) == [
        "environment variable MLFLOW_TRACKING_URI"
    ]
    assert spares.what_changed(key(env={"OMP_NUM_THREADS": "1"}), key()) == [
        "environment variable OMP_NUM_THREADS"
    ]
    assert spares.what_changed(key(), key(code="import pandas")) == ["the notebook's imports"]
    # what make exports from its command line (`make pipeline PARAMS=... ARGS=--force`) and what
    # Make and Jupyter set per process cannot change a kernel's imports: they do not count
    made = {"MAKEFLAGS": " -- PARAMS=params/smoke.yaml ARGS=--force", "MFLAGS": "-", "MAKELEVEL": "1"}
    made |= {"PARAMS": "params/smoke.yaml", "ARGS": "--force", "JPY_PARENT_PID": "1", "PORT": "8866"}
    assert spares.what_changed(key(), key(env=made)) == []


def test_a_spare_with_the_same_key_is_adopted_warm_and_stopped_after_use(build):
    info = spawn(build)
    assert spares.is_spare_process(info["pid"], info["token"])
    kernel = spares.claim(build, "02_train", key())
    assert kernel is not None and kernel.pid == info["pid"]
    km = kernel.take()
    assert km is not None and km.has_kernel
    # the warm-up ran in the kernel (its imports are loaded), and nothing else did
    result = execute(km, "print(warmed_up, 'json' in dir(), 'table' in dir())")
    assert result == {"status": "ok", "out": "yes True False\n"}
    assert spares.claim(build, "02_train", key()) is None  # one run per spare
    kernel.shutdown()
    assert gone(info["pid"], info["token"])
    assert list(spares.folder_of(build).iterdir()) == []


def test_a_spare_with_another_key_is_stopped_not_adopted(build, capsys):
    info = spawn(build)
    assert spares.claim(build, "02_train", key(env={"MLFLOW_TRACKING_URI": "sqlite:///other.db"})) is None
    said = capsys.readouterr().out
    assert "02_train: not using the kernel kept warm by the last run: environment variable " in said
    assert "MLFLOW_TRACKING_URI changed since it started" in said
    assert gone(info["pid"], info["token"])
    assert list(spares.folder_of(build).iterdir()) == []


def test_an_unclaimed_spare_exits_after_its_idle_time(build):
    info = spawn(build, idle_s=1)
    assert gone(info["pid"], info["token"], within_s=20)
    assert list(spares.folder_of(build).iterdir()) == []
    assert spares.claim(build, "02_train", key()) is None


def test_a_claimed_spare_exits_when_the_run_that_claimed_it_is_gone(build):
    info = spawn(build)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a PID that no longer runs
    rec = record(build)
    rec.rename(rec.with_name(f"{rec.name}.claimed-{dead.pid}"))
    assert gone(info["pid"], info["token"])


def test_removing_the_build_folder_stops_its_spares(build):
    """`make clean` is enough: a spare whose files are gone exits by itself."""
    info = spawn(build)
    shutil.rmtree(build)
    assert gone(info["pid"], info["token"])


def test_a_new_spare_replaces_the_unclaimed_one_of_its_step(build):
    first = spawn(build)
    spares.spawn(build, "02_train", CODE, build.parent, dict(os.environ), key(), 120)
    assert gone(first["pid"], first["token"])
    assert len(list(spares.folder_of(build).glob("02_train.*.spec.json"))) == 1


def test_stop_all_stops_every_unclaimed_spare(build):
    info = spawn(build)
    assert spares.stop_all(build) == 1
    assert gone(info["pid"], info["token"])


def test_a_spare_starts_importing_only_once_its_run_has_exited(build):
    """Its imports would take the CPU the run's own exit needs; it waits for that PID first."""
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    spares.spawn(build, "02_train", CODE, build.parent, dict(os.environ), key(), 120, after_pid=run.pid)
    time.sleep(1)
    assert run.poll() is None and not list(spares.folder_of(build).glob("*.spare"))  # still waiting
    run.wait()
    assert record(build).exists()


def test_a_spare_runs_at_the_priority_its_step_ran_at(build):
    spares.spawn(build, "01_eda", CODE, build.parent, dict(os.environ), key(), 120, nice=10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (found := list(spares.folder_of(build).glob("01_eda.*.spare"))):
        time.sleep(0.05)
    import json

    info = json.loads(found[0].read_text())
    spawn_niced = os.getpriority(os.PRIO_PROCESS, info["pid"])
    assert spawn_niced == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
    spares.stop_process(info["pid"], info["token"])


def test_a_connection_file_caught_mid_rewrite_is_read_again(tmp_path):
    """A kernel rewrites its connection file once it has bound its ports: read while it is empty,
    the file is read again, and a file that stays unreadable is still an error."""
    import json as _json

    from jupyter_client import KernelManager

    path = tmp_path / "kernel.json"
    path.write_text("")
    km = KernelManager(connection_file=str(path))
    reads = []
    original = km.load_connection_file

    def load(*args):
        reads.append(1)
        if len(reads) == 3:  # the kernel has finished writing it
            path.write_text(
                _json.dumps({"ip": "127.0.0.1", "shell_port": 5555, "key": "k", "transport": "tcp"})
            )
        return original(*args)

    km.load_connection_file = load
    spares.load_connection_file(km)
    assert len(reads) == 3 and km.shell_port == 5555

    path.write_text("")
    stuck = KernelManager(connection_file=str(path))
    with pytest.raises(ValueError):
        spares.load_connection_file(stuck, within_s=0.2)
