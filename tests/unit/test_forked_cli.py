"""The suite's CLI calls are forked from a CLI parent (tests/forked_cli.py): a forked call must
say and return what a new `python -m nbops` process says and returns."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import make_project
from tests.forked_cli import call_environment, cli_parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks: Linux only")


def new_process(args, cwd, env):
    return subprocess.run(
        [sys.executable, "-m", "nbops", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["run", "--params", "params/missing.yaml"],
        ["run", "--params", "params/bad.yaml"],  # the folder's own file: the call's cwd
        ["run", "--only", "04_nothing", "--params", "params/bad.yaml"],
        ["report"],  # argparse's usage error, exit 2
    ],
)
def test_a_forked_call_says_and_returns_what_a_new_process_does(tmp_path, args):
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "bad.yaml").write_text("data:\n  target: [1, 2]\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    forked = cli_parent().run(args, tmp_path, env, timeout=120)
    real = new_process(args, tmp_path, env)
    assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr)
    assert forked.stdout + forked.stderr  # each case says something


def test_the_callers_environment_is_the_calls_and_a_call_past_its_timeout_is_killed(tmp_path):
    """A tracking server that accepts and never answers (its address only in the call's
    environment): the call waits on it until the timeout, then is killed, as subprocess.run does."""
    root = make_project(tmp_path / "project")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{server.getsockname()[1]}"}
    t = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        cli_parent().run(["champion", "--params", "params/smoke.yaml"], root, env, timeout=6)
    assert 6 <= time.monotonic() - t < 30
    assert caught.value.cmd[-3:] == ["champion", "--params", "params/smoke.yaml"]
    server.close()
    # the killed call is gone, reaped by the CLI parent (no zombie), which still serves the next call
    assert psutil.Process(cli_parent().pid).children() == []
    assert cli_parent().run(["--version"], root, env, timeout=60).stdout.startswith("nbops ")


def test_a_call_gets_the_variables_the_preloaded_imports_set_unless_the_caller_has_them():
    """A new process importing scikit-learn gets KMP_INIT_AT_FORK=FALSE (setdefault); a forked
    call must too, and a caller's own value wins, as it would against setdefault."""
    set_on_import = {"KMP_INIT_AT_FORK": "FALSE", "KMP_DUPLICATE_LIB_OK": "True"}
    env = call_environment({"PATH": "/bin", "KMP_DUPLICATE_LIB_OK": "False"}, set_on_import)
    assert env == {"PATH": "/bin", "KMP_INIT_AT_FORK": "FALSE", "KMP_DUPLICATE_LIB_OK": "False"}
