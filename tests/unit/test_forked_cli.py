"""The suite's CLI calls are forked from a CLI parent (tests/forked_cli.py): a forked call must
say and return what a new `python -m nbops` process says and returns."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from tests import forked_cli
from tests.conftest import REPO, make_project
from tests.forked_cli import (
    ARGV_ROOM,
    ForkedPopen,
    ForkingPopen,
    call_environment,
    cli_parent,
    forks_from_cli_parent,
)

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


def _probe(popen, tmp_path, code="3", **kw):
    """Start tests.forked_probe with popen: (the process, the read end of its passed fd)."""
    read_fd, write_fd = os.pipe()
    env = {**os.environ, "PROBE": "probe-value", "PYTHONPATH": str(REPO)}
    proc = popen(
        [sys.executable, "-m", "tests.forked_probe", str(write_fd), code],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=tmp_path, env=env, pass_fds=(write_fd,), text=True, **kw,
    )  # fmt: skip
    os.close(write_fd)
    return proc, read_fd


def _command_line(pid: int, within_s: float = 10) -> list[str]:
    """The process's command line once Linux shows it: Popen returns when exec closes the
    child's close-on-exec fds, a moment before the new program's arguments are readable."""
    deadline = time.monotonic() + within_s
    while not (args := psutil.Process(pid).cmdline()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return args


@pytest.mark.parametrize(("code", "status", "said_last"), [("3", 3, ""), ("a message", 1, "a message\n")])
def test_a_program_forked_from_the_cli_parent_behaves_as_a_new_process(tmp_path, code, status, said_last):
    """Pipes, a passed fd at its number, folder, environment, command line, and the exit: a
    thread waited for, exit handlers run, unflushed output written, the status or sys.exit's
    message: what subprocess.Popen gives for the same command."""
    said = {}
    for name, popen, kw in (
        ("new", subprocess.Popen, {}),
        ("forked", ForkedPopen, {"socket_name": cli_parent().socket_name()}),
    ):
        proc, replies = _probe(popen, tmp_path, code, **kw)
        command_line = _command_line(proc.pid)
        assert proc.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)  # still reading its stdin
        proc.stdin.write("one\ntwo\n")
        proc.stdin.close()
        out, err = proc.stdout.read(), proc.stderr.read()
        returned = proc.wait(timeout=60)
        with os.fdopen(replies) as fh:
            said[name] = (out, err, returned, fh.read(), [a for a in command_line if a])
    assert said["forked"] == said["new"]
    expected = ("ONE\nTWO\nbye", f"{tmp_path} probe-value\n{said_last}", status, "done\nthread\natexit\n")
    assert said["new"][:4] == expected


def test_a_forked_program_can_be_killed_and_says_how_it_ended(tmp_path):
    proc, replies = _probe(ForkedPopen, tmp_path, socket_name=cli_parent().socket_name())
    os.close(replies)
    proc.kill()
    assert proc.wait(timeout=30) == -signal.SIGKILL and proc.poll() == -signal.SIGKILL
    proc.kill()  # reaped: no signal is sent to a PID that may be another process's now


# what jupyter_client.launcher.launch_kernel gives Popen for a local kernel on Linux
JUPYTER_CLIENT_KWARGS = {
    "stdin": subprocess.PIPE, "stdout": None, "stderr": None, "cwd": "/", "env": {},
    "close_fds": False, "start_new_session": True,
}  # fmt: skip


@pytest.mark.parametrize(
    ("args", "kwargs", "forked"),
    [
        ([sys.executable, "-m", "nbops.kernel_parent", "spec.json"], {"stdin": subprocess.PIPE}, True),
        ([sys.executable, "-m", "nbops.sweep.worker", "7"], {"pass_fds": (7,), "text": True}, True),
        ([sys.executable, "-m", "nbops", "run"], {}, False),  # not a program the CLI starts
        (["git", "rev-parse", "HEAD"], {}, False),
        ([sys.executable, "-m", "ipykernel_launcher", "-f", "k.json"], JUPYTER_CLIENT_KWARGS, True),
        ([sys.executable, "-m", "nbops.kernel_parent", "spec.json"], {"preexec_fn": os.getpid}, False),
        ([sys.executable, "-m", "nbops.kernel_parent", "x" * ARGV_ROOM], {}, False),  # no room
        ("python -m nbops.kernel_parent", {}, False),  # a shell string
    ],
)
def test_which_commands_a_forked_call_forks(monkeypatch, args, kwargs, forked):
    monkeypatch.setattr(forked_cli, "_serving", "a-cli-parent")
    assert forks_from_cli_parent(args, kwargs) is forked


def test_outside_a_forked_call_nothing_is_forked():
    assert forked_cli._serving == ""  # the test process is no CLI parent's child
    assert not forks_from_cli_parent([sys.executable, "-m", "nbops.kernel_parent", "s"], {})


def test_a_kernel_parent_forked_from_the_cli_parent_is_told_from_a_reused_pid(tmp_path, monkeypatch):
    """The kernel parent a forked run starts: a ForkedPopen whose command line names its token,
    as a new process's does (its kernels are adopted by that), stopped as one is stopped."""
    from nbops.kernel_parent import KernelParent, is_kernel_process

    monkeypatch.setattr(forked_cli, "_serving", cli_parent().socket_name())
    monkeypatch.setattr(subprocess, "Popen", ForkingPopen)
    parent = KernelParent(tmp_path / "kernels", ["x = 1"], tmp_path)
    parent.start()
    proc = parent.proc
    assert isinstance(proc, ForkedPopen) and proc.args[2] == "nbops.kernel_parent"
    assert is_kernel_process(proc.pid, parent.token) and parent.alive()
    assert not is_kernel_process(proc.pid, "another-token")
    parent.stop()
    assert proc.returncode == 0 and not is_kernel_process(proc.pid, parent.token)
    assert list((tmp_path / "kernels").iterdir()) == []


# a launcher of its own: starts a kernel as a forked call's jupyter_client does, says its PID, ends
LAUNCHER = """import subprocess, sys
import jupyter_client.launcher
from jupyter_client import KernelManager
from tests import forked_cli
forked_cli._serving = sys.argv[1]
jupyter_client.launcher.Popen = forked_cli.ForkingPopen
km = KernelManager(connection_file=sys.argv[2])
km.start_kernel(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(km.provisioner.process.pid, type(km.provisioner.process).__name__, km.is_alive(), flush=True)
"""


def test_a_kernel_a_forked_call_starts_is_forked_and_ends_with_its_launcher(tmp_path, monkeypatch):
    """A kernel is forked from the CLI parent in a session of its own (jupyter_client signals
    its process group), runs code, shuts down as a new one does, and exits once its launcher
    (JPY_PARENT_PID) has, as ipykernel's parent poller makes a new kernel do."""
    import jupyter_client.launcher
    from jupyter_client import KernelManager

    name = cli_parent().socket_name()
    monkeypatch.setattr(forked_cli, "_serving", name)
    monkeypatch.setattr(jupyter_client.launcher, "Popen", ForkingPopen)
    # a loaded machine can take longer than jupyter_client's 5 s before it sends SIGTERM
    km = KernelManager(connection_file=str(tmp_path / "kernel.json"), shutdown_wait_time=60)
    km.start_kernel()
    proc = km.provisioner.process
    assert isinstance(proc, ForkedPopen) and proc.args[2] == "ipykernel_launcher"
    assert os.getpgid(proc.pid) == proc.pid and psutil.Process(proc.pid).ppid() == cli_parent().pid
    client = km.blocking_client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    said: list[dict] = []
    reply = client.execute_interactive("import os; print(os.getpid())", timeout=60, output_hook=said.append)
    assert reply["content"]["status"] == "ok"
    assert [m["content"]["text"] for m in said if m["msg_type"] == "stream"] == [f"{proc.pid}\n"]
    client.stop_channels()
    km.shutdown_kernel(now=False)
    assert proc.returncode == 0

    out = subprocess.run(
        [sys.executable, "-c", LAUNCHER, name, str(tmp_path / "orphan.json")],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    ).stdout.split()  # fmt: skip
    assert out[1:] == ["ForkedPopen", "True"]  # forked, and alive when its launcher ended
    assert gone_within(int(out[0]), 30)


def gone_within(pid: int, seconds: float) -> bool:
    """Whether process `pid` (not this process's child) ends within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False
