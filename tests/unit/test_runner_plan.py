"""The runner's cache keys and notebook checks, without starting a kernel."""

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from nbops.exceptions import NbopsError
from nbops.runner.notebook import declared_parameters, source_hash
from nbops.runner.plan import make_plan
from tests.conftest import REPO


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for folder in ("notebooks", "params"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    return tmp_path


def plan_with(root, edit=None):
    raw = yaml.safe_load((root / "params" / "smoke.yaml").read_text())
    if edit:
        edit(raw)
    path = root / "params" / "t.yaml"
    path.write_text(yaml.safe_dump(raw))
    return make_plan(path, root)


def test_changing_a_hyperparameter_reruns_train_and_evaluate_only(root):
    before = plan_with(root)
    after = plan_with(root, lambda p: p["model"]["params"].update(max_depth=2))
    changed = {k for k in before.keys if before.keys[k] != after.keys[k]}
    assert changed == {"02_train", "03_evaluate"}


def test_changing_a_gate_floor_reruns_only_evaluate(root):
    before = plan_with(root)
    after = plan_with(root, lambda p: p["gate"].update(min_accuracy=0.5))
    assert {k for k in before.keys if before.keys[k] != after.keys[k]} == {"03_evaluate"}


def test_editing_data_reruns_everything(root):
    before = plan_with(root)
    data = root / "data" / "raw" / "drug-smoke-synthetic.csv"
    data.write_text(data.read_text() + "30,F,HIGH,HIGH,20.0,drugY\n")
    after = plan_with(root)
    assert all(before.keys[k] != after.keys[k] for k in before.keys)


def test_outputs_and_counts_do_not_change_a_notebook_hash():
    nb = json.loads((REPO / "notebooks" / "02_train.ipynb").read_text())
    executed = json.loads(json.dumps(nb))
    for cell in executed["cells"]:
        if cell["cell_type"] == "code":
            cell["execution_count"] = 7
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hi"}]
    assert source_hash(nb) == source_hash(executed)
    executed["cells"][-1]["source"] += "\n# edit"
    assert source_hash(nb) != source_hash(executed)


def test_a_notebook_needs_exactly_one_parameters_cell():
    nb = {"cells": [{"cell_type": "code", "source": "x = 1", "metadata": {}}]}
    with pytest.raises(NbopsError, match=r"nb\.ipynb: needs exactly one cell tagged 'parameters', found 0"):
        declared_parameters(nb, Path("nb.ipynb"))


def test_a_parameter_that_is_not_a_params_key_stops_the_run(root):
    path = root / "notebooks" / "01_eda.ipynb"
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    cell["source"] = "".join(cell["source"]) + "\nmodel_max_depth = 3"
    path.write_text(json.dumps(nb))
    with pytest.raises(
        NbopsError, match=r"01_eda\.ipynb: parameters cell declares 'model_max_depth', which is"
    ):
        plan_with(root)


@pytest.mark.parametrize(
    "head, said",
    [
        (b"Age,Sex\n\x00\x00\x00", "not a text CSV file (binary content)"),
        (b"Age,Sex\n\xff\xfe30,F\n", "not a UTF-8 text CSV file"),
    ],
    ids=["nuls", "latin-1"],
)
def test_a_data_file_that_is_not_text_is_refused_before_it_is_hashed(root, monkeypatch, head, said):
    """A large binary file under a raised data.max_mb would be hashed whole for the cache key
    first: its first MB decides."""
    import nbops.ml.data

    (root / "data" / "raw").mkdir(parents=True)
    (root / "data" / "raw" / "x.csv").write_bytes(head)

    def hashed(path):
        raise AssertionError(f"{path} was hashed")

    monkeypatch.setattr(nbops.ml.data, "file_hash", hashed)

    def use_it(p):
        p["data"]["path"] = "data/raw/x.csv"
        del p["data"]["synthetic"]

    with pytest.raises(NbopsError, match=rf"^data/raw/x\.csv: {re.escape(said)}$"):
        plan_with(root, use_it)
