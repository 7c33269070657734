"""Dashboard logic without Voila: widgets from a schema, predictions, batch validation, model source."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from nbops import dashboard as d
from nbops.exceptions import ModelError

SCHEMA = {
    "target": "Drug",
    "classes": ["drugA", "drugX", "drugY"],
    "numeric": {
        "Age": {"min": 17.0, "max": 73.0, "median": 45.5, "integer": True},
        "Na_to_K": {"min": 6.24, "max": 38.5, "median": 14.5035, "integer": False},
    },
    "categorical": {"Sex": ["F", "M"], "BP": ["HIGH", "LOW", "NORMAL"]},
    "rows": 96,
}
HEADER = "Age,Sex,BP,Na_to_K\n"


@pytest.fixture(scope="module")
def champion():
    from nbops.models import make_model

    rows = pd.DataFrame(
        {
            "Age": [20, 30, 40, 50, 60, 70] * 4,
            "Na_to_K": [30.0, 8.0, 12.0, 25.0, 7.0, 10.0] * 4,
            "Sex": ["F", "M"] * 12,
            "BP": ["HIGH", "LOW", "NORMAL"] * 8,
        }
    )
    y = [
        "drugY" if k > 15 else ("drugA" if a < 45 else "drugX")
        for k, a in zip(rows.Na_to_K, rows.Age, strict=True)
    ]
    model = make_model("decision_tree", {"random_state": 0}, ["Age", "Na_to_K"], ["Sex", "BP"]).fit(rows, y)
    card = {
        "name": "demo",
        "version": "3",
        "metrics": {"accuracy": 0.9},
        "labels": [],
        "confusion_matrix": [],
    }
    return d.Champion(model, SCHEMA, card)


def test_inputs_follow_the_schema():
    inputs = d.build_inputs(SCHEMA)
    assert list(inputs) == ["Age", "Na_to_K", "Sex", "BP"]
    age, ratio = inputs["Age"], inputs["Na_to_K"]
    assert (type(age).__name__, age.min, age.max, age.value) == ("BoundedIntText", 17, 73, 46)
    assert (type(ratio).__name__, ratio.min, ratio.max, ratio.value) == ("BoundedFloatText", 6.24, 38.5, 14.5)
    assert inputs["BP"].options == ("HIGH", "LOW", "NORMAL")
    age.value = 500  # a bounded box clamps to the training range
    assert age.value == 73


def test_predict_one_matches_the_model_and_orders_probabilities(champion):
    inputs = d.build_inputs(SCHEMA)
    inputs["Age"].value, inputs["Na_to_K"].value = 30, 35.0
    row = d.read_inputs(inputs)
    pred = d.predict_one(champion, row)
    assert pred.label == champion.model.predict(row)[0] == "drugY"
    assert list(pred.probabilities)[0] == "drugY" and sum(pred.probabilities.values()) == pytest.approx(1)
    html = d.prediction_html(pred)
    assert '<div class="nbops-label">drugY</div>' in html and "100%" in html


def test_html_escapes_values_from_the_model_and_the_file():
    pred = d.Prediction("<script>x</script>", {"<script>x</script>": 1.0})
    assert "<script>" not in d.prediction_html(pred)
    card = d.model_card_html(
        {"name": "<b>n</b>", "version": "1", "labels": ["<i>"], "confusion_matrix": [[1]]}
    )
    assert "<b>n</b>" not in card and "&lt;b&gt;n&lt;/b&gt;" in card


def test_batch_lists_bad_cells_with_row_column_value_and_scores_the_rest(champion):
    csv = HEADER + "30,F,HIGH,35\n200,f,low,abc\n,M,MEDIUM,inf\n\n45, m ,normal,10\n"
    result = d.score_batch(champion, csv.encode(), "p.csv")
    assert [(p.row, p.column, p.value, p.problem) for p in result.problems] == [
        (3, "Age", "200", "is outside the training range 17 to 73"),
        (3, "Na_to_K", "abc", "is not a number"),
        (4, "Age", "", "is missing"),
        (4, "Na_to_K", "inf", "is not a finite number"),
        (4, "BP", "MEDIUM", "is not one of HIGH, LOW, NORMAL"),
    ]
    assert result.scored.index.tolist() == [2, 6]  # spreadsheet rows; blank row 5 skipped
    assert result.scored.loc[6, "Sex"] == "M" and result.scored.loc[6, "BP"] == "NORMAL"
    assert result.summary() == "2 of 4 rows scored; 2 rows with problems not scored (listed below)"
    assert (
        result.scored["prediction"].tolist()
        == champion.model.predict(result.scored[champion.features]).tolist()
    )
    out = pd.read_csv(pd.io.common.StringIO(result.to_csv()))
    assert out["row"].tolist() == [2, 6] and "p_drugY" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"^up\.csv: the file is empty$"),
        (b"  \n\n", r"the file is empty"),
        (HEADER.encode(), r"^up\.csv: has a header but no data rows$"),
        (HEADER.encode() + b",,,\n", r"has a header but no data rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", r"not a CSV text file \(binary content\)"),
        ("Age;é\n".encode("latin-1"), r"not a CSV text file \(not UTF-8 text\)"),
        (b"Age,Sex\n1,F\n", r"missing columns 'Na_to_K', 'BP'; the header must name Age, Na_to_K, Sex, BP"),
        (HEADER.encode() + b'1,"F\n', r"not a well-formed CSV"),
    ],
)
def test_unscorable_files_get_one_clear_line(champion, content, message):
    with pytest.raises(d.BatchError, match=message):
        d.score_batch(champion, content, "up.csv")


def test_oversized_upload_is_refused(champion, monkeypatch):
    monkeypatch.setattr(d, "MAX_UPLOAD_BYTES", 10)
    with pytest.raises(d.BatchError, match=r"more than the 0 MB accepted|MB accepted"):
        d.score_batch(champion, (HEADER + "30,F,HIGH,35\n").encode(), "big.csv")


def upload_item(name: str, content: bytes) -> dict:
    """What FileUpload puts in its value when a browser sends a file."""
    from datetime import UTC, datetime

    return {
        "name": name,
        "type": "text/csv",
        "size": len(content),
        "content": memoryview(content),
        "last_modified": datetime.now(UTC),
    }


def test_dashboard_wires_predict_and_upload(champion):
    dash = d.Dashboard(champion)
    dash.inputs["Na_to_K"].value = 35.0
    dash.predict_button.click()
    assert 'data-update="1"' in dash.result.value and "drugY" in dash.result.value
    dash.upload.value = (upload_item("x.csv", b""),)
    assert "x.csv: the file is empty" in dash.batch.value and dash.upload.value == ()
    dash.upload.value = (upload_item("ok.csv", (HEADER + "30,F,HIGH,35\n").encode()),)
    assert "1 of 1 row scored" in dash.batch.value and 'download="predictions.csv"' in dash.batch.value


def test_model_source_env_folder_wins_else_params_names_the_model(tmp_path):
    src = d.resolve_model_source({"NBOPS_MODEL_DIR": "champion"}, cwd=tmp_path)
    assert (src.kind, src.folder) == ("folder", tmp_path / "champion")
    (tmp_path / "params").mkdir()
    (tmp_path / "notebooks").mkdir()
    from tests.conftest import REPO

    (tmp_path / "params" / "default.yaml").write_text((REPO / "params" / "smoke.yaml").read_text())
    src = d.resolve_model_source({}, cwd=tmp_path / "notebooks")
    assert (src.kind, src.model_name, src.root) == ("registry", "drug-classifier", tmp_path)
    with pytest.raises(Exception, match=r"params file not found"):
        d.resolve_model_source({"NBOPS_PARAMS": "params/nope.yaml"}, cwd=tmp_path)


def test_missing_or_broken_exported_champion_gives_a_page_not_a_traceback(tmp_path):
    with pytest.raises(d.NoChampionError, match=r"No exported champion at .*make space"):
        d.load_exported_champion(tmp_path / "none")
    folder = tmp_path / "champion"
    (folder / "model").mkdir(parents=True)
    (folder / "schema.json").write_text(json.dumps(SCHEMA))
    with pytest.raises(ModelError, match=r"model_card.json is missing"):
        d.load_exported_champion(folder)
    (folder / "model_card.json").write_text("{}")
    with pytest.raises(ModelError, match=r"not an MLflow scikit-learn model folder"):
        d.load_exported_champion(folder)
    page = d.build_app({"NBOPS_MODEL_DIR": str(folder)})
    text = " ".join(getattr(c, "value", "") for c in page.children)
    assert "The model could not be loaded" in text and "not an MLflow scikit-learn model folder" in text
    page = d.build_app({"NBOPS_MODEL_DIR": str(tmp_path / "none")})
    assert "No model to show yet" in " ".join(getattr(c, "value", "") for c in page.children)


def test_schema_without_columns_is_refused():
    with pytest.raises(ModelError, match=r"schema must list numeric columns"):
        d.check_schema({"numeric": {"Age": {"min": 1}}, "categorical": {}}, "s.json")


def test_the_page_names_the_model_version_without_javascript(champion):
    """Voila puts an output's text/plain into the served HTML: `make deploy` polls for it."""
    bundle = d.Dashboard(champion)._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    card = champion.card
    assert data["text/plain"] == f"{card['name']} v{card['version']} dashboard"
    assert "application/vnd.jupyter.widget-view+json" in data


def test_a_registry_champion_without_its_evaluation_artifacts_is_one_clear_error(tmp_path, monkeypatch):
    """A champion whose run lacks holdout_metrics.json (promoted by an older nbops, or its
    artifacts deleted) stops `make space` and the dashboard with one line naming the version and
    the file, never MLflow's traceback."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_dict(SCHEMA, d.SCHEMA_FILE)  # the schema, but no holdout_metrics.json
    client.create_registered_model("m")
    version = client.create_model_version("m", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("m", "champion", version.version)
    expected = r"^m v1 \(run \w+\): .*no readable holdout_metrics.json.*make pipeline"
    with pytest.raises(ModelError, match=expected):
        d.registry_champion_info("m")
