"""End to end: the real CLI in a temp project with its own MLflow store. The registry's story
(weak model -> rerun -> strong model -> worse model -> rollback -> PR mode -> a failing cell)
is built by module fixtures, one pipeline run per stage, each stage on a copy of the one before;
a test that changes a project works on a copy of its own, so each test passes alone and in any
order."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from mlflow import MlflowClient

from nbops.layout import build_dir, reports_dir
from tests.conftest import REAL_DRUG200, copy_project, make_project, nbops, write_params

pytestmark = pytest.mark.e2e


class Stage(NamedTuple):
    root: Path
    res: subprocess.CompletedProcess  # the `nbops run` that made this stage


def _stage(base: Path, dest: Path, params: str, edit=None) -> Stage:
    root = copy_project(base, dest)
    if edit is not None:
        write_params(root, params, edit)
    return Stage(root, run(root, params))


@pytest.fixture(scope="module")
def weak(tmp_path_factory) -> Stage:
    """v1 champion: a shallow tree (~0.77 macro-F1 on the smoke holdout; lower floors let it in)."""
    root = make_project(tmp_path_factory.mktemp("e2e") / "project")

    def shallow(p):
        p["model"]["params"].update(max_depth=3)
        p["gate"].update(min_macro_f1=0.7, min_accuracy=0.7)

    write_params(root, "weak", shallow)
    write_params(root, "worse", lambda p: p["model"]["params"].update(max_depth=2))
    write_params(root, "pr", lambda p: p.update(promote=False))
    return Stage(root, run(root, "weak"))


@pytest.fixture(scope="module")
def strong(weak, tmp_path_factory) -> Stage:
    """weak, then weak.yaml edited to the smoke model and floors (its own folder, build/weak/,
    keeps EDA cached): v2 champion."""
    return _stage(weak.root, tmp_path_factory.mktemp("strong") / "project", "weak", lambda p: None)


@pytest.fixture(scope="module")
def worse(strong, tmp_path_factory) -> Stage:
    """strong, then a worse model: v3 challenger, v2 still champion."""
    return _stage(strong.root, tmp_path_factory.mktemp("worse") / "project", "worse")


@pytest.fixture
def own(tmp_path):
    """`own(stage)`: a copy of the stage's project for a test that changes it."""
    return lambda stage: copy_project(stage.root, tmp_path / "project")


def client(root):
    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")


def champion(root):
    return str(client(root).get_model_version_by_alias("drug-classifier", "champion").version)


def versions(root):
    return sorted(int(v.version) for v in client(root).search_model_versions("name='drug-classifier'"))


def run(root, params, *extra):
    res = nbops(root, "run", "--params", f"params/{params}.yaml", *extra)
    return res


def test_first_run_promotes_and_writes_reports(weak):
    proj, res = weak
    assert res.returncode == 0, res.stderr
    for name in (
        "index.html",
        "summary.md",
        "metrics.json",
        "01_eda.html",
        "01_eda.full.html",
        "02_train.html",
        "03_evaluate.html",
        "notebooks/03_evaluate.ipynb",
    ):
        assert (reports_dir(proj, "weak") / name).is_file(), name
    assert champion(proj) == "1"
    summary = (reports_dir(proj, "weak") / "summary.md").read_text()
    assert summary.splitlines()[1].startswith("## ✅ Gate: promote")
    assert "gate: promote (challenger v1, champion before: none)" in res.stdout
    assert "champion: drug-classifier v1" in res.stdout
    assert res.stdout.splitlines()[-1] == f"reports: {reports_dir(proj, 'weak') / 'index.html'}"
    metrics = json.loads((reports_dir(proj, "weak") / "metrics.json").read_text())
    assert metrics["challenger"]["metrics"]["macro_f1"] >= 0.7
    holdout = json.loads((build_dir(proj, "weak") / "02_train" / "holdout.json").read_text())["holdout_ids"]
    assert metrics["data"]["holdout_rows"] == len(holdout) == 24
    tags = client(proj).get_model_version("drug-classifier", "1").tags
    assert {"nbops.git_commit", "nbops.params_hash", "nbops.data_hash", "nbops.gate.verdict"} <= set(tags)
    run_info = client(proj).get_run(tags["nbops.run_id"])
    assert run_info.info.status == "FINISHED"
    assert run_info.data.metrics["holdout_macro_f1"] == pytest.approx(
        metrics["challenger"]["metrics"]["macro_f1"]
    )


def test_second_run_skips_every_step(weak, own):
    proj = own(weak)  # a copy: the cache stamps and the store travel with the project
    res = run(proj, "weak")
    assert res.returncode == 0, res.stderr
    for step in ("00_validate", "01_eda", "02_train", "03_evaluate"):
        assert re.search(rf"- {step}\s+skipped \(unchanged\)", res.stdout), res.stdout
    assert versions(proj) == [1]


def test_a_rerun_with_nothing_changed_parses_nothing(weak, own):
    """The no-op fast path: no pydantic (params), pandas or mlflow in the process, the same
    lines as the full path's no-op; the control is the full path (`--force`) importing pydantic."""
    proj = own(weak)
    # the copy's first rerun takes the full path (the fast path's fingerprint names the project's
    # folder) and skips every step; it arms the fast path for the probe
    assert run(proj, "weak").stdout.count("skipped (unchanged)") == 4
    probe = (
        "import sys, runpy; sys.argv = ['nbops', 'run', '--params', 'params/weak.yaml'{extra}]\n"
        "try:\n    runpy.run_module('nbops', run_name='__main__')\n"
        "finally:\n    print('loaded:', [m for m in ('pydantic', 'pandas', 'mlflow') if m in sys.modules])"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}

    def loaded(extra=""):
        res = subprocess.run(
            [sys.executable, "-c", probe.format(extra=extra)],
            cwd=proj, capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
        return res.stdout

    out = loaded()
    assert "loaded: []" in out, out
    assert out.count("skipped (unchanged)") == 4
    # the champion as the registry has it now (read from the sqlite store, without mlflow)
    assert "champion: drug-classifier v1 (registry)" in out
    assert "'pydantic'" in loaded(", '--only', '01_eda'")  # the control: the full path parses params


def test_better_model_is_promoted(strong):
    proj, res = strong
    assert res.returncode == 0, res.stderr
    assert re.search(r"- 01_eda\s+skipped", res.stdout)  # only train and evaluate depend on the model
    assert champion(proj) == "2"
    assert client(proj).get_model_version("drug-classifier", "2").tags["nbops.previous_champion"] == "1"


def test_worse_model_is_not_promoted(worse):
    proj, res = worse
    assert res.returncode == 0, res.stderr
    assert versions(proj) == [1, 2, 3]
    assert champion(proj) == "2"
    assert client(proj).get_model_version_by_alias("drug-classifier", "challenger").version == 3
    summary = (reports_dir(proj, "worse") / "summary.md").read_text()
    assert summary.splitlines()[1] in ("## ⏸️ Gate: keep champion", "## ❌ Gate: reject")
    assert "champion v2" in summary


def test_rollback_moves_champion_to_the_previous_one(worse, own):
    proj = own(worse)
    res = nbops(proj, "rollback", "--params", "params/smoke.yaml")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "champion of drug-classifier: v2 -> v1"
    assert champion(proj) == "1"
    again = nbops(proj, "rollback", "--params", "params/smoke.yaml")
    assert again.returncode == 1
    assert "v1 is the first champion: there is no previous one" in again.stderr


def test_pull_request_mode_reports_without_moving_aliases(weak, own):
    proj = own(weak)  # the weak v1 champion: the PR's model would be promoted, were it allowed
    assert champion(proj) == "1"
    res = run(proj, "pr")
    assert res.returncode == 0, res.stderr
    assert champion(proj) == "1"
    assert "not promoted (promote: false)" in (reports_dir(proj, "pr") / "summary.md").read_text()
    # the other params file's reports are its own still
    assert "not promoted" not in (reports_dir(proj, "weak") / "summary.md").read_text()


def test_failing_cell_fails_the_run_keeps_the_notebook_and_moves_nothing(worse, own):
    proj = own(worse)
    before_versions, before_champion = versions(proj), champion(proj)
    notebook = proj / "notebooks" / "02_train.ipynb"
    original = notebook.read_text()
    nb = json.loads(original)
    at = next(i for i, c in enumerate(nb["cells"]) if "tracking.log_training(" in "".join(c["source"]))
    nb["cells"].insert(
        at,
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "boom",
            "metadata": {},
            "outputs": [],
            "source": "raise RuntimeError('deliberate <b>failure</b>')",
        },
    )
    notebook.write_text(json.dumps(nb))
    try:
        res = run(proj, "smoke")
        assert res.returncode == 1
        assert re.search(
            r"error: failed at 02_train, cell \d+: RuntimeError: deliberate <b>failure</b>$",
            res.stderr.strip(),
        ), res.stderr
        assert versions(proj) == before_versions and champion(proj) == before_champion
        assert (build_dir(proj, "smoke") / "02_train" / "02_train.ipynb").is_file()
        html = (reports_dir(proj, "smoke") / "02_train.html").read_text()
        assert "deliberate &lt;b&gt;failure&lt;/b&gt;" in html and "<b>failure</b>" not in html
        assert not (reports_dir(proj, "smoke") / "03_evaluate.html").exists()
        assert not (reports_dir(proj, "smoke") / "metrics.json").exists()
        summary = (reports_dir(proj, "smoke") / "summary.md").read_text()
        assert "Pipeline failed at 02\\_train, cell" in summary
        # the failed step left no stamp: the same inputs fail again instead of being skipped
        assert run(proj, "smoke").returncode == 1
    finally:
        notebook.write_text(original)


def test_bad_input_stops_before_any_kernel_and_touches_no_registry(worse, own):
    proj = own(worse)
    before_versions, before_champion = versions(proj), champion(proj)
    write_params(proj, "typo", lambda p: p["split"].update(seeed=1))
    res = run(proj, "typo")
    assert res.returncode == 1
    assert (
        res.stderr.strip()
        == "error: params/typo.yaml: unknown key 'split.seeed' (did you mean 'split.seed'?)"
    )
    bad_csv = proj / "data" / "raw" / "bad.csv"
    bad_csv.write_text("Age,Sex,BP,Cholesterol,Na_to_K,Drug\n" + "30,F,MEDIUM,HIGH,20.0,drugY\n" * 30)
    write_params(proj, "badcsv", lambda p: p["data"].update(path="data/raw/bad.csv"))
    res = run(proj, "badcsv")
    assert res.returncode == 1
    assert res.stderr.strip().startswith(
        "error: data/raw/bad.csv: column 'BP' fails isin(['HIGH', 'LOW', 'NORMAL']): 'MEDIUM' at lines 2, 3,"
    )
    assert "started" not in res.stdout
    write_params(proj, "depth", lambda p: p["model"]["params"].update(max_depth=-1))
    res = run(proj, "depth")
    assert res.returncode == 1
    assert res.stderr.startswith("error: params/depth.yaml: key 'model.params.max_depth': The 'max_depth'")
    assert "started" not in res.stdout
    assert versions(proj) == before_versions and champion(proj) == before_champion


@pytest.mark.skipif(not REAL_DRUG200.exists(), reason="reference table ../shared/data/drug200.csv absent")
def test_pipeline_runs_on_the_real_table(tmp_path, monkeypatch):
    root = make_project(tmp_path / "real")
    write_params(root, "real", lambda p: p["data"].update(path=str(REAL_DRUG200), synthetic=None))
    res = nbops(root, "run", "--params", "params/real.yaml")
    assert res.returncode == 0, res.stderr
    metrics = json.loads((reports_dir(root, "real") / "metrics.json").read_text())
    assert metrics["data"]["synthetic"] is False and metrics["data"]["holdout_rows"] == 40
    assert metrics["challenger"]["metrics"]["accuracy"] >= 0.9
    assert "real data" in (reports_dir(root, "real") / "01_eda.html").read_text()


def test_another_table_runs_with_a_params_file_only(tmp_path):
    """Nothing but params/default.yaml knows the drug columns: a different CSV (numeric and
    categorical columns with missing values, a string target) runs with its own params file."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 240
    island = rng.choice(["Biscoe", "Dream", "Torgersen"], n)
    bill = rng.normal(45, 5, n).round(1)
    species = np.where(island == "Torgersen", "Adelie", np.where(bill > 45, "Gentoo", "Chinstrap"))
    table = pd.DataFrame(
        {
            "bill_mm": bill,
            "mass_g": rng.normal(4200, 500, n).round(),
            "island": island,
            "sex": rng.choice(["male", "female"], n),
            "species": species,
        }
    )
    table.loc[rng.choice(n, 12, replace=False), "mass_g"] = np.nan
    table.loc[rng.choice(n, 9, replace=False), "sex"] = np.nan
    root = make_project(tmp_path / "other")
    table.to_csv(root / "data" / "raw" / "penguins.csv", index=False)
    (root / "params" / "penguins.yaml").write_text(
        "data:\n  path: data/raw/penguins.csv\n  target: species\n"
        "  numeric: [bill_mm, mass_g]\n  categorical: [island, sex]\n"
        "model:\n  name: random_forest\n  params: {n_estimators: 30, random_state: 0}\n  cv_folds: 3\n"
        "gate: {min_macro_f1: 0.6, min_accuracy: 0.6, tolerance: 0.0}\n"
        "registry: {model_name: penguins, experiment: penguins}\n"
    )
    res = nbops(root, "run", "--params", "params/penguins.yaml")
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((reports_dir(root, "penguins") / "metrics.json").read_text())
    assert metrics["model_name"] == "penguins"
    assert metrics["challenger"]["metrics"]["labels"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert "champion: penguins v1" in res.stdout
    assert "mass_g" in (reports_dir(root, "penguins") / "01_eda.html").read_text()
