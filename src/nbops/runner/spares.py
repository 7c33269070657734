"""Kernels kept warm between runs: the edit-a-param-and-rerun loop skips kernel start-up.

A kernel started ahead of its step still spends seconds importing mlflow, scikit-learn and
skops before the step's first cell (most of a one-parameter rerun). So after a run, the runner
leaves one *spare* kernel per notebook step it executed: a fresh kernel that has run only that
step's warm-up imports (never a step), detached from the runner, in `build/.spares/` (one for
every params file: a warm-up does not depend on the params). The next run's step adopts it
instead of starting a kernel when everything the warm-up depends on is unchanged (the `key`:
warm-up code, package source, interpreter, installed packages, environment, folder); otherwise
the spare is stopped and a fresh kernel starts as before.

A spare owns four files, `<step>.<token>.{spare,conn.json,spec.json,log}`. It writes the
`.spare` record itself once it runs. A run claims a spare by renaming `.spare` to
`.spare.claimed-<run pid>`: a rename happens once, so two runs never share one kernel. An
unclaimed spare exits by itself after NBOPS_KEEP_WARM_S idle seconds (default 600; 0 turns
spares off; off by default when CI is set), and a claimed one exits when its run is gone.
Removing build/ (make clean) stops them all within a second.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from nbops.exceptions import NbopsError
from nbops.kernel_parent import is_kernel_process as is_spare_process
from nbops.kernel_parent import stop_kernel_process as stop_process
from nbops.products import params_hash, write_json

if TYPE_CHECKING:
    from jupyter_client.manager import AsyncKernelManager

KEEP_WARM_ENV = "NBOPS_KEEP_WARM_S"
DEFAULT_KEEP_WARM_S = 600.0
FOLDER = ".spares"
POLL_S = 0.5
# The variables that can change what a warm-up loaded or how those libraries behave: the
# interpreter's and the loader's, locale and time zone, the tracking settings and credentials,
# the numeric libraries' threads, proxies and certificates. Everything else a kernel inherits
# (make's command-line variables such as PARAMS or ARGS, the shell's, pytest's) does not count,
# so `make pipeline PARAMS=...` after `make pipeline` still adopts the kernels kept warm.
KERNEL_ENV_PREFIXES = (
    "PYTHON", "PATH", "LD_", "VIRTUAL_ENV", "CONDA", "HOME", "LANG", "LC_", "TZ", "TMPDIR", "XDG_",
    "MLFLOW_", "NBOPS_", "JUPYTER", "IPYTHON", "MPL", "OMP_", "OPENBLAS_", "MKL_", "NUMEXPR_",
    "CUDA", "SKLEARN_", "ARROW_", "AWS_", "AZURE_", "GOOGLE_", "DATABRICKS_",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
)  # fmt: skip
ENV_PART = "environment variable "


def kernel_env(env: dict[str, str]) -> dict[str, str]:
    """The part of an environment that counts for a spare's key."""
    return {k: v for k, v in env.items() if k.startswith(KERNEL_ENV_PREFIXES)}


def keep_warm_seconds(env=None) -> float:
    """How long a spare waits to be adopted: NBOPS_KEEP_WARM_S, else 0 under CI, else 600."""
    env = os.environ if env is None else env
    raw = env.get(KEEP_WARM_ENV)
    if raw is None or raw.strip() == "":
        return 0.0 if env.get("CI", "").lower() in ("1", "true", "yes") else DEFAULT_KEEP_WARM_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also refuses nan
        raise NbopsError(f"{KEEP_WARM_ENV}: expected idle seconds >= 0 (0 turns spares off), got {raw!r}")
    return seconds


def spare_key(step: str, code: str, cwd: Path, env: dict[str, str], package: str) -> dict[str, str]:
    """What a warm-up's result depends on, each part hashed: a spare is adopted only when every
    part is the same, and when one differs the runner can say which."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    try:  # an install or removal changes the folder
        installed = Path(sys.prefix, "lib", version, "site-packages").stat().st_mtime_ns
    except OSError:
        installed = None
    parts = {
        "step": step,
        "the notebook's imports": code,
        "the folder": str(cwd),
        "the package's source": package,
        "the interpreter": sys.executable,
        "the installed packages": installed,
    }
    parts.update({ENV_PART + name: value for name, value in sorted(kernel_env(env).items())})
    return {name: params_hash(value) for name, value in parts.items()}


def what_changed(old: object, new: dict) -> list[str]:
    """The parts that differ, by name (a variable set or unset on either side counts)."""
    if not isinstance(old, dict):
        return list(new)
    return [name for name in dict.fromkeys([*new, *old]) if old.get(name) != new.get(name)]


def folder_of(build: Path) -> Path:
    return build / FOLDER


# ------------------------------------------------------------------ runner side


def spawn(
    build: Path,
    step: str,
    code: str,
    cwd: Path,
    env: dict[str, str],
    key: dict[str, str],
    idle_s: float,
    nice: int = 0,
    after_pid: int | None = None,
) -> Path:
    """Start a detached spare kernel for `step` (stopping any unclaimed one it replaces);
    returns its spec file. Costs a fork: the kernel imports in the background, at `nice` (the
    priority its step ran at), and only once process `after_pid` (the run) has exited."""
    from jupyter_client.connect import write_connection_file

    folder = folder_of(build)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{step}.*.spare"):
        spare = claim_file(old)
        if spare is not None:
            spare.stop()
    token = uuid.uuid4().hex[:12]
    base = folder / f"{step}.{token}"
    conn = Path(f"{base}.conn.json")
    from nbops.runner.kernels import curve_keys

    keys = curve_keys()
    write_connection_file(
        str(conn),
        ip="127.0.0.1",
        key=uuid.uuid4().hex.encode(),
        kernel_name="python3",
        curve_publickey=keys.get("curve_publickey"),
        curve_secretkey=keys.get("curve_secretkey"),
    )
    spec = Path(f"{base}.spec.json")
    write_json(
        spec,
        {"step": step, "token": token, "key": key, "code": code, "idle_s": idle_s, "after_pid": after_pid},
    )
    child_env = {k: v for k, v in env.items() if k != "JPY_PARENT_PID"}  # no parent poller: outlive us
    with open(f"{base}.log", "ab") as log:
        import subprocess

        proc = subprocess.Popen(
            [sys.executable, "-m", "nbops.runner.spare_process", str(spec)],
            cwd=cwd,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is not for it
        )
    if nice:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, proc.pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))
    return spec


def spares_waiting(build: Path) -> bool:
    """Whether the last run left any spare kernel here (kept warm, not yet claimed)."""
    folder = folder_of(build)
    return folder.is_dir() and any(folder.glob("*.spare"))


def claim(build: Path, step: str, key: dict[str, str], nice: int = 0) -> SpareKernel | None:
    """Adopt a ready-or-warming spare for `step` whose key matches; stop the ones that don't."""
    folder = folder_of(build)
    if not folder.is_dir():
        return None
    for record in sorted(folder.glob(f"{step}.*.spare")):
        spare = claim_file(record, nice)
        if spare is None:
            continue
        changed = what_changed(spare.info.get("key"), key)
        if not changed and spare.alive():
            spare.start_waiting()
            return spare
        spare.stop()
        why = f"{' and '.join(changed)} changed since it started" if changed else "it is no longer running"
        print(f"! {step}: not using the kernel kept warm by the last run: {why}", flush=True)
    return None


def claim_file(record: Path, nice: int = 0) -> SpareKernel | None:
    claimed = record.with_name(f"{record.name}.claimed-{os.getpid()}")
    try:
        record.rename(claimed)
    except FileNotFoundError:  # it expired, or another run took it first
        return None
    try:
        info = json.loads(claimed.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    return SpareKernel(info, claimed, nice)


def stop_all(build: Path) -> int:
    """Stop every unclaimed spare of this build folder; returns how many."""
    folder = folder_of(build)
    stopped = 0
    for record in sorted(folder.glob("*.spare")) if folder.is_dir() else []:
        spare = claim_file(record)
        if spare is not None:
            spare.stop()
            stopped += 1
    return stopped


def load_connection_file(km, within_s: float = 10.0) -> None:
    """`km.load_connection_file()`, read again while the file is empty or half written: a kernel
    starting from a connection file rewrites it (not atomically) once it has bound its ports."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            km.load_connection_file()
            return
        except ValueError:  # json.JSONDecodeError: caught mid-rewrite
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class SpareKernel:
    """A claimed spare, with WarmKernel's interface (take, cancel, shutdown) for execute_step."""

    adopted = True
    kind = "a kernel kept warm"  # as the console names it

    def __init__(self, info: dict, claimed: Path, nice: int = 0):
        self.info, self.claimed = info, claimed
        self.pid, self.token = int(info.get("pid", 0)), str(info.get("token", ""))
        self.cancelled = threading.Event()
        self.km: AsyncKernelManager | None = None
        self._nice = nice
        self._thread: threading.Thread | None = None

    def alive(self) -> bool:
        return self.pid > 0 and is_spare_process(self.pid, self.token)

    def start_waiting(self) -> None:
        """In the background: wait until the kernel answers (its warm-up may still be running)."""
        import asyncio

        if self._nice:
            with contextlib.suppress(OSError):
                nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + self._nice)
                os.setpriority(os.PRIO_PROCESS, self.pid, nice)
        km = AdoptedKernelManager(self.pid, self.token, connection_file=self.info["connection_file"])
        load_connection_file(km)
        self.km = km
        self._thread = threading.Thread(target=lambda: asyncio.run(self._wait_ready(km)), daemon=True)
        self._thread.start()

    async def _wait_ready(self, km: AsyncKernelManager) -> None:
        client = km.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=120)
        except Exception as exc:  # the step starts its own kernel instead; say why
            print(f"! {self.kind} did not answer ({type(exc).__name__}: {exc})", flush=True)
            self.stop()
        finally:
            client.stop_channels()

    def take(self):
        """The kernel manager once the kernel answers; None if it died (papermill starts one)."""
        if self._thread is not None:
            self._thread.join()
        return self.km if self.km is not None and self.alive() else None

    def cancel(self) -> None:
        """The run was interrupted: not our child, so stop_children won't reach it: stop it here."""
        self.cancelled.set()
        self.stop()

    def shutdown(self) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self.stop()

    def stop(self) -> None:
        stop_process(self.pid, self.token)
        base = self.claimed.name.split(".spare")[0]
        for path in self.claimed.parent.glob(f"{base}.*"):
            path.unlink(missing_ok=True)


def _adopted_manager_class():
    from jupyter_client.manager import AsyncKernelManager

    class _Adopted(AsyncKernelManager):
        """A kernel manager for a kernel this process did not start: alive, interrupted and
        stopped by its PID (checked against its token), never restarted or started anew."""

        def __init__(self, pid: int, token: str, **kwargs):
            super().__init__(**kwargs)
            self._spare_pid, self._spare_token = pid, token

        @property
        def has_kernel(self) -> bool:
            return is_spare_process(self._spare_pid, self._spare_token)

        # the _async_ names are what clients and the manager call inside; the public names
        # are what nbclient calls: both must answer from the PID, there is no provisioner
        async def _async_is_alive(self) -> bool:
            return is_spare_process(self._spare_pid, self._spare_token)

        async def _async_interrupt_kernel(self) -> None:
            if is_spare_process(self._spare_pid, self._spare_token):
                os.kill(self._spare_pid, signal.SIGINT)

        async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            stop_process(self._spare_pid, self._spare_token)

        is_alive = _async_is_alive
        interrupt_kernel = _async_interrupt_kernel
        shutdown_kernel = _async_shutdown_kernel

        # KernelManager's is sync, AsyncKernelManager's async; nbclient calls it through ensure_async
        def cleanup_resources(self, restart: bool = False) -> None:  # type: ignore[override]
            pass  # SpareKernel.stop removes the spare's files

    return _Adopted


def AdoptedKernelManager(pid: int, token: str, **kwargs):  # noqa: N802  (a class, built lazily)
    return _adopted_manager_class()(pid, token, **kwargs)
