"""How the evaluate notebook names models, and its one line when 02_train has not run."""

from __future__ import annotations

import pytest

from nbops.exceptions import NbopsError
from nbops.layout import lab_build_dir
from nbops.ml import evaluation


@pytest.mark.parametrize(
    ("role", "info", "label"),
    [
        ("challenger", {"version": "3", "run_id": "a" * 32}, "challenger v3"),
        ("challenger", {"version": None, "run_id": "1a2b3c4d9"}, "challenger (run 1a2b3c4d, not registered)"),
        ("champion", {"version": None, "run_id": None, "metrics": None}, "champion (none)"),
        ("champion", {"version": "1", "run_id": "b" * 32}, "champion v1"),
    ],
)
def test_model_label(role, info, label):
    assert evaluation.model_label(role, info) == label


def test_load_holdout_without_a_train_run_names_the_file_and_what_to_run(tmp_path):
    train_dir = lab_build_dir(tmp_path, "smoke") / "02_train"
    with pytest.raises(NbopsError) as err:
        evaluation.load_holdout(tmp_path / "table.parquet", train_dir, ["Age"], "Drug")
    message = str(err.value)
    assert message.startswith(f"{train_dir / 'holdout.json'} not found: run 02_train first")
    assert "\n" not in message
