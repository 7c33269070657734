"""The runner: params -> validated table -> notebooks (papermill) -> reports (nbconvert).

    00_validate   in-process: read + validate the CSV, write build/<name>/00_validate/table.parquet
    01_eda        notebook  (needs 00_validate)              } run concurrently
    02_train      notebook  (needs 00_validate)              }
    03_evaluate   notebook  (needs 02_train)
    reports       in-process: reports/<name>/ (HTML, index.html, summary.md, metrics.json)

<name> is the params file's stem (nbops.layout, nbops.runner.folders).

A step is skipped when the hash of its inputs (notebook source without outputs, the params it
declares, input data, upstream steps' keys, the source of the package modules it imports,
followed through their imports: nbops.runner.codehash) matches the stamp it
left after its last success. The stamp is written last and removed first, so an interrupted
step is never taken as done. Checking the cache imports neither pandas nor mlflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbops.exceptions import NbopsError, StepError
from nbops.layout import (
    EDA,
    EVALUATE,
    STAMP_FILE,
    TABLE_FILE,
    TRAIN,
    VALIDATE,
    build_dir,
    notebook_path,
    params_name,
    reports_dir,
)
from nbops.products import params_hash, read_json
from nbops.runner.codehash import code_hash, module_closure, notebook_code_hash
from nbops.runner.notebook import declared_parameters, read_notebook_source, source_hash
from nbops.runner.stamps import products_changed, tracking_uri_for_key

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
        return notebook_path(self.name)


STEPS = (
    Step(EDA, (VALIDATE,), tracked=False),
    Step(TRAIN, (VALIDATE,), tracked=True),
    Step(EVALUATE, (VALIDATE, TRAIN), tracked=True),
)
# what the in-process validate step runs of the package
VALIDATE_MODULES = ("nbops.ml.data", "nbops.params")


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
    code: dict[str, str] = field(default_factory=dict)  # each step's code hash (nbops.runner.codehash)

    def stamp_path(self, step: str) -> Path:
        return self.build / step / STAMP_FILE

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
        return products_changed(self.build, step, stamp, tracking_uri_for_key(self.root), self.root)


def make_plan(
    params_file: Path,
    root: Path,
    build: Path | None = None,
    reports: Path | None = None,
    provenance: dict | None = None,
) -> Plan:
    """Validate params, locate data and compute every step's cache key (fast: no pandas)."""
    from nbops.ml.data import file_hash, is_synthetic, resolve_data_path
    from nbops.ml.tracking import git_commit
    from nbops.params import load_params

    source = str(params_file.relative_to(root) if params_file.is_relative_to(root) else params_file)
    params = load_params(params_file, source)
    synthetic = is_synthetic(params, root)
    data_path = resolve_data_path(params, root, source)
    data_hash = file_hash(data_path)
    build = build or build_dir(root, params_name(params_file))
    code = {VALIDATE: code_hash(module_closure(VALIDATE_MODULES))}
    keys = {VALIDATE: _validate_key(code[VALIDATE], data_hash, params)}
    commit = (provenance or {}).get("git_commit") or git_commit(root)
    runtime = _runtime_parameters(root, build, data_path, data_hash, synthetic, params, commit, provenance)
    flat, uri, injected = params.notebook_parameters(), tracking_uri_for_key(root), {}
    for step in STEPS:
        nb = read_notebook_source(root / step.notebook)
        values = injected[step.name] = _injected(
            step, nb, root, flat, {**runtime, "products_dir": str(build / step.name)}
        )
        code[step.name] = notebook_code_hash(nb)
        # provenance tags, not inputs: they must not force a rerun
        keyed = {k: v for k, v in values.items() if k not in PROVENANCE_PARAMETERS}
        keys[step.name] = params_hash(
            [
                source_hash(nb),
                portable(keyed, root),
                code[step.name],
                [keys[n] for n in step.needs],
                portable(uri, root) if step.tracked else None,
            ]
        )
    reports = reports or reports_dir(root, params_name(params_file))
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
        reports,
        commit,
        code,
    )


def _validate_key(code: str, data_hash: str, params: Params) -> str:
    """What the validate step reads: its code, the table, the data and split settings."""
    return params_hash(
        [
            code,
            data_hash,
            params.data.model_dump(mode="json"),
            params.split.test_size,
            params.task,  # the target is read as a label or a number
            params.gate.metric,  # roc_auc is refused for a target with more than two classes
        ]
    )


def portable(value: Any, root: Path) -> Any:
    """`value` with the project's absolute path written as `<root>`, for a key: a project moved or
    copied elsewhere (its build/ and its default store beside it) keeps its steps cached."""
    if isinstance(value, str):
        return value.replace(str(root.resolve()), "<root>")
    if isinstance(value, dict):
        return {k: portable(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v, root) for v in value]
    return value


def _runtime_parameters(
    root: Path, build: Path, data_path: Path, data_hash: str, synthetic: bool, params, commit: str, provenance
) -> dict:
    """What the runner provides to every step (RUNNER_PARAMETERS), `products_dir` aside."""
    return {
        "table_path": str(build / VALIDATE / TABLE_FILE),
        "train_dir": str(build / TRAIN),
        "data_source": str(data_path.relative_to(root) if data_path.is_relative_to(root) else data_path),
        "data_is_synthetic": synthetic,
        "data_hash": data_hash,
        "params_hash": params_hash(params.model_dump(mode="json")),
        "git_commit": commit,
        "parent_run_id": None,
        "run_tags": {},
        "interactive": False,
        "register": True,
        **(provenance or {}),
    }


def _injected(step: Step, nb: dict, root: Path, flat: dict, runtime: dict) -> dict:
    """The values papermill injects into `step`: what its parameters cell declares, nothing else."""
    declared = declared_parameters(nb, root / step.notebook)
    unknown = [n for n in declared if n not in flat and n not in RUNNER_PARAMETERS]
    if unknown:
        raise NbopsError(
            [
                f"{step.notebook}: parameters cell declares {n!r}, which is neither "
                f"a params key nor provided by the runner"
                for n in unknown
            ]
        )
    values = {n: flat[n] for n in declared if n in flat}
    values.update({n: runtime[n] for n in declared if n in runtime})
    return values


def check_step_names(only: list[str] | None) -> None:
    """`--only` names steps of this pipeline; anything else stops before anything is touched."""
    known = [s.name for s in STEPS]
    unknown = [name for name in only or [] if name not in known]
    if unknown:
        raise NbopsError(
            f"--only: unknown step {', '.join(repr(n) for n in unknown)} (steps: {', '.join(known)})"
        )
