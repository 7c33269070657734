"""`python -m nbops ...` for the suite's CLI calls, forked from a process that imported once.

The runner of a cold `nbops run` spends about three quarters of its CPU on imports (scikit-learn
for the preflight, MLflow and its sqlite store, nbconvert, papermill, pandas, pandera: about 6 of
8 s of CPU on 2 cores), and the suite makes about a hundred such calls. `nbops()`
(tests/conftest.py) hands each call to one *CLI parent* per test process (`python -m
tests.forked_cli <name>`, listening on an abstract Unix socket: no file), which has imported those
modules and forks a child per call. The child becomes `python -m nbops <args>` as a new process
would be: the caller's environment and folder (`sys.path[0]` too), stdin from /dev/null, stdout
and stderr the caller's pipes, `nbops` run as `__main__` by runpy, and an interpreter's exit
(other threads joined, atexit handlers, the standard streams flushed, the exit code or the signal
that ended it). What it does not repeat is importing the preloaded modules, nor tearing them down
at exit (a file object left open is not flushed by its deallocation: its writes are lost, where a
process of its own would have kept them); the collector never scans them (`gc.freeze`). The
variables those imports set (scikit-learn its KMP_* pair, pandera SPARK_LOCAL_IP and
PYARROW_IGNORE_TIMEZONE, mlflow a telemetry session id, shared by the calls of one parent here)
are set in the child as the imports would set them.
`NBOPS_TEST_FORKED_CLI=0` runs every call as a process of its own, and the tests that are about a
real process (the wheel install, `--version`, signals, two runs at once, the import budget of the
no-op path) start one themselves.

The programs such a call starts as processes of their own in turn (FORKED_MODULES: the kernel
parent of a run's kernels, `python -m nbops.kernel_parent ...`; a local sweep's workers; the
runner's spare kernels; and the kernels jupyter_client starts, `python -m ipykernel_launcher -f
...`) are forked from the CLI parent too: in a forked call, `subprocess.Popen` (and
jupyter_client's launcher, which imports Popen by name) of one of those commands gives a
`ForkedPopen` (Popen's interface: pipes, passed fds, a new session, poll/wait/returncode,
signals) instead of a new interpreter. The forked program gets the command line a new process
would have (`set_command_line`: the kernel parent's token in it is how kernels are told from
reused PIDs), the given folder, environment and fds, and runs as `__main__`. A forked kernel
exits when its launcher (JPY_PARENT_PID) does, as ipykernel's parent poller makes a new kernel
exit when its parent does. Any other command, or keyword Popen is given that ForkedPopen does not
take, starts a new process as before. `python_m` (tests/conftest.py) runs other modules the same
way: nbval's pytest, whose kernels are forked too.

The CLI parent is single-threaded (children are watched through pidfds, so a fork never copies
another thread's held lock) and exits when its stdin closes: the test process that started it is
gone.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import gc
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
import time
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
    # what the kernel parent a forked run starts imports first, forked from here too
    # (not matplotlib: the kernel parent sets its backend before importing it)
    "ipykernel.kernelapp",
    "skops.io",
)
MAX_REQUEST = 1 << 20  # the call's arguments, folder and environment, as JSON
# what a forked call starts as a program of its own, forked from the CLI parent instead
FORKED_MODULES = ("nbops.kernel_parent", "nbops.sweep.worker", "nbops.runner.spare_process")
FORKED_MODULES += ("ipykernel_launcher",)  # a kernel jupyter_client starts (kernelspec argv)
# what ForkedPopen takes; close_fds=False (jupyter_client's kernels) is taken too: a kernel needs
# none of its launcher's other fds, only its standard streams and connection file
POPEN_KEYWORDS = {"stdin", "stdout", "stderr", "cwd", "env", "pass_fds", "text"}
POPEN_KEYWORDS |= {"start_new_session", "close_fds"}
ARGV_ROOM = 4096  # bytes of the CLI parent's command line, for a forked program's own
_serving = ""  # the CLI parent's socket name (in its children: where ForkedPopen asks)


# ------------------------------------------------------------------ the CLI parent's process


def _serve(name: str) -> dict | None:
    """Fork a child per request; returns the request in the child (None: the parent is done)."""
    global _serving
    _serving = name
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
                message, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 16)
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


def command_line_bytes(args) -> bytes:
    """`args` as /proc/<pid>/cmdline holds them: each NUL-terminated."""
    return b"".join(os.fsencode(str(a)) + b"\0" for a in args)


def set_command_line(args: list[str]) -> bool:
    """Make this process's /proc/<pid>/cmdline `args` (NUL-separated, NUL-padded to the room its
    own command line had), as a new process started with them would show; False when they do not
    fit or Linux does not say where the command line lives."""
    import ctypes

    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: stat fields 48, 49
    except (OSError, IndexError, ValueError):
        return False
    data = command_line_bytes(args)
    if not start or len(data) > end - start:
        return False
    ctypes.memmove(start, data.ljust(end - start, b"\0"), end - start)
    return True


def _take_fds(fds: list[int], targets: list[int]) -> None:
    """Put each received fd at its target number (stdin /dev/null when no target is 0)."""
    if 0 not in targets:
        fds, targets = [os.open(os.devnull, os.O_RDONLY), *fds], [0, *targets]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1000) for fd in fds]  # out of every target's way
    for fd in fds:
        os.close(fd)
    for fd, target in zip(high, targets, strict=True):
        os.dup2(fd, target)  # inheritable, as Popen leaves a child's 0-2 and pass_fds
    for fd in high:
        os.close(fd)


def _become(request: dict, set_on_import: dict[str, str]) -> None:
    """In the child: the state a new `python -m <module> <args>` process starts in, then run it."""
    module = request.get("module", "nbops")
    _take_fds(request["fds"], request.get("fd_targets", [1, 2]))
    if request.get("new_session"):
        os.setsid()  # before the command line shows: the caller reads the process group after
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(call_environment(request["env"], set_on_import))
    tempfile.tempdir = None  # TMPDIR as the caller's environment has it
    if module != "nbops" and not set_command_line([sys.executable, "-m", module, *request["args"]]):
        # its kernels would not be told from reused PIDs: a run would quietly start new ones
        sys.exit(f"tests.forked_cli: could not give {module} its command line")
    if module == "ipykernel_launcher" and request["env"].get("JPY_PARENT_PID") == str(request.get("caller")):
        _exit_with(request["caller"])
    subprocess.Popen = ForkingPopen  # type: ignore[misc]  # what this program starts in turn
    import jupyter_client.launcher  # a kernel's Popen, imported by name there

    jupyter_client.launcher.Popen = ForkingPopen  # type: ignore[misc]
    sys.path[0] = os.getcwd()  # as `python -m` puts the current folder first
    sys.argv = ["-m", *request["args"]]  # runpy sets argv[0] to the module's file
    _run_module_and_exit(module)


def _run_module_and_exit(module: str) -> None:
    """Run `module` as `__main__`, then exit as the interpreter does at the end of a program (other threads
    joined, atexit handlers run, the standard streams flushed, SystemExit's code as the status)
    without the teardown of every module the CLI parent imported, which writes to each shared
    page it frees (about 0.2 s of CPU per child). An uncaught exception exits the usual way."""
    import runpy

    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF
    else:
        print(code, file=sys.stderr)
        status = 1
    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter's exit does first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = 120  # as the interpreter exits when it cannot flush them
    os._exit(status)


def _exit_with(pid: int) -> None:
    """Exit as soon as process `pid` has: what ipykernel's parent poller does for a kernel whose
    launcher (JPY_PARENT_PID) is gone, here where the launcher is not the kernel's parent."""
    import select

    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)

    def watch() -> None:
        select.select([pidfd], [], [])
        os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def main() -> None:
    before = dict(os.environ)
    for name in PRELOAD:
        __import__(name)
    set_on_import = {k: v for k, v in os.environ.items() if before.get(k) != v}
    # what the imports built stays out of the collector's sight: a child's collections, and its
    # interpreter's exit, would otherwise write to every shared page they scan, copying it (the
    # gc module's advice for fork; a child's exit takes about 1 s of CPU without it)
    gc.freeze()
    request = _serve(sys.argv[1])
    if request is None:
        return
    _become(request, set_on_import)


# ------------------------------------------------------------------ programs a forked call starts


class ForkedPopen:
    """subprocess.Popen's interface for `python -m <module> <args>` forked by the CLI parent at
    `socket_name`: stdin, stdout and stderr as Popen takes them (None, PIPE, DEVNULL, STDOUT for
    stderr, an fd or a file), `pass_fds` at the same numbers, `text`; `pid`, `returncode`,
    `poll`, `wait`, `send_signal`, `terminate`, `kill`. The CLI parent reaps it and sends its exit
    status on this object's connection."""

    def __init__(self, args, stdin=None, stdout=None, stderr=None, cwd=None, env=None, pass_fds=(),
                 text=False, start_new_session=False, close_fds=True, socket_name: str = ""):  # fmt: skip
        self.args, self.returncode = list(args), None
        self.stdin = self.stdout = self.stderr = None
        self._lock = threading.Lock()
        mode = {"encoding": locale.getpreferredencoding(False)} if text else {}
        ours: list[int] = []  # the child's ends, closed here once sent
        sent: list[int] = []

        def end(spec, target: int, ours_mode: str, default: int) -> int:
            if spec is None:
                return default
            if spec == subprocess.DEVNULL:
                ours.append(os.open(os.devnull, os.O_RDWR))
                return ours[-1]
            if spec == subprocess.PIPE:
                r, w = os.pipe()
                child, mine = (r, w) if target == 0 else (w, r)
                ours.append(child)
                pipe = open(mine, ours_mode + ("" if text else "b"), **mode)  # noqa: SIM115
                setattr(self, ("stdin", "stdout", "stderr")[target], pipe)
                return child
            return spec if isinstance(spec, int) else spec.fileno()

        sent.append(end(stdin, 0, "w", 0))
        sent.append(end(stdout, 1, "r", 1))
        sent.append(sent[1] if stderr == subprocess.STDOUT else end(stderr, 2, "r", 2))
        sent += list(pass_fds)
        request = {
            "module": self.args[2],
            "args": self.args[3:],
            "cwd": str(cwd or os.getcwd()),
            "env": dict(os.environ if env is None else env),
            "fd_targets": [0, 1, 2, *pass_fds],
            "new_session": bool(start_new_session),
            "caller": os.getpid(),
        }
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._conn.connect("\0" + (socket_name or _serving))
            socket.send_fds(self._conn, [json.dumps(request).encode()], sent)
            self.pid = int(json.loads(self._conn.recv(4096))["pid"])
        finally:
            for fd in ours:
                os.close(fd)
        self._wait_for_command_line()

    def _wait_for_command_line(self, within_s: float = 10.0) -> None:
        """Return, as Popen does once its child has exec'd, when the program shows its own
        command line (set first thing after the fork) or has ended."""
        want = command_line_bytes(self.args)
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline and self.poll() is None:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{self.pid}/cmdline").read_bytes().startswith(want):
                    return
            time.sleep(0.001)

    def _settle(self, reply: bytes) -> None:
        # no reply: the CLI parent is gone, and with it what it would have said
        self.returncode = json.loads(reply)["returncode"] if reply else -signal.SIGKILL
        self._conn.close()

    def poll(self) -> int | None:
        if self.returncode is None and self._lock.acquire(blocking=False):
            try:
                self._conn.setblocking(False)
                try:
                    self._settle(self._conn.recv(4096))
                except BlockingIOError:
                    self._conn.setblocking(True)
                except OSError:
                    self._settle(b"")
            finally:
                self._lock.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        with self._lock:
            if self.returncode is None:
                self._conn.settimeout(timeout)
                try:
                    self._settle(self._conn.recv(4096))
                except TimeoutError:
                    self._conn.settimeout(None)
                    raise subprocess.TimeoutExpired(self.args, timeout) from None
                except OSError:
                    self._settle(b"")
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # not reaped yet: the PID is still the program's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for pipe in (self.stdin, self.stdout, self.stderr):
            if pipe is not None:
                pipe.close()
        self.wait()


def forks_from_cli_parent(args, kwargs: dict) -> bool:
    """A command a forked call forks from the CLI parent: `python -m` one of FORKED_MODULES,
    with only keywords ForkedPopen takes, a command line that fits ARGV_ROOM."""
    if not _serving or not isinstance(args, (list, tuple)) or len(args) < 3:
        return False
    if [str(a) for a in args[:2]] != [sys.executable, "-m"] or args[2] not in FORKED_MODULES:
        return False
    return set(kwargs) <= POPEN_KEYWORDS and len(command_line_bytes(args)) <= ARGV_ROOM


class ForkingPopen(subprocess.Popen):
    """subprocess.Popen in a forked call: a ForkedPopen for what forks_from_cli_parent takes,
    a new process for anything else."""

    def __new__(cls, args, *rest, **kwargs):
        if not rest and forks_from_cli_parent(args, kwargs):
            return ForkedPopen([str(a) for a in args], **kwargs)
        return super().__new__(cls)


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

    def socket_name(self) -> str:
        """The CLI parent's socket name (started when it is not running)."""
        return self._ensure()

    def _ensure(self) -> str:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._path = f"nbops-cli-parent-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
                self._proc = subprocess.Popen(
                    # the padding is room for a forked program's command line (set_command_line)
                    [sys.executable, "-m", "tests.forked_cli", self._path, "." * ARGV_ROOM],
                    cwd=Path(__file__).resolve().parents[1],  # where `tests` is importable
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=env,
                )
                assert self._proc.stdout is not None
                if self._proc.stdout.readline().strip() != b"ready":
                    raise RuntimeError("the CLI parent did not start (python -m tests.forked_cli)")
            return self._path

    def run(
        self, args: list[str], cwd: Path, env: dict, timeout: float, module: str = "nbops"
    ) -> subprocess.CompletedProcess:
        """As subprocess.run([python, -m, module, *args], capture_output=True, text=True, ...)."""
        path = self._ensure()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect("\0" + path)
            request = {"module": module, "args": list(args), "cwd": str(cwd), "env": env}
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
        cmd = [sys.executable, "-m", module, *args]
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
