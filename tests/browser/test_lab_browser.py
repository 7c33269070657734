"""JupyterLab in Debian's chromium, as a data scientist uses it: `nbops lab` on a free port in a
project, 02_train opened (not marked unsaved), the params file's values in the injected cell,
Run All with no error or stderr output, then Ctrl+S: the file on disk is the committed notebook,
byte for byte (no injected cell, no outputs, no counts, the committed metadata)."""

from __future__ import annotations

import json
import socket

import pytest

from benchmarks.lab_session import (
    LabServer,
    cell_sources,
    open_notebook,
    output_texts,
    run_all,
    save,
    tab_is_dirty,
)
from tests.conftest import REPO

pytestmark = pytest.mark.browser


@pytest.fixture
def lab(project, tmp_path):
    # a workspace and settings of its own: none of the user's open tabs or answered prompts
    env = {"JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    server = LabServer(project, "params/smoke.yaml", tmp_path / "lab.log", env=env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", server.port)) != 0, "Lab still answers after its group stopped"


def test_run_all_in_lab_uses_the_params_and_saving_leaves_the_file_as_committed(lab, browser, project):
    from nbops.lab import injected_source, lab_parameters

    committed = (REPO / "notebooks" / "02_train.ipynb").read_bytes()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        open_notebook(page, lab.notebook_url("02_train.ipynb"))
        assert not tab_is_dirty(page), "the tab is marked unsaved as soon as it opens"

        expected = injected_source(lab_parameters(project, project / "params" / "smoke.yaml", "02_train"))
        sources = cell_sources(page)
        [injected] = [s for s in sources if s.startswith("# Parameters injected by make lab")]
        assert injected.splitlines() == expected.splitlines()
        assert "model_cv_folds = 3" in injected  # smoke.yaml's value, not the cell's default (5)

        run_all(page)
        assert output_texts(page, "application/vnd.jupyter.stderr") == []
        shown = "\n".join(output_texts(page))
        assert "Traceback" not in shown and "Error" not in shown, shown[-2000:]
        assert "not registered (a hand run" in shown  # the training line of an unregistered hand run

        save(page)
        assert not tab_is_dirty(page)
    except Exception:
        page.screenshot(path=str(project.parent / "lab-failure.png"), full_page=True)
        raise
    finally:
        page.close()
    assert "without encryption" not in lab.output()  # the kernel Lab started has CurveZMQ keys
    saved = (project / "notebooks" / "02_train.ipynb").read_bytes()
    nb = json.loads(saved)
    assert not [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None for c in nb["cells"])
    assert saved == committed  # what `git diff` would show: nothing
