"""A cell that hangs past the timeout, a kernel that dies mid-run, an interrupted run: the
step and cell are named, the executed notebook and its HTML are kept, the MLflow run is
closed FAILED, no alias moves, and nothing half-done is ever taken as done by the cache."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from nbops.layout import build_dir, reports_dir
from nbops.runner.schedule import child_pids
from tests.conftest import make_project, nbops, write_params


def insert_cell(root: Path, notebook: str, before: str, source: str) -> int:
    """Insert a code cell before the first cell containing `before`; returns its 0-based index."""
    path = root / "notebooks" / notebook
    nb = json.loads(path.read_text())
    at = next(i for i, c in enumerate(nb["cells"]) if before in "".join(c["source"]))
    nb["cells"].insert(
        at,
        {
            "cell_type": "code",
            "execution_count": None,
            "id": f"fault{at}",
            "metadata": {},
            "outputs": [],
            "source": source,
        },
    )
    path.write_text(json.dumps(nb))
    return at


def executed_cell_number(executed: Path, marker: str) -> int:
    """1-based position of the cell containing `marker`, ignoring papermill's error banner."""
    cells = [
        c
        for c in json.loads(executed.read_text())["cells"]
        if "papermill-error-cell-tag" not in c["metadata"].get("tags", [])
    ]
    return next(i + 1 for i, c in enumerate(cells) if marker in "".join(c["source"]))


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return make_project(tmp_path / "project")


def test_cell_over_the_timeout_fails_the_step_and_names_the_cell(project):
    insert_cell(project, "01_eda.ipynb", "plots.summarize_table", "import time\ntime.sleep(120)  # hang")
    write_params(project, "slow", lambda p: p.update(run={"cell_timeout_s": 3}))
    t = time.monotonic()
    res = nbops(project, "run", "--params", "params/slow.yaml", "--only", "01_eda")
    assert time.monotonic() - t < 100
    assert res.returncode == 1
    executed = build_dir(project, "slow") / "01_eda" / "01_eda.ipynb"
    cell = executed_cell_number(executed, "time.sleep(120)")
    assert res.stderr.strip().endswith(
        f"error: failed at 01_eda, cell {cell}: CellTimeoutError: cell exceeded run.cell_timeout_s=3"
    )
    assert (reports_dir(project, "slow") / "01_eda.html").is_file()
    assert not (build_dir(project, "slow") / "01_eda" / ".stamp.json").exists()
    assert "failed at 01\\_eda, cell" in (reports_dir(project, "slow") / "summary.md").read_text()


def test_dead_kernel_mid_run_closes_the_mlflow_run_failed_and_registers_nothing(project):
    insert_cell(
        project,
        "02_train.ipynb",
        "registered = tracking.log_training(",
        "import os\nimport mlflow.sklearn\n\n"
        "def _die(*args, **kwargs):\n    os._exit(1)  # dies inside an active MLflow run\n\n"
        "mlflow.sklearn.log_model = _die",
    )
    res = nbops(project, "run", "--params", "params/smoke.yaml")
    assert res.returncode == 1
    executed = build_dir(project, "smoke") / "02_train" / "02_train.ipynb"
    cell = executed_cell_number(executed, "registered = tracking.log_training(")
    assert re.search(
        rf"error: failed at 02_train, cell {cell}: DeadKernelError: the kernel died$", res.stderr.strip()
    ), res.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{project / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and {r.info.status for r in runs} == {"FAILED"}
    assert client.search_model_versions("name='drug-classifier'") == []
    assert (reports_dir(project, "smoke") / "02_train.html").is_file()
    assert "not run" in (reports_dir(project, "smoke") / "index.html").read_text()


def test_sigterm_stops_kernels_and_leaves_nothing_the_cache_would_take_as_done(project):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbops", "run", "--params", "params/smoke.yaml"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "02_train" in line and "started" in line:
                break
        deadline = time.monotonic() + 60
        while not child_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        kernels = child_pids(proc.pid)
        assert kernels, "the runner had started kernels"
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert "interrupted; unfinished steps will run again next time" in err
    assert not [k for k in kernels if Path(f"/proc/{k}").exists()], "kernels left behind"
    finished = {step for step in ("01_eda", "02_train", "03_evaluate") if f"✓ {step}" in "".join(seen) + out}
    assert "02_train" not in finished, "the interrupt came while 02_train ran"
    for step in {"01_eda", "02_train", "03_evaluate"} - finished:
        assert not (build_dir(project, "smoke") / step / ".stamp.json").exists(), step
    res = nbops(project, "run", "--params", "params/smoke.yaml", "--only", "02_train")
    assert res.returncode == 0, res.stderr
    assert re.search(r"✓ 02_train", res.stdout), res.stdout
