"""Dashboard logic without Voila: widgets from a schema, predictions, batch validation, model source."""

from __future__ import annotations

import json
import os

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


@pytest.fixture(scope="module")
def penguins():
    """(training table, champion) of the penguins-like table in tests/browser/penguins.py."""
    from tests.browser.penguins import fit_penguins, penguins_table

    table = penguins_table()
    model, schema = fit_penguins(table)
    return table, d.Champion(model, schema, {"name": "penguins", "version": "1"})


def test_inputs_follow_the_schema():
    inputs = d.build_inputs(SCHEMA)
    assert list(inputs) == ["Age", "Na_to_K", "Sex", "BP"]
    age, ratio = inputs["Age"], inputs["Na_to_K"]
    assert (type(age).__name__, age.min, age.max, age.value) == ("BoundedIntText", 17, 73, 46)
    assert (type(ratio).__name__, ratio.min, ratio.max, ratio.value) == ("BoundedFloatText", 6.24, 38.5, 14.5)
    assert inputs["BP"].options == ("HIGH", "LOW", "NORMAL") and inputs["BP"].value == "HIGH"
    age.value = 500  # a bounded box clamps to the training range
    assert age.value == 73


def test_dropdowns_start_at_the_most_frequent_value_and_labels_take_their_own_width():
    inputs = d.build_inputs(SCHEMA, {"BP": "NORMAL", "Sex": "X"})  # X: not an option, so the first
    assert (inputs["BP"].value, inputs["Sex"].value) == ("NORMAL", "F")
    # 'initial': each label as wide as its text (above its input), not a fixed 9em that cut
    # `flipper_length_mm` to `flipper_length_…`
    assert {w.style.description_width for w in inputs.values()} == {"initial"}


def test_the_page_starts_at_the_penguins_most_frequent_island_and_sex(penguins):
    """The training table has more Dream than Biscoe and more Male than Female: the form starts
    there, not at the alphabetically first value the schema lists first."""
    table, champion = penguins
    dash = d.Dashboard(champion)
    assert champion.schema["categorical"]["island"][0] == "Biscoe"
    assert dash.inputs["island"].value == table["island"].mode()[0] == "Dream"
    assert dash.inputs["sex"].value == table["sex"].mode()[0] == "Male"


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


def test_batch_refuses_only_cells_the_model_cannot_take(champion):
    csv = HEADER + "30,F,HIGH,35\n200,f,low,abc\n,M,MEDIUM,inf\n\n45, m ,normal,10\n"
    result = d.score_batch(champion, csv.encode(), "p.csv")
    assert [(p.row, p.column, p.value, p.problem) for p in result.problems] == [
        (3, "Na_to_K", "abc", "is not a number"),
        (4, "Na_to_K", "inf", "is not a finite number"),
    ]
    assert result.scored.index.tolist() == [2, 6]  # spreadsheet rows; blank row 5 skipped
    assert result.scored.loc[6, "Sex"] == "M" and result.scored.loc[6, "BP"] == "NORMAL"
    assert result.summary() == "2 of 4 rows scored; 2 rows with problems not scored (listed below)"
    assert (
        result.scored["prediction"].tolist()
        == champion.model.predict(result.scored[champion.features]).tolist()
    )
    out = pd.read_csv(pd.io.common.StringIO(result.to_csv()), keep_default_na=False)
    assert out["row"].tolist() == [2, 6] and "p_drugY" in out and out["warnings"].tolist() == ["", ""]


PENGUIN_HEADER = "bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,island,sex\n"


def test_batch_scores_missing_and_out_of_range_values_and_says_so(penguins):
    """The model's pipeline imputes missing values and takes any number: such rows are scored,
    with a `warnings` column; only a cell the model cannot take keeps its row out."""
    _, champion = penguins
    csv = PENGUIN_HEADER + (
        "39.1,18.7,181,3750,Torgersen,Male\n"  # row 2: clean
        "45.2,16.1,,4100,Dream,\n"  # row 3: two missing values
        "32.1,17.0,190,3600,Biscoe,Female\n"  # row 4: below the training range
        "47.5,15.0,217,5080,Atlantis,Female\n"  # row 5: an island the encoder has never seen
        "46.0,deep,200,4200,Dream,Male\n"  # row 6: not a number
    )
    result = d.score_batch(champion, csv.encode(), "penguins.csv")
    assert [p.text() for p in result.problems] == ["bill_depth_mm 'deep' is not a number"]
    assert result.scored.index.tolist() == [2, 3, 4, 5]
    assert result.scored["warnings"].to_dict() == {
        2: "",
        3: "flipper_length_mm (empty) is missing; the model fills in 198; "
        "sex (empty) is missing; the model fills in 'Male'",
        4: "bill_length_mm '32.1' is outside the training range 33.1 to 59.6",
        5: "island 'Atlantis' is not one of Biscoe, Dream, Torgersen; the model scores it as none of them",
    }
    assert result.summary() == (
        "4 of 5 rows scored (3 with warnings, listed below); 1 row with problems not scored (listed below)"
    )
    rows = result.scored[champion.features]
    assert rows.loc[3, ["flipper_length_mm", "sex"]].isna().all()  # the model, not us, fills them in
    assert result.scored["prediction"].tolist() == champion.model.predict(rows).tolist()
    out = pd.read_csv(pd.io.common.StringIO(result.to_csv()), keep_default_na=False)
    assert (
        out.columns[-1] == "warnings"
        and out.set_index("row")["warnings"].to_dict() == result.scored["warnings"].to_dict()
    )
    page = d.batch_html(result, "penguins.csv")
    assert 'class="nbops-warnings"' in page and "outside the training range 33.1 to 59.6" in page
    assert "the model fills in 198" in page and "deep" in page


def test_what_the_model_tolerates_is_read_from_its_own_pipeline():
    """Missing values are scored only where a step imputes them, unseen categories only where
    the encoder ignores them; a pipeline without either gets the cell refused."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.tree import DecisionTreeClassifier

    rows = pd.DataFrame({"Age": [20.0, 50.0] * 6, "Na_to_K": [30.0, 8.0] * 6, "Sex": ["F", "M"] * 6})
    rows["BP"] = ["HIGH", "LOW", "NORMAL"] * 4
    pre = ColumnTransformer(
        [
            ("num", "passthrough", ["Age", "Na_to_K"]),
            ("cat", OneHotEncoder(handle_unknown="error"), ["Sex", "BP"]),
        ]
    )
    strict = Pipeline([("preprocess", pre), ("model", DecisionTreeClassifier())]).fit(rows, ["a", "b"] * 6)
    assert d.read_tolerance(strict, SCHEMA) == d.ModelTolerance()
    champion = d.Champion(strict, SCHEMA, {})
    result = d.score_batch(
        champion, (HEADER + "30,F,MEDIUM,20\n,M,HIGH,20\n40,F,LOW,250\n").encode(), "s.csv"
    )
    assert [p.text() for p in result.problems] == [
        "BP 'MEDIUM' is not one of HIGH, LOW, NORMAL",
        "Age (empty) is missing",
    ]
    assert result.scored["warnings"].tolist() == ["Na_to_K '250' is outside the training range 6.24 to 38.5"]


def test_a_row_with_too_few_or_too_many_fields_is_refused_not_shifted(champion):
    """pandas fills a short row with NaN (it would pass for missing values) and, when every row
    has one field more than the header, takes the first field as the index (shifting all)."""
    short = d.score_batch(champion, (HEADER + "30,F,HIGH,35\n40,M,20\n50,F,LOW,9,x\n").encode(), "r.csv")
    assert [(p.row, p.text()) for p in short.problems] == [
        (3, "has 3 fields; the header has 4"),
        (4, "has 5 fields; the header has 4"),
    ]
    assert short.scored.index.tolist() == [2] and short.rows == 3
    every = d.score_batch(champion, (HEADER + "30,F,HIGH,35,x\n40,M,LOW,20,y\n").encode(), "w.csv")
    assert [p.row for p in every.problems] == [2, 3] and every.scored.empty
    # empty trailing fields, as some spreadsheets export them, are no problem
    trailing = "Age,Sex,BP,Na_to_K,\n30,F,HIGH,35\n40,M,LOW,20,,\n"
    assert d.score_batch(champion, trailing.encode(), "t.csv").scored.index.tolist() == [2, 3]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"^up\.csv: the file is empty$"),
        (b"  \n\n", r"the file is empty"),
        (HEADER.encode(), r"^up\.csv: has a header but no data rows$"),
        (HEADER.encode() + b",,,\n", r"has a header but no data rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", r"not a CSV text file \(binary content\)"),
        (
            HEADER.encode() + b"30,F,HIGH,35\n" * 2000 + b"\x00\x01\x02",
            r"^up\.csv: not a CSV text file \(binary content\)$",
        ),
        (b"\x01\x02\x03\x04\x05\x06", r"^up\.csv: not a CSV text file \(binary content\)$"),
        (b"Age,Sex\x1b[0m,BP,Na_to_K\n1,F,HIGH,2\n", r"not a CSV text file \(binary content\)"),
        (
            "Age,Sex,BP,Na_to_K\n30,é,HIGH,35\n".encode("latin-1"),
            r"^up\.csv: not a CSV text file \(not UTF-8 text: byte 0xe9 on line 2; save it as CSV UTF-8\)$",
        ),
        (b"Age,Sex,Sex,BP,Na_to_K\n1,F,F,HIGH,2\n", r"the header names 'Sex' more than once"),
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
    assert "nbops-upload-again" in dash.upload._dom_classes  # the button then says "Upload another CSV"
    dash.upload.value = (upload_item("ok.csv", (HEADER + "30,F,HIGH,35\n").encode()),)
    assert "1 of 1 row scored" in dash.batch.value and 'download="predictions.csv"' in dash.batch.value
    assert dash.upload.value == () and dash.upload.icon == ""  # no icon: nothing for fontawesome to draw


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


# ---------------------------------------------------------------- the Voila server's side (deploy/voila)


def test_voila_py_serves_the_page_with_the_nbops_template(monkeypatch):
    """deploy/voila/voila.py, loaded as Voila loads it, names the nbops template and puts its
    folder on Jupyter's data path, where Voila resolves it on top of its own lab template."""
    from traitlets.config.loader import PyFileConfigLoader
    from voila.paths import collect_template_paths

    from nbops import voila_kernels as vk
    from tests.conftest import REPO

    monkeypatch.setenv("JUPYTER_PATH", "/elsewhere")
    config = PyFileConfigLoader("voila.py", path=str(REPO / "deploy" / "voila")).load_config()
    assert config.VoilaConfiguration.template == vk.PAGE_TEMPLATE == "nbops"
    assert os.environ["JUPYTER_PATH"] == os.pathsep.join([str(vk.JUPYTER_DATA), "/elsewhere"])
    vk.use_page_template(config)  # twice: still once on the path
    assert os.environ["JUPYTER_PATH"].count(str(vk.JUPYTER_DATA)) == 1
    paths = collect_template_paths(["voila", "nbconvert"], "nbops", prune=True)
    assert paths[0] == str(vk.JUPYTER_DATA / "voila" / "templates" / "nbops")
    assert any(p.endswith(os.path.join("voila", "templates", "lab")) for p in paths)
    template = (vk.JUPYTER_DATA / "voila" / "templates" / "nbops" / "index.html.j2").read_text()
    assert "{%- extends 'lab/index.html.j2' -%}" in template


def voila_json() -> dict:
    from tests.conftest import REPO

    return json.loads((REPO / "deploy" / "voila" / "voila.json").read_text())


def test_voila_kernels_get_transport_encryption():
    """jupyter_client's default ('disabled') has every kernel log `Kernel is running over TCP
    without encryption`; 'auto' provisions CurveZMQ keys where the kernelspec supports them."""
    assert voila_json()["MappingKernelManager"]["transport_encryption"] == "auto"


def test_only_tornados_ping_clamp_warning_is_dropped_and_the_ping_settings_stay_safe(caplog):
    import logging
    import logging.config

    voila = voila_json()["Voila"]
    settings = voila["tornado_settings"]
    # jupyter_server closes a websocket whose last pong is older than the timeout: it must exceed
    # the interval (with both at 300 ms every websocket was closed at its first ping)
    assert settings.get("ws_ping_timeout", 90_000) > settings.get("ws_ping_interval", 30_000)
    logger = logging.getLogger("tornado.general")
    before = list(logger.filters)
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False, **voila["logging_config"]})
    try:
        with caplog.at_level(logging.WARNING, logger="tornado.general"):
            logger.warning(
                "The websocket_ping_timeout (90000) cannot be longer than the websocket_ping_interval "
                "(30000).\nSetting websocket_ping_timeout=30000"
            )
            logger.warning("WebSocket ping timeout after 90001 ms.")
    finally:
        logger.filters[:] = before
    assert [r.getMessage() for r in caplog.records] == ["WebSocket ping timeout after 90001 ms."]
