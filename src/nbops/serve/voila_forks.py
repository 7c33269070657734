"""Page kernels forked from a kernel parent (nbops.kernel_parent) that has imported what the
dashboard imports once.

Voila starts a kernel for every page view (the preheated one's replacement included), and each
new kernel spends ~5 s of CPU importing ipykernel, scikit-learn, skops, pandas and ipywidgets
before the page's one cell runs: on a 2-vCPU Space, the wait of every visitor after the first.
`ForkingKernelManager` (deploy/voila/voila.json sets it as the kernel manager of Voila's
`BoundedKernelManager`) gives each kernel a `ForkingProvisioner`, which asks the server's kernel
parent to fork the kernel on the connection file jupyter_client wrote, in the launch's folder and
environment, instead of starting `python -m ipykernel_launcher`. The kernel parent starts at the
first kernel (its imports: `preload`, by default the dashboard's) and lives as long as the server
(it exits when the server does, stopping what it forked).

A forked kernel is not the server's child: it is watched, signalled and stopped by its PID,
checked against the kernel parent's token (`ForkedProcess`); being a session leader, its process
group is its PID. A kernel command other than this interpreter's ipykernel (another kernelspec),
a platform that cannot fork, or a kernel parent that stopped start the kernel as a new process,
as jupyter_client does (the last says so in the log). `--ForkingKernelManager.fork_kernels=False`
turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from jupyter_server.services.kernels.kernelmanager import ServerKernelManager
from traitlets import Bool, Unicode

from nbops.kernel_parent import KernelParent, KernelParentGone, forks_supported, is_kernel_process

PRELOAD = "import nbops.serve.dashboard\nnbops.serve.dashboard.preload()"
IN_KERNEL = "import nbops.serve.dashboard\nnbops.serve.dashboard.start_kernel()"


class ForkedProcess:
    """What LocalProvisioner keeps of a kernel process (a Popen), for a kernel this server did not
    start: alive while a live process has its PID and the kernel parent's token. Its exit status
    is its parent's to read; `returncode` is 0 once it is gone."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int, token: str):
        self.pid, self.token = pid, token
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not is_kernel_process(self.pid, self.token):
            self.returncode = 0
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout or 0)
            time.sleep(0.05)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass
class Served:
    """A kernel parent of this server, what its imports were read from, its live kernels."""

    parent: KernelParent
    stamp: tuple
    kernels: list[ForkedProcess] = field(default_factory=list)

    def live_kernels(self) -> list[ForkedProcess]:
        self.kernels = [k for k in self.kernels if k.poll() is None]
        return self.kernels


_parents: dict[str, Served] = {}  # the server's kernel parent, by its warm-up code
_retired: list[Served] = []  # parents whose sources changed, kept while their kernels live
_parents_lock = threading.Lock()


def source_stamp(package: Path | None = None) -> tuple:
    """What a kernel parent's imports were read from: the nbops package's source files (an edit
    while `make dashboard` runs) and the installed packages' folder (an install or removal)."""
    import nbops

    root = Path(nbops.__file__).parent if package is None else package
    files = []
    for path in sorted(root.rglob("*.py")):
        with contextlib.suppress(OSError):  # removed while listed
            st = path.stat()
            files.append((str(path), st.st_mtime_ns, st.st_size))
    site = Path(
        sys.prefix, "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages"
    )
    try:
        installed = site.stat().st_mtime_ns
    except OSError:
        installed = None
    return (tuple(files), installed)


def kernel_parent(code: str, folder: Path, cwd: Path, log=None) -> Served:
    """The server's kernel parent for `code`: started now if there is none, it stopped, or the
    sources it imported changed (the old one then stops once its last kernel is gone)."""
    with _parents_lock:
        for old in list(_retired):
            if not old.live_kernels():
                old.parent.stop()
                _retired.remove(old)
        stamp = source_stamp()
        served = _parents.get(code)
        if served is not None and served.parent.alive() and served.stamp == stamp:
            return served
        if served is not None and served.parent.alive() and served.live_kernels():
            if log is not None:
                log.info("The package's sources changed: a new kernel parent imports them")
            _retired.append(served)  # its kernels' pages keep it; stopped when they are gone
        elif served is not None:
            served.parent.stop()
        served = _parents[code] = Served(KernelParent(folder, [code], cwd, log=False), stamp)
        served.parent.start()
        return served


def is_this_ipykernel(cmd: list[str], connection_file: str) -> bool:
    """`cmd` is `<this interpreter> -m ipykernel_launcher -f <connection_file>`, nothing more."""
    if len(cmd) != 5 or cmd[1:4] != ["-m", "ipykernel_launcher", "-f"] or cmd[4] != connection_file:
        return False
    exe = shutil.which(cmd[0]) or cmd[0]
    return os.path.realpath(exe) == os.path.realpath(sys.executable)


class ForkingProvisioner(LocalProvisioner):
    """LocalProvisioner whose kernels are forked from the server's kernel parent."""

    async def launch_kernel(self, cmd: list[str], **kwargs: Any):
        km = self.parent
        connection_file = getattr(km, "connection_file", "")
        if not (forks_supported() and connection_file and is_this_ipykernel(cmd, connection_file)):
            return await super().launch_kernel(cmd, **kwargs)
        cwd = Path(kwargs.get("cwd") or os.getcwd())
        env = dict(kwargs.get("env") or os.environ)
        code = getattr(km, "preload", PRELOAD)
        in_kernel = getattr(km, "in_kernel", IN_KERNEL)
        try:
            served = await asyncio.to_thread(
                kernel_parent, code, Path(connection_file).parent, Path.cwd(), self.log
            )
            pid = await asyncio.to_thread(served.parent.fork, connection_file, in_kernel, cwd, env)
        except (KernelParentGone, OSError) as exc:
            self.log.warning("Starting the kernel as a new process: %s", exc)
            return await super().launch_kernel(cmd, **kwargs)
        process = ForkedProcess(pid, served.parent.token)
        served.kernels.append(process)
        self.process = process  # type: ignore[assignment]  # Popen's interface
        self.pid = self.pgid = pid  # a session leader: its group is its PID (signalled by group)
        self.cwd = cwd
        return self.connection_info

    async def send_signal(self, signum: int) -> None:
        """As LocalProvisioner's (to the kernel's process group), but never to a forked kernel that
        is gone: the kernel parent reaps it at once, so its PID may already be another process's."""
        if isinstance(self.process, ForkedProcess) and self.process.poll() is not None:
            return
        await super().send_signal(signum)


class ForkingKernelManager(ServerKernelManager):
    """jupyter_server's kernel manager with `ForkingProvisioner` for its kernels."""

    fork_kernels = Bool(
        True,
        config=True,
        help="Fork each kernel from a kernel parent that has done the imports once (Linux); "
        "False: start every kernel as a new process.",
    )
    preload = Unicode(
        PRELOAD, config=True, help="Python code the kernel parent runs once, before it forks kernels."
    )
    in_kernel = Unicode(
        IN_KERNEL,
        config=True,
        help="Python code each forked kernel runs once it is a kernel: what the preloaded modules "
        "would have done on import in a running kernel (ipywidgets' comm targets).",
    )

    async def _async_pre_start_kernel(self, **kw):
        if self.provisioner is None and self.fork_kernels and forks_supported():
            self.provisioner = ForkingProvisioner(
                kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self
            )
        return await super()._async_pre_start_kernel(**kw)  # what start_kernel calls
