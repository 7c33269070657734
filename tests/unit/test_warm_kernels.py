"""What a kernel started ahead of its step loads, and which steps run at a lower CPU priority."""

import subprocess
import sys

import pytest

from nbops.runner.notebook import read_notebook_source, warmup_code
from nbops.runner.plan import STEPS
from nbops.runner.preload import modules_for
from nbops.runner.warm import is_side_branch
from tests.conftest import REPO


def _code(cells: list[str]) -> str:
    return warmup_code({"cells": [{"cell_type": "code", "metadata": {}, "source": c} for c in cells]})


def test_warmup_runs_the_notebooks_imports_then_its_nbops_modules_preloads():
    code = _code(
        [
            "import pandas as pd\nfrom nbops.ml import plots, tracking\nx = 1",
            "import nbops.ml.data\nfrom nbops.ml.gate import Decision\nprint(x)",
        ]
    )
    lines = code.splitlines()
    assert lines[:4] == [
        "import pandas as pd",
        "from nbops.ml import plots, tracking",
        "import nbops.ml.data",
        "from nbops.ml.gate import Decision",
    ]
    preloaded = "['nbops.ml.plots', 'nbops.ml.tracking', 'nbops.ml.data', 'nbops.ml.gate']"
    assert lines[-1] == f"nbops.runner.preload.preload({preloaded})"
    assert "x = 1" not in code and "print" not in code  # imports only: no step work runs early


def test_parameters_cell_and_unparsable_cells_are_left_out():
    nb = {
        "cells": [
            {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "import os\nx = 1"},
            {"cell_type": "code", "metadata": {}, "source": "%matplotlib inline\nimport json"},
            {"cell_type": "markdown", "metadata": {}, "source": "import sys"},
        ]
    }
    assert warmup_code(nb) == ""  # magics do not parse; markdown is not code


def test_a_notebook_without_nbops_imports_preloads_nothing():
    assert _code(["import json"]) == "import json"


def test_preload_lists_name_the_heavy_libraries_the_steps_use():
    assert {"mlflow", "mlflow.sklearn", "skops.io"} <= set(modules_for(["nbops.ml.tracking"]))
    assert {"matplotlib.pyplot", "seaborn"} <= set(modules_for(["nbops.ml.plots"]))
    assert modules_for(["nbops.products"]) == []
    both = modules_for(["nbops.ml.evaluation", "nbops.ml.tracking"])
    assert len(both) == len(set(both))


@pytest.mark.parametrize("step", ["01_eda", "02_train", "03_evaluate", "04_drift"])
def test_every_preload_of_every_notebook_imports(step):
    """The warm-up of each real notebook runs in a fresh interpreter (a kernel would swallow
    the error silently and the step would just be slower)."""
    code = warmup_code(read_notebook_source(REPO / "notebooks" / f"{step}.ipynb"))
    assert "nbops.runner.preload.preload(" in code
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_eda_is_the_side_branch_only_when_train_and_evaluate_run_beside_it():
    by_name = {s.name: s for s in STEPS}
    full = list(STEPS)
    assert [s.name for s in full if is_side_branch(s, full)] == ["01_eda"]
    eda_alone = [by_name["01_eda"]]
    assert not is_side_branch(by_name["01_eda"], eda_alone)  # nothing to give way to
    train_eval = [by_name["02_train"], by_name["03_evaluate"]]
    assert not any(is_side_branch(s, train_eval) for s in train_eval)


def test_a_side_branch_kernel_really_runs_at_the_lower_priority(tmp_path):
    import os

    from nbops.runner.warm import SIDE_BRANCH_NICE, WarmKernel

    warm = WarmKernel("import json", tmp_path, nice=SIDE_BRANCH_NICE)
    try:
        km = warm.take()
        assert km is not None
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, km.provisioner.pid) == min(19, own + SIDE_BRANCH_NICE)
    finally:
        warm.shutdown()


def _preloaded_in_kernel(code: str, cwd, modules) -> bool:
    """Start a WarmKernel with `code`, then ask the kernel whether every module is in sys.modules."""
    from nbops.runner.warm import WarmKernel
    from tests.conftest import run_coroutine

    warm = WarmKernel(code, cwd)
    try:
        km = warm.take()
        assert km is not None

        async def ask() -> dict:
            client = km.client()
            client.start_channels()
            try:
                await client.wait_for_ready(timeout=60)
                probe = f"set({list(modules)!r}) <= set(__import__('sys').modules)"
                reply = await client.execute_interactive(
                    "", user_expressions={"loaded": probe}, store_history=False, timeout=60
                )
                return reply["content"]["user_expressions"]["loaded"]
            finally:
                client.stop_channels()

        answer = run_coroutine(ask())
        assert answer["status"] == "ok", answer
        return answer["data"]["text/plain"] == "True"
    finally:
        warm.shutdown()


def test_a_warm_kernel_has_the_steps_libraries_loaded_before_the_step_starts(tmp_path):
    """What the runner hands papermill: a kernel in which a notebook's `from nbops.ml import data`
    already brought in data.PRELOAD, though importing nbops.ml.data alone imports none of it."""
    from nbops.ml import data

    assert _preloaded_in_kernel(_code(["from nbops.ml import data"]), tmp_path, data.PRELOAD)
    assert not _preloaded_in_kernel("from nbops.ml import data", tmp_path, data.PRELOAD)  # the control


_IMPORT_PROBE = """
import sys
{before}
import nbformat, papermill
nbformat.validate(nbformat.read(sys.argv[1], as_version=4))  # notebooks still validate
print(sys.modules.get("rfc3987_syntax") is not None)
"""


def _loads_rfc3987_syntax(before: str) -> bool:
    import subprocess
    import sys

    from tests.conftest import REPO

    code = _IMPORT_PROBE.format(before=before)
    done = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "notebooks" / "02_train.ipynb")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() == "True"


def test_the_runner_skips_the_grammar_jsonschema_builds_for_a_format_it_never_checks():
    """papermill -> nbformat -> jsonschema imports rfc3987_syntax (installed for Voila) and builds
    a grammar: about 1 s of the runner's CPU. After skip_unused_imports it is not imported and
    notebooks still validate; without it (the control) it is."""
    skip = "from nbops.runner.preload import skip_unused_imports; skip_unused_imports()"
    assert not _loads_rfc3987_syntax(skip)
    assert _loads_rfc3987_syntax("")


def test_rendering_a_report_does_not_load_that_grammar_either():
    """The wiring at a real call site: nbops.runner.report renders HTML (nbconvert -> nbformat ->
    jsonschema) in the runner's process without importing rfc3987_syntax."""
    render = (
        "import tempfile; from pathlib import Path; "
        "from nbops.runner.notebook_html import render_notebook_html; "
        "render_notebook_html(Path(sys.argv[1]), Path(tempfile.mkdtemp()) / 'r.html', with_code=True)"
    )
    assert not _loads_rfc3987_syntax(render)


@pytest.mark.parametrize(
    "uri, loads_db_client",
    [("sqlite:////tmp/x/mlflow.db", True), ("postgresql+psycopg2://u@127.0.0.1/m", True),
     ("http://127.0.0.1:5000", False)],
)  # fmt: skip
def test_a_warm_kernel_loads_the_database_store_client_only_for_a_database_store(
    monkeypatch, uri, loads_db_client
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    heavy = modules_for(["nbops.ml.tracking"])
    assert ("mlflow.store.tracking.sqlalchemy_store" in heavy) is loads_db_client
    assert ("mlflow.store.model_registry.sqlalchemy_store" in heavy) is loads_db_client


def test_the_database_store_client_modules_exist(monkeypatch):
    """A renamed module would only make the step slower, silently: import them for real."""
    import importlib

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/x/mlflow.db")
    for name in modules_for(["nbops.ml.tracking"]):
        importlib.import_module(name)
