"""Notebooks run by hand, as in `make lab`, after a pipeline run: the notebook Lab opens
(nbops.lab injects the params file's values) executed with nbclient in notebooks/, with the
environment `make lab` sets. No error, and nothing the pipeline made or the registry holds
changes: no new version, aliases as they were, build/<name>/ byte-identical, no store in notebooks/."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from benchmarks.processes import free_port
from nbops.layout import build_root, lab_build_dir
from tests.browser.penguins import CATEGORICAL, NUMERIC, TARGET, penguins_table
from tests.conftest import REPO, nbops, run_coroutine, write_params

HAND_STEPS = ("01_eda", "02_train", "03_evaluate")


def penguins_params(root: Path) -> Path:
    """A non-drug table: numeric and categorical columns, missing values, a string target."""
    penguins_table().to_csv(root / "data" / "raw" / "penguins.csv", index=False)

    def edit(raw):
        raw["data"] = {
            "path": "data/raw/penguins.csv",
            "target": TARGET,
            "numeric": NUMERIC,
            "categorical": CATEGORICAL,
        }
        raw["registry"] = {"model_name": "penguin-classifier", "experiment": "penguins"}
        raw["gate"] = {"min_macro_f1": 0.5, "min_accuracy": 0.5, "tolerance": 0.0}

    return write_params(root, "penguins", edit)


def commit_project(root: Path):
    """The project as a git repository with the repo's .gitignore, everything committed."""
    import shutil
    import subprocess

    shutil.copy(REPO / ".gitignore", root / ".gitignore")

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
        return done.stdout

    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@127.0.0.1", "commit", "-qm", "project")
    return git


def build_digest(root: Path) -> dict[str, str]:
    build = build_root(root)  # every params file's build folder, Lab's own aside
    return {
        str(f.relative_to(build)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(build.rglob("*"))
        if f.is_file() and f.relative_to(build).parts[0] != "lab"
    }


def registry_state(root: Path) -> dict:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    return {
        m.name: (sorted(v.version for v in client.search_model_versions(f"name='{m.name}'")), dict(m.aliases))
        for m in client.search_registered_models()
    }


def lab_runs(root: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string="tags.`nbops.source` = 'lab'")


def run_as_in_lab(root: Path, params_file: Path, step: str, monkeypatch) -> None:
    """Open the notebook through Lab's contents manager, run every cell in notebooks/."""
    import nbformat
    from nbclient import NotebookClient

    from nbops.lab import ENV_PARAMS, ParamsContentsManager

    # what `make lab` exports; the kernel inherits it. No MLFLOW_TRACKING_URI: the store
    # must be found from the project root
    monkeypatch.setenv("NBOPS_ROOT", str(root))
    monkeypatch.setenv(ENV_PARAMS, str(params_file))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    manager = ParamsContentsManager(root_dir=str(root))
    model = run_coroutine(manager.get(f"notebooks/{step}.ipynb"))
    nb = nbformat.from_dict(model["content"])
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(root / "notebooks")}}
    )
    run_coroutine(client.async_execute())
    return nb


def text_outputs(nb) -> str:
    """Every text a person sees in the executed notebook: streams, text/plain, markdown, HTML."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts += [data.get(kind, "") for kind in ("text/plain", "text/markdown", "text/html")]
    return "\n".join("".join(p) if isinstance(p, list) else p for p in parts)


@pytest.mark.parametrize("which", ["smoke", "penguins"])
def test_hand_runs_leave_the_pipeline_and_registry_alone(request, monkeypatch, which):
    if which == "smoke":  # after the smoke pipeline's run (its copy's first run arms the no-op path)
        project = request.getfixturevalue("smoke_project")
        params_file = project / "params" / "smoke.yaml"
    else:
        project = request.getfixturevalue("project")
        params_file = penguins_params(project)
    first = nbops(project, "run", "--params", str(params_file.relative_to(project)))
    assert first.returncode == 0, first.stdout + first.stderr
    before_build, before_registry = build_digest(project), registry_state(project)
    assert before_registry  # the pipeline registered a version
    git = commit_project(project)

    executed = {step: run_as_in_lab(project, params_file, step, monkeypatch) for step in HAND_STEPS}

    assert registry_state(project) == before_registry  # no new version, aliases unchanged
    assert git("status", "--porcelain") == ""  # nothing of the hand runs shows in git
    assert build_digest(project) == before_build  # the pipeline's products, byte for byte
    lab = lab_build_dir(project, params_file.stem)  # build/lab/<name>/, beside the pipeline's
    assert (lab / "02_train" / "model.json").is_file()
    assert (lab / "03_evaluate" / "metrics.json").is_file()
    leftovers = {p.name for p in (project / "notebooks").iterdir()} - {
        p.name for p in (REPO / "notebooks").iterdir()
    }
    assert not leftovers - {".ipynb_checkpoints"}, leftovers  # no mlflow.db, artifacts/, locks
    [run] = lab_runs(project)  # the hand-trained run, tagged, in the project's store
    assert run.data.tags["nbops.source"] == "lab"
    again = nbops(project, "run", "--params", str(params_file.relative_to(project)))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "started" not in again.stdout, again.stdout  # a true no-op: every step skipped
    for step in HAND_STEPS:
        assert f"- {step:<12}  skipped (unchanged)" in again.stdout, again.stdout
    [(model, (_, aliases))] = registry_state(project).items()
    assert f"champion: {model} v{aliases['champion']} (registry)" in again.stdout, again.stdout
    for step, nb in executed.items():  # what the person reads: no progress bars, no "vNone"
        shown = text_outputs(nb)
        assert "Downloading artifacts" not in shown and "vNone" not in shown, (step, shown[-2000:])


def test_evaluate_by_hand_before_train_says_what_to_run_first(smoke_project, monkeypatch):
    from nbclient.exceptions import CellExecutionError

    project = smoke_project
    with pytest.raises(CellExecutionError, match=r"holdout.json not found: run 02_train first"):
        run_as_in_lab(project, project / "params" / "smoke.yaml", "03_evaluate", monkeypatch)
    assert not (lab_build_dir(project, "smoke") / "03_evaluate" / "metrics.json").exists()


def test_register_true_registers_on_purpose(smoke_project, monkeypatch):
    project = smoke_project
    params_file = project / "params" / "smoke.yaml"
    path = project / "notebooks" / "02_train.ipynb"
    path.write_text(path.read_text().replace("register = False", "register = True"))
    versions, aliases = registry_state(project)["drug-classifier"]
    run_as_in_lab(project, params_file, "02_train", monkeypatch)
    after_versions, after_aliases = registry_state(project)["drug-classifier"]
    assert len(after_versions) == len(versions) + 1
    assert after_aliases["champion"] == aliases["champion"]  # challenger moves, champion never


def test_drift_by_hand_says_what_to_run_first(smoke_project, monkeypatch):
    from nbclient.exceptions import CellExecutionError

    project = smoke_project
    with pytest.raises(CellExecutionError, match=r"no drift check yet: run `make drift` first"):
        run_as_in_lab(project, project / "params" / "smoke.yaml", "04_drift", monkeypatch)
    assert "mlflow.db" not in os.listdir(project / "notebooks")


def test_make_lab_answers_on_its_port_and_stops_by_pid():
    """`make lab` in the repository (as root here: --allow-root), a free port, stopped by PID."""
    import signal
    import socket
    import subprocess
    import time
    import urllib.error
    import urllib.request

    port = free_port()
    proc = subprocess.Popen(
        ["make", "-s", "lab", "PARAMS=params/smoke.yaml", f"PORT={port}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and status is None:
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2).status
            except urllib.error.HTTPError as exc:
                status = exc.code  # 403 without the token: the server answers
            except OSError:
                time.sleep(0.5)
        assert status in (200, 403), f"no answer on {port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/lab" in out and "token=" in out, out[-2000:]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # stopped
