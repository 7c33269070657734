"""A kernel parent: a process that has done the imports kernels need once, then forks a kernel
per request.

Starting a kernel and importing what a notebook imports (mlflow, scikit-learn, skops, ipywidgets)
costs 3-5 s of CPU each time. A kernel parent (`python -m nbops.kernel_parent <spec>`) imports
ipykernel and runs the spec's warm-up code once, then, for each request line on its stdin, forks
a child that becomes an ipykernel on the request's connection file, in the request's folder and
environment: ~0.15 s of CPU. A forked kernel is a new process with a fresh namespace; only its
loaded modules are shared with the parent. Its command line is the kernel parent's (a fork does
not exec), which names the spec file and so the parent's token: `is_kernel_process` tells a live
kernel from a reused PID by it.

Two owners use it: the runner (nbops.runner.forks: a run's steps, and each sweep
worker's steps) and the dashboard's server (nbops.serve.voila_forks: every page's kernel).

Nothing outlives its owner: the kernel parent ignores Ctrl-C (the owner gets it and stops what
it holds) and, when its stdin closes (the owner exited or died) or on SIGTERM, stops every kernel
it forked and exits; each kernel also exits when the kernel parent goes (ipykernel's parent
poller). Linux only (`forks_supported`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from nbops.products import write_json

# as ipykernel sets it for its kernels, before the kernel parent imports matplotlib
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def forks_supported() -> bool:
    """Linux only: macOS forks unsafely once some libraries are loaded, Windows cannot fork."""
    return sys.platform.startswith("linux")


def is_kernel_process(pid: int, token: str) -> bool:
    """The process is alive (not a zombie) and is the nbops process with this token (not a reused
    PID): an nbops program whose command line names the spec file with this token (a spare kernel,
    a kernel parent, or a kernel a kernel parent forked)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and "\0-m\0nbops." in cmdline and f".{token}.spec.json" in cmdline


def stop_kernel_process(pid: int, token: str, grace_s: float = 2.0) -> None:
    """SIGTERM the process with this PID and token, SIGKILL it if it is still there after grace_s."""
    if not is_kernel_process(pid, token):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # our own child in a long-lived process: reap it
        if not is_kernel_process(pid, token):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class KernelParentGone(RuntimeError):
    """The kernel parent exited (its log says why) or never started."""


class KernelParent:
    """The owner's side of one kernel parent: `start` it, `fork` kernels from it, `stop` it.
    `fork` may be called from several threads; it waits for the parent's imports the first time.
    Its files (`kernels.<token>.spec.json`, and `.log` when `log` is set) live in `folder`."""

    def __init__(self, folder: Path, codes: list[str], cwd: Path, log: bool = True):
        self.folder, self.codes, self.cwd, self.log = Path(folder), codes, Path(cwd), log
        self.token = uuid.uuid4().hex[:12]
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @property
    def log_path(self) -> Path:
        return self.folder / f"kernels.{self.token}.log"

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start the process (it imports in the background; the first `fork` waits for it). Its
        stderr, and its kernels', goes to `log_path`, or to this process's stderr."""
        self.folder.mkdir(parents=True, exist_ok=True)
        spec = self.folder / f"kernels.{self.token}.spec.json"
        write_json(spec, {"token": self.token, "codes": self.codes})
        with contextlib.ExitStack() as files:
            stderr = files.enter_context(open(self.log_path, "ab")) if self.log else None
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nbops.kernel_parent", str(spec)],
                cwd=self.cwd,
                # a copy made here, not the process's live environ: this can run beside threads
                # that import scikit-learn or mlflow, which set variables on import, and a vfork
                # child exec'ing with an environ another thread is growing fails (EFAULT)
                env=dict(os.environ if env is None else env),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def fork(self, connection_file: str, code: str, cwd: Path | str, env: dict[str, str]) -> int:
        """The PID of a kernel forked on `connection_file` (written by the caller), which runs
        `code` first; KernelParentGone when the parent is not running."""
        request = {"connection_file": str(connection_file), "code": code, "cwd": str(cwd), "env": env}
        with self._lock:
            proc = self.proc
            if proc is None or proc.poll() is not None:
                raise KernelParentGone(f"the kernel parent is not running ({self.where()})")
            try:
                proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
                reply = proc.stdout.readline()  # type: ignore[union-attr]  # first: once imported
                return int(json.loads(reply)["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                raise KernelParentGone(f"the kernel parent stopped ({self.where()})") from None

    def where(self) -> str:
        return f"see {self.log_path}" if self.log else "see the server's log"

    def stop(self, timeout: float = 10) -> None:
        """Close its stdin (it stops its kernels and exits), kill it after `timeout`; remove its files."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(OSError):
                proc.stdout.close()  # type: ignore[union-attr]
        for path in self.folder.glob(f"kernels.{self.token}.*"):
            path.unlink(missing_ok=True)


# ------------------------------------------------------------------ the kernel parent's process


def _stop_kernels(children: set[int], token: str, grace_s: float = 2.0) -> None:
    """SIGTERM every kernel still running, SIGKILL what is left after grace_s."""
    alive = [pid for pid in children if is_kernel_process(pid, token)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in alive:
        stop_kernel_process(pid, token, grace_s)


def kernel_environment(request_env: dict[str, str], set_on_import: dict[str, str]) -> dict[str, str]:
    """A forked kernel's environment: the request's, plus what the parent's imports set where the
    request does not set it (scikit-learn's KMP_* pair, say), as a kernel importing them would have."""
    return {**set_on_import, **request_env}


def _serve_kernel(request: dict, set_on_import: dict[str, str]) -> None:
    """In the forked child: become the kernel (a session of its own, as jupyter_client starts
    kernels), in the request's folder and environment; never returns."""
    try:
        parent = os.getppid()
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(request["cwd"])
        env = kernel_environment(request["env"], set_on_import)
        os.environ.clear()
        os.environ.update(env)
        os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1):  # the kernel parent's pipes are not the kernel's
            os.dup2(null, fd)
        from ipykernel.kernelapp import IPKernelApp

        argv = ["-f", request["connection_file"], f"--IPKernelApp.parent_handle={parent}"]
        IPKernelApp.launch_instance(argv=argv, exec_lines=[request["code"]] if request["code"] else [])
    finally:
        os._exit(0)


def serve(spec_path: Path) -> None:
    """The kernel parent: import, then fork one kernel per request line on stdin, replying with
    its PID (and saying so on stderr, the owner's log)."""
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    token, children = spec["token"], set()

    def reap(*_):
        with contextlib.suppress(ChildProcessError):
            while (pid := os.waitpid(-1, os.WNOHANG)[0]) > 0:
                children.discard(pid)

    def stop(*_):
        # no reap() while the set is read, no second stop() inside this one
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM})
        _stop_kernels(set(children), token)
        os._exit(0)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the owner's: it closes our stdin
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGCHLD, reap)
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
    if sys.path and sys.path[0] == "":
        del sys.path[0]  # as ipykernel_launcher does: the kernel's sys.path is a started kernel's
    before = dict(os.environ)
    import ipykernel.kernelapp  # noqa: F401  (what every kernel needs first)

    for code in spec["codes"]:
        exec(compile(code, "<warm-up>", "exec"), {})  # noqa: S102  (the owner's own import lines)
    set_on_import = {k: v for k, v in os.environ.items() if before.get(k) != v}
    # what the imports built stays out of the collector's sight: a kernel's collections would
    # otherwise write to every shared page they scan, copying it (the gc module's advice for fork)
    gc.freeze()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _serve_kernel(request, set_on_import)
        children.add(pid)
        print(json.dumps({"pid": pid}), flush=True)
        print(f"nbops: kernel {pid} forked for {request['connection_file']}", file=sys.stderr, flush=True)
    stop()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
