"""The drift check: real shifts are found, resamples of the training data are not."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from nbops.exceptions import DataError, ModelError
from nbops.layout import OWNER_FILE, build_dir, reports_dir
from nbops.ml import drift
from nbops.ml.synthetic import generate_drug_table
from nbops.params import load_params
from nbops.runner import drift as drift_command
from tests.conftest import REPO

NUMERIC = ["Age", "Na_to_K"]
CATEGORICAL = ["Sex", "BP", "Cholesterol"]


@pytest.fixture(scope="module")
def training() -> pd.DataFrame:
    return generate_drug_table(rows=200, seed=42)


def check(reference, current, **kw):
    return drift.detect_drift(reference, current, NUMERIC, CATEGORICAL, **kw)


def test_na_to_k_shifted_by_5_is_detected_and_named(training):
    current = generate_drug_table(rows=200, seed=7)
    current["Na_to_K"] = current["Na_to_K"] + 5
    report = check(training, current)
    assert report.verdict == drift.DRIFT
    assert report.drifted == ["Na_to_K"]
    row = next(c for c in report.columns if c.column == "Na_to_K")
    assert row.test == "ks" and row.p_value < report.threshold
    assert report.threshold == pytest.approx(0.05 / 5)  # Bonferroni over the five columns


def test_fresh_sample_from_the_same_source_is_not_drift(training):
    report = check(training, generate_drug_table(rows=200, seed=7))
    assert report.verdict == drift.NO_DRIFT
    assert report.drifted == []


def test_bootstrap_resamples_of_the_training_data_are_not_flagged(training):
    rng = np.random.default_rng(2024)
    trials = 200
    flagged = 0
    for _ in range(trials):
        rows = rng.integers(0, len(training), size=len(training))
        resample = training.iloc[rows].reset_index(drop=True)
        flagged += check(training, resample).verdict != drift.NO_DRIFT
    assert flagged <= 0.05 * trials, f"{flagged}/{trials} bootstrap resamples flagged as drift"


def test_category_share_change_is_detected_by_chi_squared(training):
    current = training.copy()
    current.loc[current.index[:120], "BP"] = "HIGH"
    report = check(training, current)
    assert report.drifted == ["BP"]
    bp = next(c for c in report.columns if c.column == "BP")
    assert bp.test == "chi2"
    assert bp.detail.startswith("HIGH ")  # the category that moved most comes first


def test_a_category_never_seen_in_training_is_drift(training):
    current = training.copy()
    current.loc[current.index[:60], "Cholesterol"] = "VERY HIGH"
    assert check(training, current).drifted == ["Cholesterol"]


def test_missing_values_are_ignored_not_counted_as_a_category(training):
    current = training.copy()
    current.loc[current.index[::10], ["BP", "Age"]] = None
    report = check(training, current)
    assert report.verdict == drift.NO_DRIFT
    bp = next(c for c in report.columns if c.column == "BP")
    assert bp.current_rows == 180


def test_too_few_rows_gives_insufficient_data_not_a_verdict(training):
    report = check(training, training.head(10), min_rows=30)
    assert report.verdict == drift.INSUFFICIENT
    assert {c.test for c in report.columns} == {"not tested"}
    assert report.columns[0].detail == "fewer than 30 values"
    assert report.summary_line().startswith("insufficient data")


def test_a_column_without_enough_values_is_skipped_and_the_rest_tested(training):
    current = training.copy()
    current.loc[current.index[5:], "Age"] = None
    report = check(training, current, min_rows=30)
    age = next(c for c in report.columns if c.column == "Age")
    assert age.test == "not tested" and not age.drifted
    assert report.threshold == pytest.approx(0.05 / 4)
    assert report.verdict == drift.NO_DRIFT


def test_missing_column_is_a_data_error_naming_it(training):
    with pytest.raises(DataError, match=r"reference sample has no column 'Na_to_K'"):
        check(training.drop(columns="Na_to_K"), training)


def test_alpha_must_be_a_probability(training):
    with pytest.raises(ValueError, match="alpha must be between 0 and 1, got 1.5"):
        check(training, training, alpha=1.5)


def test_report_table_puts_drifted_columns_first_and_is_json_ready(training):
    current = training.copy()
    current["Na_to_K"] = current["Na_to_K"] + 5
    report = check(training, current)
    frame = report.to_frame()
    assert frame.iloc[0]["column"] == "Na_to_K"
    assert list(frame["column"])[1:] != []
    data = report.to_dict()
    assert data["verdict"] == "drift" and data["drifted_columns"] == ["Na_to_K"]
    assert {c["column"] for c in data["columns"]} == set(NUMERIC + CATEGORICAL)


# ------------------------------------------------------------------ the champion's reference


class FakeClient:
    def __init__(self, version=None):
        self.version = version

    def get_model_version_by_alias(self, name, alias):
        if self.version is None:
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

            raise MlflowException("alias not found", error_code=RESOURCE_DOES_NOT_EXIST)
        return self.version


def test_reference_is_the_champions_training_sample(training, tmp_path):
    calls = []

    def download(run_id, artifact_path, dst):
        calls.append((run_id, artifact_path))
        path = Path(dst) / artifact_path
        training.to_parquet(path)
        return str(path)

    client = FakeClient(SimpleNamespace(version="3", run_id="run-abc"))
    frame, version = drift.load_reference("drug-classifier", client, download)
    assert version == "3"
    assert calls == [("run-abc", "reference_sample.parquet")]
    pd.testing.assert_frame_equal(frame, training)


def test_no_champion_says_how_to_get_one():
    with pytest.raises(ModelError, match=r"'drug-classifier' has no champion: run `make pipeline`"):
        drift.load_reference("drug-classifier", FakeClient(None), lambda *a: "unused")


def test_champion_without_reference_sample_says_retrain():
    def download(run_id, artifact_path, dst):
        raise FileNotFoundError(artifact_path)

    client = FakeClient(SimpleNamespace(version="2", run_id="r"))
    with pytest.raises(ModelError, match=r"drug-classifier v2: its run has no reference_sample.parquet"):
        drift.load_reference("drug-classifier", client, download)


def test_check_drift_reads_current_data_and_thresholds_from_params(training, tmp_path):
    params = load_params(REPO / "params" / "smoke.yaml")
    params = params.model_copy(update={"drift": params.drift.model_copy(update={"alpha": 0.2})})
    shifted = training.copy()
    shifted["Na_to_K"] = shifted["Na_to_K"] - 4

    def download(run_id, artifact_path, dst):
        path = Path(dst) / artifact_path
        shifted.to_parquet(path)
        return str(path)

    client = FakeClient(SimpleNamespace(version="5", run_id="r"))
    report, reference, current = drift.check_drift(params, tmp_path, client, download)
    assert report.alpha == 0.2 and report.threshold == pytest.approx(0.2 / 5)
    assert report.champion_version == "5" and report.model_name == "drug-classifier"
    assert report.drifted == ["Na_to_K"]
    assert len(current) == 120  # the smoke params' synthetic table, generated into tmp_path
    assert report.summary_line() == "drift: Na_to_K differ from the training data of drug-classifier v5"


# ------------------------------------------------------------------ what a reader sees


def test_markdown_heading_is_text_every_font_can_show(training):
    """No emoji (✅ ⚠️ ❔ are a missing-glyph box without an emoji font)."""
    for current in (training, training.assign(Na_to_K=training["Na_to_K"] + 5), training.head(5)):
        md = drift.drift_markdown(check(training, current).to_dict())
        verdict = check(training, current).verdict
        assert md.splitlines()[0] == f"## Drift check: {verdict}"
        assert max(map(ord, md)) < 0x2600, "a character outside the common fonts' ranges"


# ------------------------------------------------------------------ the command


@pytest.fixture
def command(monkeypatch, tmp_path, training):
    """main_drift with the check, the notebook and the retrain replaced; returns a setter for the
    verdict and the list of retrain calls."""
    from nbops.ml import tracking
    from nbops.runner import pipeline

    state = {"current": training, "retrain_code": 0, "retrains": []}

    def fake_check(params, root, client=None, download=None):
        if state["current"] is None:
            raise drift.NoChampionToCompare(
                f"registered model {params.registry.model_name!r} has no champion"
            )
        report = check(training, state["current"])
        report.champion_version, report.model_name = "1", params.registry.model_name
        return report, training, state["current"]

    def fake_run(*args):
        state["retrains"].append(args)
        return state["retrain_code"]

    monkeypatch.setattr(tracking, "configure_tracking", lambda root: "sqlite:///unused")
    monkeypatch.setattr(drift, "check_drift", fake_check)
    drift_html = reports_dir(tmp_path, "smoke") / "drift.html"
    monkeypatch.setattr(drift_command, "render_drift_report", lambda *a: drift_html)
    monkeypatch.setattr(pipeline, "main_run", fake_run)

    def run(*, drifted: bool | None, **flags) -> int:
        """drifted=None: the registry has no champion yet."""
        if drifted is None:
            state["current"] = None
        else:
            state["current"] = training.assign(Na_to_K=training["Na_to_K"] + 5) if drifted else training
        return drift_command.main_drift(str(REPO / "params" / "smoke.yaml"), str(tmp_path), **flags)

    run.state = state
    return run


def test_drift_found_exits_0_by_default_and_3_with_fail_on_drift(command, capsys):
    assert command(drifted=True) == drift_command.EXIT_OK == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("drift: Na_to_K differ")
    assert command(drifted=True, fail_on_drift=True) == drift_command.EXIT_DRIFT == 3


def test_no_drift_exits_0_even_with_fail_on_drift(command):
    assert command(drifted=False, fail_on_drift=True) == 0


def test_fail_on_drift_after_a_successful_retrain_still_exits_3(command):
    assert command(drifted=True, retrain=True, fail_on_drift=True) == 3
    assert len(command.state["retrains"]) == 1


def test_a_failed_retrain_exits_with_its_code_not_3(command):
    command.state["retrain_code"] = 1
    assert command(drifted=True, retrain=True, fail_on_drift=True) == drift_command.EXIT_ERROR == 1


def test_retrain_not_needed_without_drift(command, capsys):
    assert command(drifted=False, retrain=True, fail_on_drift=True) == 0
    assert command.state["retrains"] == []
    assert "retrain: not needed (no drift)" in capsys.readouterr().out


def test_no_champion_without_retrain_says_so_in_one_line_and_exits_0(command, tmp_path, capsys):
    assert command(drifted=None, fail_on_drift=True) == drift_command.EXIT_OK
    assert capsys.readouterr().out == "no champion yet: nothing to compare; run the pipeline\n"
    assert command.state["retrains"] == []
    assert not (reports_dir(tmp_path, "smoke") / "drift.json").exists()  # no verdict to read
    drift_md = reports_dir(tmp_path, "smoke") / "drift.md"
    assert "no champion yet" in drift_md.read_text()  # the job summary says why


@pytest.mark.parametrize("code", [0, 1, 2])
def test_no_champion_with_retrain_runs_the_pipeline_and_exits_with_its_code(command, capsys, code):
    command.state["retrain_code"] = code
    assert command(drifted=None, retrain=True, fail_on_drift=True) == code
    assert len(command.state["retrains"]) == 1
    assert command.state["retrains"][0][0].endswith("smoke.yaml")  # the params the check was given
    assert capsys.readouterr().out.splitlines() == [
        "no champion yet: nothing to compare; run the pipeline",
        "retrain: no champion yet; running the pipeline (promotion through the gate)",
    ]


def test_an_error_exits_1_and_says_why(command, tmp_path, capsys):
    assert drift_command.main_drift(str(tmp_path / "missing.yaml"), str(tmp_path), fail_on_drift=True) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing.yaml'}: params file not found\n"


def test_failing_report_cell_is_counted_from_1(monkeypatch, tmp_path):
    """papermill's cell_index is 0-based; the message counts from 1, like the runner's."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from nbops.exceptions import StepError
    from nbops.runner import notebook_html, preload

    def fail(*args, **kwargs):
        raise PapermillExecutionError(5, 3, "plot(...)", "RuntimeError", "deliberate", [])

    monkeypatch.setattr(preload, "skip_unused_imports", lambda: None)  # keep this process's imports
    monkeypatch.setattr(papermill, "execute_notebook", fail)
    monkeypatch.setattr(notebook_html, "render_notebook_html", lambda *a, **k: None)
    params = load_params(REPO / "params" / "smoke.yaml")
    with pytest.raises(StepError, match=r"^failed at 04_drift, cell 6: RuntimeError: deliberate$") as exc:
        drift_command.render_drift_report(tmp_path, tmp_path, params, 30, reports_dir(tmp_path, "smoke"))
    assert exc.value.cell_index == 6


def test_a_params_file_whose_name_another_owns_is_refused_before_any_check(command, tmp_path, capsys):
    owner = tmp_path / "params" / "smoke.yaml"
    owner.parent.mkdir(parents=True)
    owner.write_text("{}\n")
    build_dir(tmp_path, "smoke").mkdir(parents=True)
    (build_dir(tmp_path, "smoke") / OWNER_FILE).write_text("params/smoke.yaml\n")
    assert command(drifted=True, retrain=True) == drift_command.EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "the name 'smoke' (build/smoke/, reports/smoke/) belongs to params/smoke.yaml" in err[0]
    )
    assert command.state["retrains"] == [] and not reports_dir(tmp_path, "smoke").exists()


def test_the_drift_check_writes_under_the_build_lock_a_run_takes(tmp_path, monkeypatch):
    """A run of the same params file writes the same build/<name>/ and reports/<name>/."""
    import fcntl

    from tests.conftest import make_project

    root = make_project(tmp_path / "project")
    held = []

    def write_verdict(root_path, params, folders, params_file):
        with open(folders.build / ".lock", "a+") as other:  # as a second run would open it
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(True)
            else:
                held.append(False)
                fcntl.flock(other, fcntl.LOCK_UN)
        return None, True

    monkeypatch.setattr(drift_command, "_write_verdict", write_verdict)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert drift_command.main_drift("params/smoke.yaml", str(root)) == 0
    assert held == [True]
