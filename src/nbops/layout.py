"""Every step name and product path of the project, named once.

    data/*.csv ─ 00_validate ─ build/00_validate/table.parquet
                      ├─ 01_eda      ─ build/01_eda/01_eda.ipynb
                      └─ 02_train    ─ build/02_train/model.json
                            └─ 03_evaluate ─ build/03_evaluate/metrics.json
    reports/  ─ HTML per step, index.html, summary.md, metrics.json
    04_drift  ─ build/04_drift/ (run on demand, not part of the pipeline)

Imports nothing: the runner, the kernels and the served app all read it.
"""

from __future__ import annotations

from pathlib import Path

VALIDATE = "00_validate"
EDA = "01_eda"
TRAIN = "02_train"
EVALUATE = "03_evaluate"
DRIFT = "04_drift"

BUILD_DIR = "build"
REPORTS_DIR = "reports"
NOTEBOOKS_DIR = "notebooks"

TABLE_FILE = "table.parquet"  # 00_validate's product
MODEL_FILE = "model.json"  # 02_train's product: run id, model name, version
METRICS_FILE = "metrics.json"  # 03_evaluate's product (the gate's record); copied to reports/
STAMP_FILE = ".stamp.json"  # a step's key and product hashes, written last

TITLES = {EDA: "Exploratory data analysis", TRAIN: "Train", EVALUATE: "Evaluate and gate"}

# build/<step>/<step>.ipynb: the executed notebook of a step
EVALUATION = Path(EVALUATE) / METRICS_FILE


def notebook_path(step: str) -> str:
    """The notebook of `step`, relative to the project root."""
    return f"{NOTEBOOKS_DIR}/{step}.ipynb"


def executed_notebook(build: Path, step: str) -> Path:
    return build / step / f"{step}.ipynb"
