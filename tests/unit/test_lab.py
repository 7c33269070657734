"""The Lab contents manager: opening a pipeline notebook injects the runner's values for
build/lab/<name>; saving strips them, the outputs and the metadata Lab writes."""

from __future__ import annotations

import json

import pytest

from nbops import lab
from nbops.layout import build_dir, lab_build_dir
from nbops.runner.plan import make_plan
from tests.conftest import run_coroutine


@pytest.fixture
def manager(project, monkeypatch):
    monkeypatch.setenv("NBOPS_ROOT", str(project))
    monkeypatch.setenv(lab.ENV_PARAMS, str(project / "params" / "smoke.yaml"))
    return lab.ParamsContentsManager(root_dir=str(project))


def injected_cells(nb) -> list:
    return [c for c in nb["cells"] if lab.INJECTED_TAG in c["metadata"].get("tags", [])]


def run_cell(source: str) -> dict:
    scope: dict = {}
    exec(source, scope)
    return scope


def test_get_injects_the_runners_values_for_build_lab(manager, project):
    model = run_coroutine(manager.get("notebooks/02_train.ipynb"))
    cells = model["content"]["cells"]
    [cell] = injected_cells(model["content"])
    position = cells.index(cell)
    assert "parameters" in cells[position - 1]["metadata"]["tags"]
    values = run_cell(cell["source"])
    lab = lab_build_dir(project, "smoke")
    expected = make_plan(project / "params" / "smoke.yaml", project, build=lab)
    for name, value in expected.injected["02_train"].items():
        if name in ("register", "interactive", "run_tags"):
            continue
        assert values[name] == value, name
    assert values["products_dir"] == str(lab / "02_train")
    assert values["interactive"] is True
    assert "register" not in values  # the notebook's own default (False) applies
    assert values["run_tags"] == {"source": "lab"}
    assert (lab / "00_validate" / "table.parquet").is_file()
    assert not build_dir(project, "smoke").exists()  # the pipeline's build/smoke/ untouched


def test_get_takes_the_contents_managers_arguments_by_position(manager):
    """ContentsManager.get(path, content, type, format, require_hash): the override keeps them."""
    model = run_coroutine(manager.get("notebooks/02_train.ipynb", True, "notebook", None, True))
    assert injected_cells(model["content"])
    assert model["hash"] and model["hash_algorithm"]


def test_get_leaves_other_files_alone(manager, project):
    (project / "notebooks" / "scratch.ipynb").write_text(
        (project / "notebooks" / "04_drift.ipynb").read_text(), encoding="utf-8"
    )
    model = run_coroutine(manager.get("notebooks/scratch.ipynb"))
    assert not injected_cells(model["content"])


def test_a_bad_params_file_still_opens_and_says_why(manager, project, monkeypatch):
    bad = project / "params" / "bad.yaml"
    bad.write_text("data: {target: 3}\nnot_a_key: 1\n")
    monkeypatch.setenv(lab.ENV_PARAMS, str(bad))
    model = run_coroutine(manager.get("notebooks/01_eda.ipynb"))
    [cell] = injected_cells(model["content"])
    assert cell["source"].startswith("raise RuntimeError(") and "bad.yaml" in cell["source"]


def test_save_writes_what_git_would_commit(manager, project):
    path = project / "notebooks" / "02_train.ipynb"
    before = path.read_bytes()
    model = run_coroutine(manager.get("notebooks/02_train.ipynb"))
    nb = json.loads(json.dumps(model["content"]))
    for cell in nb["cells"]:  # what a run and Lab leave in the model
        if cell["cell_type"] == "code":
            cell["execution_count"] = 3
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hello\n"}]
            cell["metadata"]["execution"] = {"iopub.status.idle": "2026-12-01T00:00:00Z"}
    nb["metadata"]["kernelspec"] = {"display_name": "Other", "language": "python", "name": "other"}
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.9", "mimetype": "text/x-python"}
    saved = {"type": "notebook", "format": "json", "content": nb}
    run_coroutine(manager.save(saved, "notebooks/02_train.ipynb"))
    assert path.read_bytes() == before


def test_strip_keeps_a_users_edit(project):
    import nbformat

    nb = nbformat.read(project / "notebooks" / "01_eda.ipynb", as_version=4)
    nb.cells[2].source += "\nprint('mine')"
    inject_then_strip = lab.strip_notebook(lab.inject_parameters(nb, "x = 1"))
    assert not injected_cells(inject_then_strip)
    assert inject_then_strip.cells[2].source.endswith("print('mine')")


@pytest.fixture
def no_tracking_uri(monkeypatch):
    from mlflow.tracking._tracking_service import utils

    for name in ("MLFLOW_TRACKING_URI", "NBOPS_ROOT"):  # set, then removed: restored afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(utils, "_tracking_uri", None)


def test_a_notebook_finds_the_projects_store_from_notebooks(project, monkeypatch, no_tracking_uri):
    from nbops.ml import tracking

    monkeypatch.chdir(project / "notebooks")
    assert tracking.use_project_store() == f"sqlite:///{project / 'mlflow' / 'mlflow.db'}"


def test_no_project_no_store(tmp_path, monkeypatch, no_tracking_uri):
    from nbops.exceptions import ModelError
    from nbops.ml import tracking

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="no nbops project at or above .*: set NBOPS_ROOT"):
        tracking.use_project_store()
    assert not (tmp_path / "mlflow.db").exists()
