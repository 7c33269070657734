"""Page kernels forked from the server's kernel parent (nbops.serve.voila_forks): a forked kernel
runs in the launch's folder and environment with the parent's imports done, answers, is
interrupted, restarted and shut down through jupyter_client as a started one is; a kernel that
cannot be forked starts as a new process."""

import os
import signal
import subprocess
import sys
import time

import pytest

from nbops.kernel_parent import KernelParent, KernelParentGone, is_kernel_process
from nbops.serve import voila_forks
from nbops.serve.voila_forks import ForkedProcess, ForkingKernelManager, is_this_ipykernel
from tests.conftest import run_coroutine

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked on Linux only")

PRELOAD = "import json\nimport os\nos.environ['NBOPS_TEST_SET_ON_IMPORT'] = 'parent'"
PROBE = (
    "import os, sys; print(os.getppid(), os.getcwd(), os.environ.get('NBOPS_TEST_LAUNCH'), "
    "os.environ.get('NBOPS_TEST_SET_ON_IMPORT'), 'json' in sys.modules, os.getpgid(0) == os.getpid())"
)


@pytest.fixture(autouse=True)
def _own_parents(monkeypatch):
    """Each test gets the server's kernel parents afresh, and stops the ones it started."""
    monkeypatch.setattr(voila_forks, "_parents", {})
    monkeypatch.setattr(voila_forks, "_retired", [])
    yield
    for served in [*voila_forks._parents.values(), *voila_forks._retired]:
        served.parent.stop()


async def _run(km, code: str) -> str:
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        out = []
        reply = await client.execute_interactive(
            code, timeout=60, output_hook=lambda m: out.append(m["content"].get("text", ""))
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(out).strip()
    finally:
        client.stop_channels()


def _start(tmp_path, **launch):
    km = ForkingKernelManager(preload=PRELOAD, in_kernel="", transport_encryption="auto")
    env = {**os.environ, "NBOPS_TEST_LAUNCH": "launch"}
    run_coroutine(km.start_kernel(cwd=str(tmp_path), env=env, **launch))
    return km


def test_a_kernel_is_forked_in_the_launch_folder_and_environment_with_the_imports_done(tmp_path):
    km = _start(tmp_path)
    try:
        process = km.provisioner.process
        assert isinstance(process, ForkedProcess)
        (parent,) = [served.parent for served in voila_forks._parents.values()]
        ppid, cwd, launch, on_import, imported, leader = run_coroutine(_run(km, PROBE)).split()
        assert int(ppid) == parent.proc.pid and process.pid != parent.proc.pid
        assert (cwd, launch, on_import) == (str(tmp_path), "launch", "parent")
        assert (imported, leader) == ("True", "True")  # the parent's imports; a session of its own
        # transport_encryption auto: the connection file the kernel was forked on has curve keys
        assert len(km.get_connection_info()["curve_publickey"]) == 40
    finally:
        run_coroutine(km.shutdown_kernel(now=False))
    assert not is_kernel_process(process.pid, parent.token)
    assert not run_coroutine(km.is_alive())


def test_a_page_kernel_forked_after_the_dashboards_imports_has_the_widgets_comm_targets(tmp_path):
    """ipywidgets registers its comm targets on import only inside a running kernel; the kernel
    parent imported it before any kernel, so each forked kernel registers them itself."""
    km = ForkingKernelManager(transport_encryption="auto")  # the dashboard's preload, as served
    run_coroutine(km.start_kernel(cwd=str(tmp_path)))
    try:
        targets = run_coroutine(
            _run(
                km,
                "import sys; targets = get_ipython().kernel.comm_manager.targets\n"
                "print(sorted(targets), 'skops.io' in sys.modules)",
            )
        )
        assert targets == "['jupyter.widget', 'jupyter.widget.control'] True"
    finally:
        run_coroutine(km.shutdown_kernel(now=True))


def test_a_forked_kernel_is_interrupted_restarted_and_killed_by_its_pid(tmp_path):
    km = _start(tmp_path)
    try:
        first = km.provisioner.pid
        client = km.client()
        client.start_channels()
        run_coroutine(client.wait_for_ready(timeout=60))
        client.execute("import time; time.sleep(60)")
        time.sleep(0.5)
        run_coroutine(km.interrupt_kernel())
        reply = run_coroutine(client.get_shell_msg(timeout=20))
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        client.stop_channels()
        run_coroutine(km.restart_kernel(now=True))
        second = km.provisioner.pid
        assert second != first and isinstance(km.provisioner.process, ForkedProcess)
        assert run_coroutine(_run(km, "print(6 * 7)")) == "42"
    finally:
        run_coroutine(km.shutdown_kernel(now=True))
    token = next(iter(voila_forks._parents.values())).parent.token
    assert not is_kernel_process(first, token) and not is_kernel_process(second, token)


def test_a_forked_kernel_that_is_gone_gets_no_signal(tmp_path, monkeypatch):
    km = _start(tmp_path)
    provisioner = km.provisioner
    process = provisioner.process
    run_coroutine(km.shutdown_kernel(now=True))
    assert process.poll() == 0
    sent = []
    monkeypatch.setattr(os, "killpg", lambda *a: sent.append(("killpg", *a)))
    monkeypatch.setattr(os, "kill", lambda *a: sent.append(("kill", *a)))
    provisioner.process = process  # as if the manager still held it
    run_coroutine(provisioner.send_signal(signal.SIGKILL))
    assert sent == []  # its PID may be another process's by now


def test_the_kernel_parent_is_started_again_when_it_stopped(tmp_path):
    km = _start(tmp_path)
    run_coroutine(km.shutdown_kernel(now=True))
    (first,) = [served.parent for served in voila_forks._parents.values()]
    first.proc.send_signal(signal.SIGTERM)
    first.proc.wait(timeout=10)
    km = _start(tmp_path)
    try:
        (second,) = [served.parent for served in voila_forks._parents.values()]
        assert second is not first and second.alive()
        assert isinstance(km.provisioner.process, ForkedProcess)
    finally:
        run_coroutine(km.shutdown_kernel(now=True))


def test_an_edited_package_gets_a_new_kernel_parent_and_the_old_one_stops_with_its_last_kernel(
    tmp_path, monkeypatch
):
    km_old = _start(tmp_path)
    (old,) = [served.parent for served in voila_forks._parents.values()]
    monkeypatch.setattr(voila_forks, "source_stamp", lambda: ("edited",))
    km_new = _start(tmp_path)
    try:
        (new,) = [served.parent for served in voila_forks._parents.values()]
        assert new is not old and new.alive()
        assert old.alive()  # km_old's page still uses its kernel
        assert run_coroutine(_run(km_old, "print(6 * 7)")) == "42"
        assert int(run_coroutine(_run(km_new, "import os; print(os.getppid())"))) == new.proc.pid
        run_coroutine(km_old.shutdown_kernel(now=True))
        km_third = _start(tmp_path)  # the next launch stops the parent that has no kernel left
        run_coroutine(km_third.shutdown_kernel(now=True))
        assert not old.alive() and voila_forks._retired == []
    finally:
        run_coroutine(km_new.shutdown_kernel(now=True))


def test_the_source_stamp_changes_with_a_source_file(tmp_path):
    module = tmp_path / "pkg" / "mod.py"
    module.parent.mkdir()
    module.write_text("x = 1\n")
    before = voila_forks.source_stamp(tmp_path / "pkg")
    assert voila_forks.source_stamp(tmp_path / "pkg") == before
    module.write_text("x = 22\n")
    assert voila_forks.source_stamp(tmp_path / "pkg") != before


def test_a_kernel_that_cannot_be_forked_starts_as_a_new_process_and_the_log_says_why(
    tmp_path, monkeypatch, caplog
):
    def gone(self, *args):
        raise KernelParentGone("the kernel parent stopped (see the server's log)")

    monkeypatch.setattr(KernelParent, "fork", gone)
    km = _start(tmp_path)
    try:
        assert isinstance(km.provisioner.process, subprocess.Popen)
        assert run_coroutine(_run(km, "print(6 * 7)")) == "42"
    finally:
        run_coroutine(km.shutdown_kernel(now=True))
    assert "Starting the kernel as a new process: the kernel parent stopped" in caplog.text


def test_turned_off_every_kernel_is_a_new_process(tmp_path):
    km = ForkingKernelManager(preload=PRELOAD, fork_kernels=False)
    run_coroutine(km.start_kernel(cwd=str(tmp_path)))
    try:
        assert isinstance(km.provisioner.process, subprocess.Popen)
        assert voila_forks._parents == {}
    finally:
        run_coroutine(km.shutdown_kernel(now=True))


@pytest.mark.parametrize(
    ("cmd", "forked"),
    [
        ([sys.executable, "-m", "ipykernel_launcher", "-f", "/r/k.json"], True),
        (["/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "/r/k.json"], False),  # another interpreter
        ([sys.executable, "-m", "ipykernel_launcher", "-f", "/r/other.json"], False),
        ([sys.executable, "-m", "ipykernel_launcher", "-f", "/r/k.json", "--debug"], False),
        (["R", "--slave", "-e", "IRkernel::main()", "/r/k.json"], False),
    ],
)
def test_only_this_interpreters_plain_ipykernel_is_forked(cmd, forked):
    if cmd[0] == "/usr/bin/python3" and os.path.realpath(cmd[0]) == os.path.realpath(sys.executable):
        pytest.skip("the venv's interpreter is /usr/bin/python3 itself")
    assert is_this_ipykernel(cmd, "/r/k.json") is forked


def test_a_forked_process_lives_while_a_process_has_its_pid_and_token(tmp_path):
    parent = KernelParent(tmp_path, [], tmp_path, log=False)
    parent.start()
    pid = parent.proc.pid
    try:
        deadline = time.monotonic() + 30
        while not is_kernel_process(pid, parent.token) and time.monotonic() < deadline:
            time.sleep(0.05)  # until it has exec'd: its command line names the token from then on
        watched = ForkedProcess(pid, parent.token)
        assert watched.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            watched.wait(timeout=0.2)
        assert ForkedProcess(pid, "0123456789ab").poll() == 0  # a live PID, not that token's
    finally:
        parent.stop()
    assert watched.poll() == 0 and watched.wait(timeout=1) == 0
