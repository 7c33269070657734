"""The runner: params -> validated table -> notebooks (papermill) -> reports (nbconvert).

    00_validate   in-process: read + validate the CSV, write build/00_validate/table.parquet
    01_eda        notebook  (needs 00_validate)              } run concurrently
    02_train      notebook  (needs 00_validate)              }
    03_evaluate   notebook  (needs 02_train)
    reports       in-process: HTML, index.html, summary.md, metrics.json

A step is skipped when the hash of its inputs (notebook source without outputs, the params it
declares, input data, upstream steps' keys, the package's own source) matches the stamp it
left after its last success. The stamp is written last and removed first, so an interrupted
step is never taken as done. Checking the cache imports neither pandas nor mlflow.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nbops.exceptions import NbopsError, StepError, print_problems
from nbops.products import params_hash, read_json, write_json

if TYPE_CHECKING:
    from nbops.params import Params

# Names a notebook may declare that the runner provides (not params keys).
RUNNER_PARAMETERS = {
    "table_path": "the validated table (parquet)",
    "products_dir": "this step's product folder",
    "train_dir": "the train step's product folder",
    "data_source": "the CSV actually read",
    "data_is_synthetic": "whether that CSV is the generated synthetic table",
    "data_hash": "sha256 of the CSV",
    "params_hash": "hash of the whole params file",
    "git_commit": "the project's commit",
    "parent_run_id": "MLflow run to nest this run under (sweeps), or None",
    "run_tags": "extra tags for the MLflow run (sweeps: the point's overrides)",
    "interactive": "False here; True (the notebooks' default) in a hand run, which the pipeline never reads",
    "register": "True here; a hand run registers its model only when the notebook sets it True",
}
# Provenance, not inputs: injected where declared but never part of a cache key.
PROVENANCE_PARAMETERS = ("git_commit", "params_hash", "parent_run_id", "run_tags")

# Params keys read by the in-process 00_validate step rather than by a notebook.
VALIDATE_PARAMETERS = {
    "data_path",
    "data_synthetic",
    "data_delimiter",
    "data_categories",
    "data_ranges",
    "data_classes",
    "data_max_mb",
}


@dataclass(frozen=True)
class Step:
    name: str
    needs: tuple[str, ...]
    tracked: bool  # talks to MLflow

    @property
    def notebook(self) -> str:
        return f"notebooks/{self.name}.ipynb"


STEPS = (
    Step("01_eda", ("00_validate",), tracked=False),
    Step("02_train", ("00_validate",), tracked=True),
    Step("03_evaluate", ("00_validate", "02_train"), tracked=True),
)
VALIDATE = "00_validate"


@dataclass
class RunResult:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failure: StepError | None = None
    not_run: list[str] = field(default_factory=list)
    evaluation: dict | None = None
    reports: Path | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def _say(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------ notebook inspection


def read_notebook_source(path: Path) -> dict:
    """The notebook JSON, for hashing and for finding its parameters cell (no nbformat import)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NbopsError(f"{path}: notebook not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise NbopsError(f"{path}: not a readable notebook (invalid JSON)") from None


def source_hash(nb: dict) -> str:
    """Hash of cell types and sources only: outputs, counts and metadata don't count."""
    cells = [
        (c.get("cell_type"), "".join(c.get("source", "")), sorted(c.get("metadata", {}).get("tags", [])))
        for c in nb.get("cells", [])
    ]
    return params_hash(cells)


def declared_parameters(nb: dict, path: Path) -> list[str]:
    """Names assigned in the one cell tagged `parameters` (parsed with ast, not executed)."""
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise NbopsError(f"{path}: needs exactly one cell tagged 'parameters', found {len(cells)}")
    try:
        tree = ast.parse("".join(cells[0].get("source", "")))
    except SyntaxError as exc:
        raise NbopsError(f"{path}: parameters cell line {exc.lineno}: {exc.msg}") from None
    names = []
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def package_hash() -> str:
    """Hash of the package's own source: a code change reruns every step."""
    digest = hashlib.sha256()
    pkg = Path(__file__).parent
    for file in sorted(pkg.rglob("*.py")):
        digest.update(file.relative_to(pkg).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------ the plan


@dataclass
class Plan:
    root: Path
    params_file: Path
    params: Params
    data_path: Path
    data_hash: str
    synthetic: bool
    keys: dict[str, str]
    injected: dict[str, dict]
    build: Path
    reports: Path
    git_commit: str = "unknown"  # provenance: HEAD, `-dirty` when tracked files differ

    def stamp_path(self, step: str) -> Path:
        return self.build / step / ".stamp.json"

    def is_current(self, step: str) -> bool:
        return self.stale_products(step) is None

    def stale_products(self, step: str) -> str | None:
        """None when `step` is done: its stamp has this plan's key and its products are the
        bytes it left; else why not, in words when a person would want to know."""
        try:
            stamp = read_json(self.stamp_path(step))
            if stamp["key"] != self.keys[step]:
                return "its inputs changed"
        except (OSError, ValueError, KeyError):
            return "not run yet"
        return products_changed(self.build, step, stamp, _tracking_uri_for_key(self.root))


def make_plan(
    params_file: Path,
    root: Path,
    build: Path | None = None,
    reports: Path | None = None,
    provenance: dict | None = None,
) -> Plan:
    """Validate params, locate data and compute every step's cache key (fast: no pandas)."""
    from nbops.data import file_hash, is_synthetic, resolve_data_path
    from nbops.params import load_params
    from nbops.tracking import git_commit

    source = str(params_file.relative_to(root) if params_file.is_relative_to(root) else params_file)
    params = load_params(params_file, source)
    synthetic = is_synthetic(params, root)
    data_path = resolve_data_path(params, root, source)
    data_hash = file_hash(data_path)
    pkg = package_hash()
    build = build or root / "build"
    flat = params.notebook_parameters()
    keys = {
        VALIDATE: params_hash([pkg, data_hash, params.data.model_dump(mode="json"), params.split.test_size])
    }
    injected = {}
    uri = _tracking_uri_for_key(root)
    whole = params_hash(params.model_dump(mode="json"))
    commit = (provenance or {}).get("git_commit") or git_commit(root)
    for step in STEPS:
        nb_path = root / step.notebook
        nb = read_notebook_source(nb_path)
        declared = declared_parameters(nb, nb_path)
        unknown = [n for n in declared if n not in flat and n not in RUNNER_PARAMETERS]
        if unknown:
            raise NbopsError(
                [
                    f"{step.notebook}: parameters cell declares {n!r}, which is neither "
                    f"a params key nor provided by the runner"
                    for n in unknown
                ]
            )
        runtime = {
            "table_path": str(build / VALIDATE / "table.parquet"),
            "products_dir": str(build / step.name),
            "train_dir": str(build / "02_train"),
            "data_source": str(data_path.relative_to(root) if data_path.is_relative_to(root) else data_path),
            "data_is_synthetic": synthetic,
            "data_hash": data_hash,
            "params_hash": whole,
            "git_commit": commit,
            "parent_run_id": None,
            "run_tags": {},
            "interactive": False,
            "register": True,
            **(provenance or {}),
        }
        values = {n: flat[n] for n in declared if n in flat}
        values.update({n: runtime[n] for n in declared if n in runtime})
        injected[step.name] = values
        # provenance tags, not inputs: they must not force a rerun
        keyed = {k: v for k, v in values.items() if k not in PROVENANCE_PARAMETERS}
        keys[step.name] = params_hash(
            [source_hash(nb), keyed, pkg, [keys[n] for n in step.needs], uri if step.tracked else None]
        )
    return Plan(
        root,
        params_file,
        params,
        data_path,
        data_hash,
        synthetic,
        keys,
        injected,
        build,
        reports or root / "reports",
        commit,
    )


# ------------------------------------------------------------------ stamps: a step's key and products
# A step is done when its stamp holds the plan's key *and* its products are still the bytes it
# produced: an edited or deleted product (a notebook run by hand, a person) reruns it and what
# follows. Products that name a run or a model version must also be in the store.


def product_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file a step left in its folder (its stamp aside)."""
    hashes = {}
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.name != ".stamp.json" and not file.name.endswith(".tmp"):
            digest = hashlib.sha256()
            with open(file, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    digest.update(block)
            hashes[file.relative_to(folder).as_posix()] = digest.hexdigest()
    return hashes


def write_stamp(plan: Plan, step: str) -> None:
    """Written last, after every product: the step is done."""
    products = product_hashes(plan.build / step)
    write_json(plan.stamp_path(step), {"key": plan.keys[step], "finished": time.time(), "products": products})


def products_changed(build: Path, step: str, stamp: dict, uri: str) -> str | None:
    """Why the products of `step` are not the ones its stamp recorded (None when they are)."""
    recorded = stamp.get("products")
    if recorded is None:
        return "its stamp records no products"
    now = product_hashes(build / step)
    shown = build.name + "/" + step
    for name, digest in recorded.items():
        if name not in now:
            return f"{shown}/{name} is missing"
        if now[name] != digest:
            return f"{shown}/{name} changed since the run that made it"
    for name in now.keys() - recorded.keys():
        return f"{shown}/{name} was not made by the run that stamped it"
    return _missing_from_store(build / step, shown, uri)


def _missing_from_store(folder: Path, shown: str, uri: str) -> str | None:
    """A product naming a run or version the store does not hold (a store made anew)."""
    from nbops import store_probe

    for name, keys in (("model.json", ("run_id", "version")), ("metrics.json", None)):
        try:
            product = read_json(folder / name)
        except (OSError, ValueError):
            continue
        info = product if keys else product.get("challenger", {})
        model = product.get("model_name")
        run_id, version = info.get("run_id"), info.get("version")
        if run_id and store_probe.has_run(uri, run_id) is False:
            return f"{shown}/{name} names run {run_id}, which the tracking store does not have"
        if model and version and store_probe.has_version(uri, model, version) is False:
            return f"{shown}/{name} names {model} v{version}, which the tracking store does not have"
    return None


def _tracking_uri_for_key(root: Path) -> str:
    import os

    from nbops.tracking import default_tracking_uri

    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)


# ------------------------------------------------------------------ steps


def run_validate(plan: Plan) -> None:
    """Read and validate the CSV once, in-process, and hand the table on as parquet."""
    from nbops.data import check_splittable, read_table, validate_table

    params = plan.params
    shown = (
        plan.data_path.relative_to(plan.root) if plan.data_path.is_relative_to(plan.root) else plan.data_path
    )
    df = read_table(plan.data_path, params.data, shown)
    df = validate_table(df, params.data, shown)
    check_splittable(df, params.data, params.split.test_size, shown)
    out = plan.build / VALIDATE
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "table.parquet.tmp"
    df.to_parquet(tmp)
    tmp.replace(out / "table.parquet")


def preflight(plan: Plan, to_run: list[str]) -> None:
    """Checks that need heavier imports, only when a step will actually run."""
    if "02_train" in to_run:
        from nbops.models import make_estimator

        source = str(
            plan.params_file.relative_to(plan.root)
            if plan.params_file.is_relative_to(plan.root)
            else plan.params_file
        )
        make_estimator(plan.params.model.name, plan.params.model.params, source)
        from nbops.models import size_warnings

        for line in size_warnings(plan.params.model.params, source, plan.params.run.timeout_s):
            print(f"warning: {line}", file=sys.stderr, flush=True)


class Progress:
    """Which cell each running step is in; a ticker prints it for long steps."""

    def __init__(self, every_s: float = 10.0):
        self.every_s = every_s
        self.cells: dict[str, tuple[int, int, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_cell(self, step: str, index: int, total: int) -> None:
        self.cells[step] = (index, total, time.perf_counter())

    def current_cell(self, step: str) -> int | None:
        """1-based position of the cell running last in `step` (None before the first)."""
        entry = self.cells.get(step)
        return entry[0] + 1 if entry else None

    def lines(self, now: float | None = None) -> list[str]:
        """One line per step whose current cell has run for at least the interval."""
        now = time.perf_counter() if now is None else now
        return [
            f"… {step:<12}  cell {index + 1}/{total} ({now - since:.0f}s in it)"
            for step, (index, total, since) in list(self.cells.items())
            if now - since >= self.every_s
        ]

    def __enter__(self):
        def tick():
            while not self._stop.wait(self.every_s):
                for line in self.lines():
                    _say(line)

        self._thread = threading.Thread(target=tick, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def done(self, step: str) -> None:
        self.cells.pop(step, None)


def warmup_code(nb: dict) -> str:
    """The notebook's top-level import statements (parsed, not executed here), then the heavy
    libraries its nbops modules use lazily (nbops.preload): run silently in a kernel started
    ahead of its step, so the step finds its libraries already loaded."""
    lines, package_modules = [], []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code" or "parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        try:
            tree = ast.parse("".join(cell.get("source", "")))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module == "nbops":
                package_modules += [f"nbops.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nbops."):
                package_modules.append(node.module)
            elif isinstance(node, ast.Import):
                package_modules += [a.name for a in node.names if a.name.startswith("nbops.")]
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                lines.append(ast.unparse(node))
    if package_modules:
        names = list(dict.fromkeys(package_modules))
        lines += ["import nbops.preload", f"nbops.preload.preload({names!r})"]
    return "\n".join(dict.fromkeys(lines))


# A step that nothing waits for and that waits for nothing else in the run (EDA beside train ->
# evaluate) runs at a lower CPU priority: on a 2-core machine its kernel otherwise takes half the
# CPU from the chain that decides when the run ends. It still gets every idle cycle.
SIDE_BRANCH_NICE = 10


def is_side_branch(step: Step, steps: list[Step]) -> bool:
    names = {s.name for s in steps}
    has_downstream = any(step.name in s.needs for s in steps)
    has_upstream = any(n in names for n in step.needs)
    return len(steps) > 1 and not has_downstream and not has_upstream


class WarmKernel:
    """A kernel started (and its imports loaded) in the background while earlier steps run;
    papermill then executes the step in it (nbclient reuses a kernel manager it is given).

    An *async* kernel manager, as nbclient's own: with a blocking one nbclient's reads block
    its event loop, and the cell timeout never fires.
    """

    def __init__(self, code: str, cwd: Path, nice: int = 0):
        import asyncio

        from nbops.kernels import EncryptedKernelManager

        self.km = EncryptedKernelManager(kernel_name="python3")
        self._code, self._cwd, self._nice = code, cwd, nice
        self.cancelled = threading.Event()  # the run was interrupted: its step must start nothing
        self._thread = threading.Thread(target=lambda: asyncio.run(self._start()), daemon=True)
        self._thread.start()

    async def _start(self) -> None:
        try:
            await self.km.start_kernel(cwd=str(self._cwd))
            if self._nice:
                with contextlib.suppress(OSError, AttributeError, TypeError):
                    os.setpriority(
                        os.PRIO_PROCESS,
                        self.km.provisioner.pid,
                        min(19, os.getpriority(os.PRIO_PROCESS, 0) + self._nice),
                    )
            client = self.km.client()
            client.start_channels()
            try:
                await client.wait_for_ready(timeout=120)
                if self._code:
                    await self._while_alive(
                        client.execute_interactive(self._code, silent=True, store_history=False, timeout=300)
                    )
            finally:
                client.stop_channels()
        except Exception as exc:  # the step starts its own kernel instead; say why
            _say(f"! could not warm a kernel ahead of time ({type(exc).__name__}: {exc})")

    async def _while_alive(self, coro, poll_s: float = 0.5) -> None:
        """Await `coro` while the kernel lives: a kernel stopped mid-warm-up (an interrupted
        run stops its children) would leave execute_interactive waiting for its timeout."""
        import asyncio

        task = asyncio.ensure_future(coro)
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                task.result()
                return
            if not await self.km.is_alive():
                task.cancel()
                raise RuntimeError("the kernel stopped while warming up")

    def cancel(self) -> None:
        """Called when the run is interrupted, before its children are stopped."""
        self.cancelled.set()

    def take(self):
        """The kernel manager, once warm; None if warming failed (papermill starts one)."""
        from jupyter_core.utils import run_sync

        self._thread.join()
        return self.km if self.km.has_kernel and run_sync(self.km.is_alive)() else None

    def shutdown(self) -> None:
        from jupyter_core.utils import run_sync

        self._thread.join()
        if self.km.has_kernel:
            with contextlib.suppress(Exception):
                run_sync(self.km.shutdown_kernel)(now=True)


def _register_engine() -> str:
    """papermill's nbclient engine, plus a hook that reports each cell as it starts."""
    from papermill.engines import NBClientEngine, papermill_engines

    class TrackedEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, on_cell=None, **kwargs):
            if on_cell is not None:
                start = nb_man.cell_start

                def cell_start(cell, cell_index=None, **kw):
                    on_cell(cell_index, len(nb_man.nb.cells))
                    return start(cell, cell_index, **kw)

                nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register("nbops", TrackedEngine)
    return "nbops"


def execute_step(
    plan: Plan, step: Step, progress: Progress | None = None, warm: WarmKernel | None = None
) -> None:
    """Run one notebook with papermill; raise StepError naming the failing cell.

    Success is papermill returning; any exception is a failure, whatever the written notebook's
    metadata says (after a timeout or a dead kernel papermill can mark every cell completed).
    """
    from nbops.preload import skip_unused_imports

    skip_unused_imports()
    import papermill
    from papermill.exceptions import PapermillExecutionError

    if step.name == "03_evaluate":
        # the runner needs mlflow after this step (move champion, attach the reports): about
        # 2 s of CPU, spent while the kernel works, in a thread at the side branch's priority
        _import_in_background("mlflow", nice=SIDE_BRANCH_NICE)

    progress = progress or Progress()
    out_dir = plan.build / step.name
    plan.stamp_path(step.name).unlink(missing_ok=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    parameters = dict(plan.injected[step.name])
    attempt = None
    if "run_tags" in parameters:  # lets the runner find and close this step's MLflow runs
        attempt = uuid.uuid4().hex
        parameters["run_tags"] = {**parameters["run_tags"], "attempt": attempt}
    engine_kwargs = {}
    km = warm.take() if warm else None
    if warm and warm.cancelled.is_set():  # interrupted while this step waited for its kernel
        warm.shutdown()
        raise StepError(step.name, None, "KeyboardInterrupt", "the run was interrupted")
    if km is None:  # warming failed (it said why): papermill starts this one
        from nbops.kernels import EncryptedKernelManager

        km = EncryptedKernelManager(kernel_name="python3")
    engine_kwargs["km"] = km
    try:
        papermill.execute_notebook(
            str(plan.root / step.notebook),
            str(out_dir / f"{step.name}.ipynb"),
            parameters=parameters,
            engine_name=_register_engine(),
            on_cell=lambda index, total: progress.on_cell(step.name, index, total),
            kernel_name="python3",
            # no cwd=: papermill would chdir the whole runner process (every thread); kernels
            # start in notebooks/ (WarmKernel) and notebooks get absolute paths anyway
            progress_bar=False,
            execution_timeout=plan.params.run.cell_timeout_s,
            **engine_kwargs,
        )
    except PapermillExecutionError as exc:
        _close_runs(attempt)
        raise StepError(step.name, exc.cell_index + 1, exc.ename, exc.evalue) from None
    except BaseException as exc:  # timeout, dead kernel, interrupt: papermill raises others
        _close_runs(attempt)
        if isinstance(exc, KeyboardInterrupt):
            raise
        ename = type(exc).__name__
        evalue = str(exc) or ename
        if ename == "CellTimeoutError":
            evalue = f"cell exceeded run.cell_timeout_s={plan.params.run.cell_timeout_s}"
        elif ename == "DeadKernelError":
            evalue = "the kernel died"
        raise StepError(step.name, progress.current_cell(step.name), ename, evalue) from None
    finally:
        progress.done(step.name)
        if warm:
            warm.shutdown()
    write_stamp(plan, step.name)


def _close_runs(attempt: str | None) -> None:
    """Mark FAILED any MLflow run this attempt left RUNNING (a kernel that died mid-run)."""
    if attempt is None:
        return
    from nbops import tracking

    try:
        tracking.fail_runs_tagged("attempt", attempt)
    except Exception as exc:  # the store itself may be what failed: say so, keep the step's error
        _say(f"! could not close this step's MLflow runs ({type(exc).__name__}: {exc})")


def run_pipeline(
    params_file: str | Path,
    root: str | Path = ".",
    force: bool = False,
    only: list[str] | None = None,
    jobs: int = 2,
    build: str | Path | None = None,
    reports: str | Path | None = None,
    provenance: dict | None = None,
) -> RunResult:
    """Run (or skip) every step; render reports even when a step failed.

    `build`/`reports` default to <root>/build and <root>/reports (sweeps give each point its
    own); `provenance` overrides runner parameters that are not cache inputs
    (`parent_run_id`, `run_tags`)."""
    t0 = time.perf_counter()
    check_step_names(only)
    user_env = dict(os.environ)  # before any library this process imports sets its own
    root = Path(root).resolve()
    params_file = Path(params_file)
    params_file = params_file if params_file.is_absolute() else (root / params_file)
    build = Path(build).resolve() if build else root / "build"
    reports = Path(reports).resolve() if reports else root / "reports"
    # (a first run, or a bad params file, must not even create build/: only look when a record is there)
    if not force and not only and provenance is None and (build / LAST_RUN).is_file():
        with build_lock(build):
            unchanged = unchanged_since_last_run(params_file, root, build, reports)
        if unchanged is not None:
            _say(f"done in {time.perf_counter() - t0:.1f}s")
            return unchanged
    from nbops.spares import keep_warm_seconds

    plan = make_plan(params_file, root, build, reports, provenance)
    # sweeps (provenance) give each point a build folder of its own: no spares there
    keep_warm_s = keep_warm_seconds() if provenance is None else 0
    if provenance is None and not keep_warm_s:
        from nbops.spares import stop_all

        stop_all(plan.build)  # turned off: no kernel of an earlier run stays behind
    with build_lock(plan.build):
        result = _run(plan, root, force, only, jobs, t0, keep_warm_s, user_env)
        if result.ok and not only and provenance is None:  # every step is current now
            remember_run(plan)
        return result


# ------------------------------------------------------------------ the no-op fast path
# A rerun with nothing changed must cost next to nothing. Validating params imports pydantic
# and builds the schema (most of a no-op's 0.3 s), so a full run that left every step current
# records what its plan was made from, as bytes; a later run that finds the same bytes, the
# same stamps and its reports in place skips the plan: it parses nothing.

LAST_RUN = ".last-run.json"


def inputs_fingerprint(params_file: Path, root: Path, build: Path, reports: Path, record: dict) -> str:
    """Everything make_plan reads, unparsed: the params file, the notebooks, the package's
    source, the data file and which file that is, the tracking store, the folders."""
    from nbops.data import file_hash

    return params_hash(
        [
            file_hash(params_file),
            [file_hash(root / s.notebook) for s in STEPS],
            package_hash(),
            file_hash(Path(record["data_path"])),
            Path(record["real_data_path"]).is_file(),
            _tracking_uri_for_key(root),
            [str(root), str(build), str(reports)],
        ]
    )


def remember_run(plan: Plan) -> None:
    record = {
        "keys": plan.keys,
        "data_path": str(plan.data_path),
        "real_data_path": str(plan.root / plan.params.data.path),
        "synthetic": plan.synthetic,
        "sizes": _sizes(plan.params_file, plan.data_path),
    }
    record["fingerprint"] = inputs_fingerprint(plan.params_file, plan.root, plan.build, plan.reports, record)
    write_json(plan.build / LAST_RUN, record)


def unchanged_since_last_run(params_file: Path, root: Path, build: Path, reports: Path) -> RunResult | None:
    """The no-op result when nothing make_plan reads has changed since the last full run and
    every step's stamp is still the one it left; None otherwise (then the full plan decides)."""
    try:
        record = read_json(build / LAST_RUN)
        # sizes before hashes: a params file that became a FIFO, /dev/zero or 100 GB is never
        # read here (make_plan then says what it is)
        if record["sizes"] != _sizes(params_file, Path(record["data_path"])):
            return None
        if record["fingerprint"] != inputs_fingerprint(params_file, root, build, reports, record):
            return None
        stamps = {step: read_json(build / step / ".stamp.json") for step in record["keys"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if {step: stamp.get("key") for step, stamp in stamps.items()} != record["keys"]:
        return None
    uri = _tracking_uri_for_key(root)
    if any(products_changed(build, step, stamp, uri) for step, stamp in stamps.items()):
        return None  # the full plan says which product and reruns from there
    if not (reports / "index.html").is_file():
        return None
    real = Path(record["real_data_path"])
    _say_data(Path(record["data_path"]), root, real.relative_to(root), record["synthetic"])
    result = RunResult(reports=reports)
    for step in record["keys"]:
        _say(f"- {step:<12}  skipped (unchanged)")
        result.skipped.append(step)
    metrics = build / "03_evaluate" / "metrics.json"
    if metrics.exists():
        result.evaluation = read_json(metrics)
    return result


def _sizes(*files: Path) -> list[int]:
    """Byte sizes of regular files; OSError for anything else (a FIFO, a device: never hashed)."""
    import stat

    sizes = []
    for file in files:
        info = os.stat(file)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{file}: not a regular file")
        sizes.append(info.st_size)
    return sizes


def _say_data(data_path: Path, root: Path, real_path, synthetic: bool) -> None:
    """Which CSV this run reads; the synthetic table says where the real one goes."""
    if synthetic:
        _say(f"data: {data_path.relative_to(root)} (SYNTHETIC: put the real CSV at {real_path} to use it)")
    else:
        _say(f"data: {data_path}")


@contextmanager
def build_lock(build: Path):
    """One run at a time per build folder: a second run waits, saying for whom."""
    build.mkdir(parents=True, exist_ok=True)
    with open(build / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            _say(f"waiting: another nbops run (pid {holder}) is using {build} …")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(
    plan: Plan,
    root: Path,
    force: bool,
    only,
    jobs: int,
    t0: float,
    keep_warm_s: float = 0.0,
    user_env: dict[str, str] | None = None,
) -> RunResult:
    result = RunResult()
    wanted = [s for s in STEPS if not only or s.name in only]
    if only:
        # an explicitly asked step still needs its upstream products
        names = set(only)
        for step in reversed(STEPS):
            if step.name in names:
                names.update(n for n in step.needs if n != VALIDATE)
        wanted = [s for s in STEPS if s.name in names]
    _say_data(plan.data_path, root, plan.params.data.path, plan.synthetic)
    with RunBudget(plan.params.run.timeout_s, t0) as budget:
        kernels = _run_steps(plan, wanted, result, force, jobs, keep_warm_s, user_env, budget)

    from nbops.report import render_reports

    result.reports = render_reports(plan, result)
    if "02_train" in result.ran:
        attach_reports(plan, result)
    eval_path = plan.build / "03_evaluate" / "metrics.json"
    if result.ok and eval_path.exists():
        result.evaluation = read_json(eval_path)
    if kernels is not None and keep_warm_s:
        kernels.keep_warm_for_next_run(result)
    _say(f"done in {time.perf_counter() - t0:.1f}s")
    return result


def _run_steps(plan, wanted, result, force, jobs, keep_warm_s, user_env, budget) -> Kernels | None:
    """Validate, then run the steps that are not current, within the run's budget; returns the
    steps' kernels (None when no step ran)."""
    root = plan.root
    # validate
    why = None if force else plan.stale_products(VALIDATE)  # hashed once: the table can be large
    if force or why or not (plan.build / VALIDATE / "table.parquet").exists():
        t = time.perf_counter()
        _say_stale(VALIDATE, why)
        plan.stamp_path(VALIDATE).unlink(missing_ok=True)
        run_validate(plan)
        write_stamp(plan, VALIDATE)
        _say(f"✓ {VALIDATE:<12} {time.perf_counter() - t:5.1f}s  table validated")
        result.ran.append(VALIDATE)
    else:
        _say(f"- {VALIDATE:<12}  skipped (unchanged)")
        result.skipped.append(VALIDATE)

    stale = {s.name: None if force else plan.stale_products(s.name) for s in wanted}
    to_run = [s.name for s in wanted if force or stale[s.name]]
    for name in to_run:
        _say_stale(name, stale[name])
    # anything downstream of a step that runs must run too
    for step in wanted:
        if any(n in to_run for n in step.needs) and step.name not in to_run:
            to_run.append(step.name)
    for step in wanted:
        if step.name not in to_run:
            _say(f"- {step.name:<12}  skipped (unchanged)")
            result.skipped.append(step.name)

    if to_run and budget.expired.is_set():  # spent while validating: no kernel starts
        result.failure = StepError(VALIDATE, None, "RunTimeoutError", budget.reason)
        for name in to_run:
            _say(f"✗ {name:<12}  not run ({budget.reason})")
            result.not_run.append(name)
        return None
    kernels = None
    if to_run:
        preflight(plan, to_run)  # params and data are valid: kernels may start now
        steps = [s for s in wanted if s.name in to_run]
        if any(s.tracked for s in steps):
            # before any kernel starts, so every kernel inherits the store's URI. The store itself
            # is created by the first step that writes to it, under tracking.store_lock
            from nbops import tracking

            tracking.configure_tracking(root)
        kernels = Kernels(plan, steps, keep_warm_s, user_env or dict(os.environ))
        budget.watch(kernels.warm)
        try:
            _execute_all(plan, steps, result, jobs, kernels.warm, budget)
            settle_promotion(plan, result)
        except BaseException:
            withdraw_pending_promotion(plan)  # interrupted before the alias could move
            raise
        finally:
            kernels.shutdown()  # steps that never ran (upstream failed, store down)
    return kernels


EVALUATION = Path("03_evaluate") / "metrics.json"


def _import_in_background(*modules: str, nice: int = 0) -> threading.Thread:
    """Import `modules` in a daemon thread at `nice` (Linux niceness is per thread); a later
    import of the same module waits for it instead of doing the work again."""
    import importlib

    def work() -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, os.nice(0) + nice))
        for name in modules:
            with contextlib.suppress(Exception):  # the real import, later, reports any error
                importlib.import_module(name)

    thread = threading.Thread(target=work, daemon=True, name="nbops-preimport")
    thread.start()
    return thread


def settle_promotion(plan: Plan, result: RunResult) -> None:
    """Move `champion` as this run's evaluate step decided, now that every step has finished:
    only when all of them succeeded. A failed run moves no alias, and its evaluate step runs
    again next time, so the decision is made anew when the run can succeed."""
    path = plan.build / EVALUATION
    if "03_evaluate" not in result.ran or not path.is_file():
        return
    record = read_json(path)
    if record.get("promotion") != "pending":
        return
    from nbops import tracking
    from nbops.gate import Decision

    decision = Decision(**record["decision"])
    if not result.ok:
        decision.promote = False
        decision.verdict = "not promoted (run failed)"
        decision.reasons.append(f"{result.failure.step} failed: a failed run moves no alias")
        plan.stamp_path("03_evaluate").unlink(missing_ok=True)
    try:
        decision = tracking.apply_decision(record["model_name"], decision)
    except Exception as exc:  # the store went away after the evaluation: nothing moved
        decision.promote = False
        decision.verdict = "not promoted (run failed)"
        decision.reasons.append(f"could not move champion: {type(exc).__name__}: {exc}")
        plan.stamp_path("03_evaluate").unlink(missing_ok=True)
        result.failure = result.failure or StepError("03_evaluate", None, type(exc).__name__, str(exc))
    record["decision"] = decision.to_dict()
    record["promotion"] = "applied" if decision.promote else "withheld"
    record["champion_after"] = (
        decision.challenger_version if decision.promote else record["champion"]["version"]
    )
    write_json(path, record)
    if plan.stamp_path("03_evaluate").is_file():  # the settled record is the step's product now
        write_stamp(plan, "03_evaluate")


def _say_stale(step: str, why: str | None) -> None:
    """Say why a step whose inputs did not change runs again (a product edited or gone)."""
    if why and why not in ("its inputs changed", "not run yet"):
        _say(f"↻ {step:<12}  runs again: {why}")


def withdraw_pending_promotion(plan: Plan) -> None:
    """An interrupted run leaves no decided-but-unapplied promotion behind a current stamp."""
    with contextlib.suppress(OSError, ValueError):
        if read_json(plan.build / EVALUATION).get("promotion") == "pending":
            plan.stamp_path("03_evaluate").unlink(missing_ok=True)


def attach_reports(plan: Plan, result: RunResult) -> None:
    """The executed notebooks and HTML reports of this run, on its training run (`reports/`)."""
    try:
        run_id = read_json(plan.build / "02_train" / "model.json")["run_id"]
    except (OSError, ValueError, KeyError):
        return  # training failed before it registered anything
    steps = [*result.ran, *([result.failure.step] if result.failure else [])]
    files = [plan.build / s / f"{s}.ipynb" for s in steps] + [plan.reports / f"{s}.html" for s in steps]
    files += [plan.reports / "index.html", plan.reports / "summary.md"]
    from nbops import tracking

    try:
        tracking.log_reports(run_id, [f for f in files if f.is_file()])
    except Exception as exc:  # the run itself succeeded or failed on its own terms: say, go on
        _say(f"! could not attach the reports to run {run_id} ({type(exc).__name__}: {exc})")


class Kernels:
    """Each step's kernel, started ahead of the step: a spare kept warm by the last run when one
    matches (nbops.spares), else a WarmKernel started now. After the run, `keep_warm_for_next_run`
    leaves a spare for each step that executed, for the next edit-and-rerun."""

    def __init__(self, plan: Plan, steps: list[Step], keep_warm_s: float, user_env: dict[str, str]):
        from nbops import spares

        self.plan, self.keep_warm_s = plan, keep_warm_s
        self.cwd = plan.root / "notebooks"
        self.env = dict(os.environ)  # what kernels inherit (the tracking URI is exported by now)
        # the key: the user's environment and the tracking settings, not the variables that
        # libraries imported by this process set for themselves (pandera, scikit-learn do)
        keyed_env = {**user_env, **{k: v for k, v in self.env.items() if k.startswith("MLFLOW_")}}
        package = package_hash()
        self.code, self.keys, self.nice, self.warm = {}, {}, {}, {}
        for s in steps:
            self.code[s.name] = warmup_code(read_notebook_source(plan.root / s.notebook))
            self.keys[s.name] = spares.spare_key(s.name, self.code[s.name], self.cwd, keyed_env, package)
            nice = self.nice[s.name] = SIDE_BRANCH_NICE if is_side_branch(s, steps) else 0
            kernel = spares.claim(plan.build, s.name, self.keys[s.name], nice) if keep_warm_s else None
            self.warm[s.name] = kernel or WarmKernel(self.code[s.name], self.cwd, nice=nice)

    def shutdown(self) -> None:
        for kernel in self.warm.values():
            kernel.shutdown()

    def keep_warm_for_next_run(self, result: RunResult) -> None:
        from nbops import spares

        failed = result.failure.step if result.failure else None
        executed = [name for name in self.warm if name in result.ran or name == failed]
        for name in executed:
            spares.spawn(
                self.plan.build,
                name,
                self.code[name],
                self.cwd,
                self.env,
                self.keys[name],
                self.keep_warm_s,
                nice=self.nice[name],
                after_pid=os.getpid(),
            )
        if executed:
            _say(
                f"kept {len(executed)} kernel(s) warm for the next run ({', '.join(executed)}; idle "
                f"{self.keep_warm_s:.0f}s, {spares.KEEP_WARM_ENV}=0 turns this off)"
            )


class RunBudget:
    """`run.timeout_s`: the wall-clock budget of the whole run, counted from its start. Once it
    is spent, the run's kernels are stopped as an interrupt stops them (`stop_children`, until
    the run is over: a step that was starting its kernel is stopped too); the steps they ran fail
    with `reason`, no step starts after, and the run ends with its failed-run report. In-process
    work (reading the CSV) is not interrupted: it is bounded by `data.max_mb`."""

    def __init__(self, seconds: float, started: float):
        self.seconds, self.started = seconds, started
        self.reason = f"run exceeded run.timeout_s={seconds}"
        self.expired = threading.Event()
        self._over = threading.Event()
        self._warm: dict = {}
        self._timer: threading.Timer | None = None

    def watch(self, warm: dict) -> None:
        """The run's warm kernels: cancelled when the budget is spent (a step waiting for one
        must not start a kernel of its own)."""
        self._warm = warm
        if self.expired.is_set():
            self._cancel()

    def _cancel(self) -> None:
        for kernel in list(self._warm.values()):
            kernel.cancel()

    def _expire(self) -> None:
        if self._over.is_set():
            return
        self.expired.set()
        _say(f"! {self.reason}: stopping kernels")
        self._cancel()
        while not self._over.is_set():
            stop_children(grace_s=2.0)
            self._over.wait(1.0)

    def __enter__(self) -> RunBudget:
        left = max(0.0, self.seconds - (time.perf_counter() - self.started))
        self._timer = threading.Timer(left, self._expire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._over.set()
        if self._timer is not None:
            self._timer.cancel()


def _execute_all(plan: Plan, steps: list[Step], result: RunResult, jobs: int, warm, budget=None) -> None:
    """Run steps as their upstream steps finish, up to `jobs` at a time, each in its warm kernel."""
    with Progress() as progress:
        _schedule(plan, steps, result, jobs, progress, warm, budget=budget)


def _schedule(plan, steps, result, jobs, progress, warm, execute=None, render=None, budget=None) -> None:
    """Start each step once its upstream steps are done. A finished step's report renders after
    the steps waiting for it have started, so rendering is never on their path. Once the run's
    `budget` is spent, no step starts and the ones it stopped fail with its reason."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from nbops.report import render_step

    execute = execute or execute_step
    render = render or render_step
    pending = list(steps)
    done: set[str] = {VALIDATE} | set(result.skipped)
    failed: set[str] = set()
    running = {}

    def start_ready(pool) -> None:
        for step in list(pending):
            if budget is not None and budget.expired.is_set():
                pending.remove(step)
                result.not_run.append(step.name)
                _say(f"✗ {step.name:<12}  not run ({budget.reason})")
            elif any(n in failed for n in step.needs):
                pending.remove(step)
                result.not_run.append(step.name)
                upstream = ", ".join(n for n in step.needs if n in failed)
                _say(f"✗ {step.name:<12}  not run ({upstream} failed)")
            elif all(n in done for n in step.needs):
                pending.remove(step)
                kept = getattr(warm.get(step.name), "adopted", False)
                _say(f"▶ {step.name:<12}  started" + (" (kernel kept warm by the last run)" if kept else ""))
                future = pool.submit(_timed, execute, plan, step, progress, warm.get(step.name))
                running[future] = step

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        try:
            start_ready(pool)
            while running:
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                to_render = []
                for fut in finished:
                    step = running.pop(fut)
                    to_render.append(step.name)
                    try:
                        seconds = fut.result()
                    except StepError as exc:
                        if budget is not None and budget.expired.is_set():  # stopped by the budget
                            exc = StepError(step.name, exc.cell_index, "RunTimeoutError", budget.reason)
                        failed.add(step.name)
                        result.failure = result.failure or exc
                        _say(f"✗ {step.name:<12}  {exc}")
                        continue
                    done.add(step.name)
                    result.ran.append(step.name)
                    _say(f"✓ {step.name:<12} {seconds:5.1f}s")
                start_ready(pool)
                for name in to_render:  # while the steps just started run
                    render(plan.build, plan.reports, name)
        except KeyboardInterrupt:
            # Still inside the pool: stop the kernels (our children) so the worker threads
            # return now instead of finishing their steps. An interrupted step writes no
            # stamp, so the next run does it again.
            _say("interrupted: stopping kernels")
            for kernel in warm.values():  # a step still waiting for its kernel starts nothing
                kernel.cancel()
            stop_children()
            raise


def child_pids(parent: int | None = None) -> list[int]:
    """PIDs of a process's direct children (default: ours, the kernels we started), from /proc."""
    me, pids = parent or os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                pids.append(int(entry))
    return pids


def stop_children(grace_s: float = 3.0) -> None:
    """SIGTERM our child processes, then SIGKILL what is left after `grace_s`."""
    children = child_pids()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in child_pids()):
        time.sleep(0.1)
    for pid in child_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def render_only(params_file: str | Path, root: str | Path = ".") -> Path:
    """Re-render reports/ from the build folder without running anything."""
    from nbops.report import render_reports

    root = Path(root).resolve()
    params_file = Path(params_file)
    plan = make_plan(params_file if params_file.is_absolute() else root / params_file, root)
    # the last successful execution of each step, even if code changed since (that is what
    # `make report` is for); a step that never succeeded shows as not run
    result = RunResult(skipped=[s.name for s in STEPS if plan.stamp_path(s.name).exists()])
    return render_reports(plan, result)


# ------------------------------------------------------------------ CLI glue


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def check_step_names(only: list[str] | None) -> None:
    """`--only` names steps of this pipeline; anything else stops before anything is touched."""
    known = [s.name for s in STEPS]
    unknown = [name for name in only or [] if name not in known]
    if unknown:
        raise NbopsError(
            f"--only: unknown step {', '.join(repr(n) for n in unknown)} (steps: {', '.join(known)})"
        )


def _say_registry_champion(root: Path, model_name: str) -> None:
    """The champion as the registry has it now (a local store answers without mlflow)."""
    from nbops import store_probe

    version = store_probe.alias_version(_tracking_uri_for_key(root), model_name, "champion")
    if version is None:  # a tracking server: asking it would cost the no-op its speed
        _say("gate: not re-evaluated (03_evaluate unchanged); `make champion` reads the registry")
    else:
        _say(f"champion: {model_name} v{version} (registry)" if version else "champion: none yet (registry)")


def main_run(params_file: str, root: str, force: bool, only: list[str] | None, jobs: int) -> int:
    try:
        check_step_names(only)
    except NbopsError as exc:
        print_problems(exc)
        return 2
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        result = run_pipeline(params_file, root, force=force, only=only, jobs=jobs)
    except KeyboardInterrupt:
        print("error: interrupted; unfinished steps will run again next time", file=sys.stderr)
        return 130
    except NbopsError as exc:
        print_problems(exc)
        return 1
    index = result.reports / "index.html" if result.reports else None
    if result.evaluation and "03_evaluate" in result.ran:
        decision = result.evaluation["decision"]
        before = f"v{decision['champion_version']}" if decision["champion_version"] else "none"
        _say(
            f"gate: {decision['verdict']} (challenger v{decision['challenger_version']}, "
            f"champion before: {before})"
        )
        after = result.evaluation["champion_after"]
        _say(f"champion: {result.evaluation['model_name']} v{after}" if after else "champion: none yet")
    elif result.evaluation:  # the last evaluation's champion may be stale (a rollback since)
        _say_registry_champion(Path(root).resolve(), result.evaluation["model_name"])
    if index:
        _say(f"reports: {index}")
    if result.failure:
        print(f"error: {result.failure}", file=sys.stderr)
        return 1
    return 0
