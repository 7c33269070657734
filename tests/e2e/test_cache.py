"""The cache can't be fooled: a step is skipped only when its products are the bytes it left and
the store still holds the runs and versions they name. Through the real CLI, in one project."""

import json
import re
import shutil

import pytest

from nbops.layout import build_dir
from tests.conftest import copy_project, nbops

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def proj(smoke_champion, tmp_path_factory):
    """After the smoke pipeline's run: a copy of the session's smoke champion."""
    return copy_project(smoke_champion.root, tmp_path_factory.mktemp("cache") / "project")


def run(root):
    res = nbops(root, "run", "--params", "params/smoke.yaml")
    assert res.returncode == 0, res.stderr
    return res.stdout


def started(out):
    return sorted(re.findall(r"▶ (\S+)", out))


def test_a_product_edited_by_hand_reruns_its_step_and_those_after(proj):
    model = build_dir(proj, "smoke") / "02_train" / "model.json"
    model.write_text(model.read_text() + "\n")  # same JSON, other bytes: as an editor's save
    out = run(proj)
    assert (
        "↻ 02_train      runs again: build/smoke/02_train/model.json changed since the run that made it"
        in out
    )
    assert started(out) == ["02_train", "03_evaluate"]
    assert "- 01_eda        skipped (unchanged)" in out


def test_a_deleted_product_reruns_its_step(proj):
    (build_dir(proj, "smoke") / "03_evaluate" / "metrics.json").unlink()
    out = run(proj)
    assert "↻ 03_evaluate   runs again: build/smoke/03_evaluate/metrics.json is missing" in out
    assert started(out) == ["03_evaluate"]


def test_a_store_made_anew_under_the_same_uri_reruns_what_names_its_runs(proj):
    shutil.rmtree(proj / "mlflow")
    out = run(proj)
    why = r"build/smoke/02_train/model.json names run \w+, which the tracking store does not have"
    assert re.search(rf"↻ 02_train      runs again: {why}", out), out
    assert started(out) == ["02_train", "03_evaluate"]
    assert "champion: drug-classifier v1" in out  # the new store's own first version
    model = json.loads((build_dir(proj, "smoke") / "02_train" / "model.json").read_text())
    assert str(model["version"]) == "1"


def test_then_nothing_changed_is_a_true_no_op_naming_the_registrys_champion(proj):
    out = run(proj)
    assert out.count("skipped (unchanged)") == 4 and "▶" not in out
    assert "champion: drug-classifier v1 (registry)" in out
