"""Temp projects laid out like the repo (as tests/conftest.py `make_project` does), and a
process-tree meter: wall time, peak RSS of the process and all its descendants (kernels
included), and the Jupyter kernels it started."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.processes import is_kernel_command, rss_mb

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
POLL_S = 0.05


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without a tracking URI or dashboard settings: the store lives in the project."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI" and not k.startswith("NBOPS_")}
    env.update(extra)
    return env


def make_project(path: Path, data_from: Path | None = None) -> Path:
    """notebooks/ and params/ from the repo; data/raw/ copied from `data_from` (pre-generated)."""
    for folder in ("notebooks", "params"):
        shutil.copytree(REPO / folder, path / folder)
    raw = path / "data" / "raw"
    if data_from is not None and (data_from / "data" / "raw").exists():
        shutil.copytree(data_from / "data" / "raw", raw)
    raw.mkdir(parents=True, exist_ok=True)
    return path


_INIT = """
import sys
from pathlib import Path
from nbops.ml import tracking
from nbops.ml.data import resolve_data_path
from nbops.params import load_params
root, params_file = Path(sys.argv[1]), Path(sys.argv[2])
params = load_params(params_file)
resolve_data_path(params, root)          # generate the synthetic table now, not while timed
tracking.configure_tracking(root)        # create the sqlite store once, serially
tracking.ensure_experiment(params.registry.experiment)
"""


def init_project(root: Path, params: str = "params/default.yaml") -> None:
    """Data generated and MLflow store initialised: the state `make pipeline` finds after setup."""
    init_projects([root], params)


def init_projects(roots: list[Path], params: str = "params/default.yaml") -> None:
    """`init_project` for several projects at once (separate stores: no shared sqlite file)."""
    procs = [
        (root, subprocess.Popen([PY, "-c", _INIT, str(root), str(root / params)], cwd=root, env=clean_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        for root in roots
    ]  # fmt: skip
    for root, proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"initialising {root} failed:\n{out.decode(errors='replace')[-3000:]}")


def write_params(root: Path, name: str, edit, base: str = "params/default.yaml") -> str:
    import yaml

    raw = yaml.safe_load((root / base).read_text())
    edit(raw)
    path = root / "params" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return f"params/{name}.yaml"


def package_hash() -> str:
    """The runner's cache input for the package's source: if it changes while the bench runs
    (someone editing src/nbops), every step reruns and noop/one-param figures are void."""
    out = subprocess.run(
        [PY, "-c", "from nbops.runner.codehash import package_hash; print(package_hash())"],
        env=clean_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


@dataclass
class Measure:
    seconds: float
    peak_rss_mb: float
    kernels: int
    returncode: int
    output: str = ""
    kernel_pids: set[int] = field(default_factory=set)


def _is_kernel(proc) -> bool:
    try:
        return is_kernel_command(proc.cmdline(), proc.parent().cmdline())
    except Exception:  # gone or not readable between listing and reading (parent() None)
        return False


def measure(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 1800) -> Measure:
    """Run `cmd`, polling its process tree every POLL_S for RSS and kernels.

    Kernels are counted as distinct kernel PIDs seen in the tree (`ipykernel_launcher`, or forked
    by a kernel parent: benchmarks.processes.is_kernel_command): a kernel lives
    for seconds (start-up alone is ~1 s), far longer than the poll interval."""
    import psutil

    out_path = cwd / f".bench-{time.monotonic_ns()}.log"
    with open(out_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env or clean_env(), stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        peak = 0.0
        kernels: set[int] = set()
        stop = threading.Event()

        def poll():
            nonlocal peak
            while not stop.is_set():
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    procs = []
                kernels.update(p.pid for p in procs if p.pid not in kernels and _is_kernel(p))
                peak = max(peak, rss_mb(procs))
                stop.wait(POLL_S)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        seconds = time.perf_counter() - t0
        stop.set()
        watcher.join()
    output = out_path.read_text(errors="replace")
    out_path.unlink()
    return Measure(seconds, peak, len(kernels), rc, output, kernels)


def checked(m: Measure, what: str) -> Measure:
    if m.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {m.returncode}):\n{m.output[-3000:]}")
    return m
