"""`python -m nbops ...` for the suite's CLI calls, forked from a process that imported once.

The runner of a cold `nbops run` spends about three quarters of its CPU on imports (scikit-learn
for the preflight, MLflow and its sqlite store, nbconvert, papermill, pandas, pandera: about 6 of
8 s of CPU on 2 cores), and the suite makes about a hundred such calls. `nbops()`
(tests/conftest.py) hands each call to one *CLI parent* per test process (`python -m
tests.forked_cli <name>`, listening on an abstract Unix socket: no file), which has imported those
modules and forks a child per call. The child becomes `python -m nbops <args>` as a new process
would be: the caller's environment and folder (`sys.path[0]` too), stdin from /dev/null, stdout
and stderr the caller's pipes, `nbops` run as `__main__` by runpy, and an ordinary interpreter
exit (atexit handlers, the exit code or the signal that ended it). What it does not repeat is
importing the preloaded modules; the variables those imports set (scikit-learn its KMP_* pair,
pandera SPARK_LOCAL_IP and PYARROW_IGNORE_TIMEZONE, mlflow a telemetry session id, shared by the
calls of one parent here) are set in the child as the imports would set them.
`NBOPS_TEST_FORKED_CLI=0` runs every call as a process of its own, and the tests that are about a
real process (the wheel install, `--version`, signals, two runs at once, the import budget of the
no-op path) start one themselves.

The CLI parent is single-threaded (children are watched through pidfds, so a fork never copies
another thread's held lock) and exits when its stdin closes: the test process that started it is
gone.
"""

from __future__ import annotations

import functools
import json
import locale
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

# What a cold `nbops run` imports in the runner's process (its sys.modules at exit, by package):
# imported in the CLI parent they change no behaviour of the CLI, which imports them itself, once
# the environment variables they set on import are set in each child too (`call_environment`).
PRELOAD = (
    "nbops.cli",
    "nbops.runner.pipeline",
    "nbops.runner.plan",
    "nbops.runner.execute",
    "nbops.runner.report",
    "nbops.runner.forks",
    "nbops.runner.kernels",
    "nbops.ml.models",
    "nbops.ml.data",
    "nbops.ml.tracking",
    "nbops.ml.registry",
    "mlflow.tracking",
    "papermill",
    "nbconvert",
    "jupyter_client.manager",
    "ipykernel.kernelspec",
    "IPython",
    "sklearn.tree",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "pandera.pandas",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "alembic.command",
    "nh3",
)
MAX_REQUEST = 1 << 20  # the call's arguments, folder and environment, as JSON


# ------------------------------------------------------------------ the CLI parent's process


def _serve(name: str) -> dict | None:
    """Fork a child per request; returns the request in the child (None: the parent is done)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind("\0" + name)
    listener.listen(64)
    print("ready", flush=True)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    waiting: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the caller's connection)
    while True:
        for key, _ in sel.select():
            if key.data == "stdin":
                if not sys.stdin.buffer.read1(4096):
                    return None  # the test process is gone
            elif key.data == "accept":
                conn, _ = listener.accept()
                message, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 2)
                request = json.loads(message)
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    listener.close()
                    for pidfd, (_pid, other) in waiting.items():
                        os.close(pidfd)
                        other.close()
                    conn.close()
                    request["fds"] = fds
                    return request
                for fd in fds:
                    os.close(fd)
                conn.sendall(json.dumps({"pid": pid}).encode())
                pidfd = os.pidfd_open(pid)
                waiting[pidfd] = (pid, conn)
                sel.register(pidfd, selectors.EVENT_READ, "child")
            else:
                pidfd = key.fd
                pid, conn = waiting.pop(pidfd)
                sel.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                try:
                    conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode())
                except OSError:
                    pass  # the caller gave up (its timeout)
                conn.close()


def call_environment(caller: dict[str, str], set_on_import: dict[str, str]) -> dict[str, str]:
    """The child's environment: the caller's, plus what the preloaded imports set where the
    caller has not (they all set theirs with setdefault, or only when unset)."""
    return {**set_on_import, **caller}


def _become_nbops(request: dict, set_on_import: dict[str, str]) -> None:
    """In the child: the state a new `python -m nbops <args>` process starts in, then run it."""
    import runpy

    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    out, err = request["fds"]
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(call_environment(request["env"], set_on_import))
    tempfile.tempdir = None  # TMPDIR as the caller's environment has it
    sys.path[0] = os.getcwd()  # as `python -m` puts the current folder first
    sys.argv = ["-m", *request["args"]]  # runpy sets argv[0] to nbops/__main__.py
    runpy.run_module("nbops", run_name="__main__", alter_sys=True)


def main() -> None:
    before = dict(os.environ)
    for name in PRELOAD:
        __import__(name)
    set_on_import = {k: v for k, v in os.environ.items() if before.get(k) != v}
    request = _serve(sys.argv[1])
    if request is None:
        return
    _become_nbops(request, set_on_import)


# ------------------------------------------------------------------ the caller's side


def _text(data: bytes) -> str:
    """As subprocess.run(text=True) decodes: the locale's encoding, universal newlines."""
    text = data.decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


class CliParent:
    """One CLI parent for this test process, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._path = ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _ensure(self) -> str:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._path = f"nbops-cli-parent-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "tests.forked_cli", self._path],
                    cwd=Path(__file__).resolve().parents[1],  # where `tests` is importable
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=env,
                )
                assert self._proc.stdout is not None
                if self._proc.stdout.readline().strip() != b"ready":
                    raise RuntimeError("the CLI parent did not start (python -m tests.forked_cli)")
            return self._path

    def run(self, args: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
        """As subprocess.run([python, -m, nbops, *args], capture_output=True, text=True, ...)."""
        path = self._ensure()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect("\0" + path)
            request = {"args": list(args), "cwd": str(cwd), "env": env}
            socket.send_fds(conn, [json.dumps(request).encode()], [out_w, err_w])
        finally:
            os.close(out_w)
            os.close(err_w)
        pid = json.loads(conn.recv(4096))["pid"]
        chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}

        def drain(fd: int) -> None:
            with open(fd, "rb", closefd=True) as pipe:
                chunks[fd].append(pipe.read())

        readers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in (out_r, err_r)]
        for reader in readers:
            reader.start()

        def said() -> tuple[str, str]:
            for reader in readers:
                reader.join()
            return _text(b"".join(chunks[out_r])), _text(b"".join(chunks[err_r]))

        conn.settimeout(timeout)
        cmd = [sys.executable, "-m", "nbops", *args]
        try:
            returncode = json.loads(conn.recv(4096))["returncode"]
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)  # not reaped before the parent replies: still our call's PID
            conn.settimeout(None)
            conn.recv(4096)
            raise subprocess.TimeoutExpired(cmd, timeout, *said()) from None
        finally:
            conn.close()
        return subprocess.CompletedProcess(cmd, returncode, *said())


@functools.cache
def cli_parent() -> CliParent:
    """This test process's CLI parent (one per pytest-xdist worker)."""
    return CliParent()


if __name__ == "__main__":
    main()
