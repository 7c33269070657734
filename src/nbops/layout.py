"""Every step name and product path of the project, named once.

Each params file has a build folder and a reports folder of its own, named after the file's
stem (params/smoke.yaml: `smoke`), so runs of different params files never overwrite each other:

    data/*.csv ─ 00_validate ─ build/<name>/00_validate/table.parquet
                      ├─ 01_eda      ─ build/<name>/01_eda/01_eda.ipynb
                      └─ 02_train    ─ build/<name>/02_train/model.json
                            └─ 03_evaluate ─ build/<name>/03_evaluate/metrics.json
    reports/<name>/  ─ HTML per step, index.html, summary.md, metrics.json, run.json
    reports/index.html ─ the latest run of each params file, and the sweeps
    04_drift  ─ build/<name>/04_drift/, reports/<name>/drift.* (run on demand, not in the pipeline)
    make lab  ─ build/lab/<name>/ (hand runs)
    sweeps    ─ build/sweeps/<sweep>/<point>/, reports/sweep/<sweep>/
    spares    ─ build/.spares/ (kernels kept warm, shared by every params file)

Imports nothing of the project: the runner, the kernels and the served app all read it.
"""

from __future__ import annotations

import re
from pathlib import Path

VALIDATE = "00_validate"
EDA = "01_eda"
TRAIN = "02_train"
EVALUATE = "03_evaluate"
DRIFT = "04_drift"
# the steps that fit and judge a model: what a sweep's point runs, and what a fresh run forks
# from one kernel parent (their imports are nearly the same)
MODEL_STEPS = (TRAIN, EVALUATE)

BUILD_DIR = "build"
REPORTS_DIR = "reports"
NOTEBOOKS_DIR = "notebooks"
LAB_DIR = "lab"  # build/lab/<name>/: `make lab`'s hand runs
SWEEPS_BUILD_DIR = "sweeps"  # build/sweeps/<sweep>/<point>/
SWEEPS_REPORTS_DIR = "sweep"  # reports/sweep/<sweep>/
SPACE_VENV_DIR = "space-venv"  # build/space-venv/: `make space-serve`'s environment (Makefile)
# folders beside the params files' own: a params file may not be named after one of them
RESERVED_NAMES = (LAB_DIR, SWEEPS_BUILD_DIR, SWEEPS_REPORTS_DIR, SPACE_VENV_DIR)
PARAMS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")

TABLE_FILE = "table.parquet"  # 00_validate's product
MODEL_FILE = "model.json"  # 02_train's product: run id, model name, version
METRICS_FILE = "metrics.json"  # 03_evaluate's product (the gate's record); copied to reports/<name>/
STAMP_FILE = ".stamp.json"  # a step's key and product hashes, written last
OWNER_FILE = ".params"  # build/<name>/.params: which params file the name belongs to
INDEX_FILE = "index.html"
SUMMARY_FILE = "summary.md"  # the PR comment's body
RUN_RECORD = "run.json"  # reports/<name>/run.json: that folder's line in reports/index.html

TITLES = {EDA: "Exploratory data analysis", TRAIN: "Train", EVALUATE: "Evaluate and gate"}

# build/<name>/<step>/<step>.ipynb: the executed notebook of a step
EVALUATION = Path(EVALUATE) / METRICS_FILE


def notebook_path(step: str) -> str:
    """The notebook of `step`, relative to the project root."""
    return f"{NOTEBOOKS_DIR}/{step}.ipynb"


def executed_notebook(build: Path, step: str) -> Path:
    return build / step / f"{step}.ipynb"


def params_name(params_file: str | Path) -> str:
    """The name of a params file's folders: its stem (params/smoke.yaml: `smoke`)."""
    return Path(params_file).stem


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a build and reports folder, or None when it can."""
    if not PARAMS_NAME.fullmatch(name):
        return "a name of letters, digits, '_', '-' or '.' (at most 80, not starting with '.', '_' or '-')"
    if name in RESERVED_NAMES:
        return f"a name other than {', '.join(RESERVED_NAMES)} (folders of their own)"
    return None


def build_root(root: Path) -> Path:
    return root / BUILD_DIR


def reports_root(root: Path) -> Path:
    return root / REPORTS_DIR


def build_dir(root: Path, name: str) -> Path:
    """build/<name>/: the step products of the params file named `name`."""
    return build_root(root) / name


def reports_dir(root: Path, name: str) -> Path:
    """reports/<name>/: the reports of the params file named `name`."""
    return reports_root(root) / name


def reports_index(root: Path) -> Path:
    """reports/index.html: the latest run of each params file."""
    return reports_root(root) / INDEX_FILE


def lab_build_dir(root: Path, name: str) -> Path:
    """build/lab/<name>/: hand runs in `make lab` (never the pipeline's build/<name>/)."""
    return build_root(root) / LAB_DIR / name


def drift_dir(build: Path) -> Path:
    """build/<name>/04_drift/: what `nbops drift` compared, for the 04_drift notebook."""
    return build / DRIFT


def sweep_build_dir(root: Path, sweep: str) -> Path:
    return build_root(root) / SWEEPS_BUILD_DIR / sweep


def sweep_reports_dir(root: Path, sweep: str) -> Path:
    return reports_root(root) / SWEEPS_REPORTS_DIR / sweep
