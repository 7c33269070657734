"""Dashboard logic without Voila: widgets from a schema, predictions, batch validation, model source."""

from __future__ import annotations

import asyncio
import json
import os
import re

import pandas as pd
import pytest

from nbops.exceptions import ModelError
from nbops.serve import batch, dashboard, predict
from nbops.serve import champion as champ
from nbops.serve import page as html_page
from tests.conftest import run_coroutine

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
    from nbops.ml.models import make_model

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
    return champ.Champion(model, SCHEMA, card)


@pytest.fixture(scope="module")
def penguins():
    """(training table, champion) of the penguins-like table in tests/browser/penguins.py."""
    from tests.browser.penguins import fit_penguins, penguins_table

    table = penguins_table()
    model, schema = fit_penguins(table)
    return table, champ.Champion(model, schema, {"name": "penguins", "version": "1"})


def test_inputs_follow_the_schema():
    inputs = predict.build_inputs(SCHEMA)
    assert list(inputs) == ["Age", "Na_to_K", "Sex", "BP"]
    age, ratio = inputs["Age"], inputs["Na_to_K"]
    assert (type(age).__name__, age.min, age.max, age.value) == ("BoundedIntText", 17, 73, 46)
    assert (type(ratio).__name__, ratio.min, ratio.max, ratio.value) == ("BoundedFloatText", 6.24, 38.5, 14.5)
    assert inputs["BP"].options == ("HIGH", "LOW", "NORMAL") and inputs["BP"].value == "HIGH"
    age.value = 500  # a bounded box clamps to the training range
    assert age.value == 73


def test_dropdowns_start_at_the_most_frequent_value_and_labels_take_their_own_width():
    inputs = predict.build_inputs(SCHEMA, {"BP": "NORMAL", "Sex": "X"})  # X: not an option, so the first
    assert (inputs["BP"].value, inputs["Sex"].value) == ("NORMAL", "F")
    # 'initial': each label as wide as its text (above its input), not a fixed 9em that cut
    # `flipper_length_mm` to `flipper_length_…`
    assert {w.style.description_width for w in inputs.values()} == {"initial"}


def test_the_page_starts_at_the_penguins_most_frequent_island_and_sex(penguins):
    """The training table has more Dream than Biscoe and more Male than Female: the form starts
    there, not at the alphabetically first value the schema lists first."""
    table, champion = penguins
    dash = dashboard.Dashboard(champion)
    assert champion.schema["categorical"]["island"][0] == "Biscoe"
    assert dash.inputs["island"].value == table["island"].mode()[0] == "Dream"
    assert dash.inputs["sex"].value == table["sex"].mode()[0] == "Male"


def test_predict_one_matches_the_model_and_orders_probabilities(champion):
    inputs = predict.build_inputs(SCHEMA)
    inputs["Age"].value, inputs["Na_to_K"].value = 30, 35.0
    row = predict.read_inputs(inputs)
    pred = predict.predict_one(champion, row)
    assert pred.label == champion.model.predict(row)[0] == "drugY"
    assert list(pred.probabilities)[0] == "drugY" and sum(pred.probabilities.values()) == pytest.approx(1)
    html = html_page.prediction_html(pred)
    assert '<div class="nbops-label">drugY</div>' in html and "100%" in html


def test_html_escapes_values_from_the_model_and_the_file():
    pred = predict.Prediction("<script>x</script>", {"<script>x</script>": 1.0})
    assert "<script>" not in html_page.prediction_html(pred)
    card = html_page.model_card_html(
        {"name": "<b>n</b>", "version": "1", "labels": ["<i>"], "confusion_matrix": [[1]]}
    )
    assert "<b>n</b>" not in card and "&lt;b&gt;n&lt;/b&gt;" in card


def test_batch_refuses_only_cells_the_model_cannot_take(champion):
    csv = HEADER + "30,F,HIGH,35\n200,f,low,abc\n,M,MEDIUM,inf\n\n45, m ,normal,10\n"
    result = batch.score_batch(champion, csv.encode(), "p.csv")
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
    result = batch.score_batch(champion, csv.encode(), "penguins.csv")
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
    page = html_page.batch_html(result, "penguins.csv")
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
    assert champ.read_tolerance(strict, SCHEMA) == champ.ModelTolerance()
    champion = champ.Champion(strict, SCHEMA, {})
    result = batch.score_batch(
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
    short = batch.score_batch(champion, (HEADER + "30,F,HIGH,35\n40,M,20\n50,F,LOW,9,x\n").encode(), "r.csv")
    assert [(p.row, p.text()) for p in short.problems] == [
        (3, "has 3 fields; the header has 4"),
        (4, "has 5 fields; the header has 4"),
    ]
    assert short.scored.index.tolist() == [2] and short.rows == 3
    every = batch.score_batch(champion, (HEADER + "30,F,HIGH,35,x\n40,M,LOW,20,y\n").encode(), "w.csv")
    assert [p.row for p in every.problems] == [2, 3] and every.scored.empty
    # empty trailing fields, as some spreadsheets export them, are no problem
    trailing = "Age,Sex,BP,Na_to_K,\n30,F,HIGH,35\n40,M,LOW,20,,\n"
    assert batch.score_batch(champion, trailing.encode(), "t.csv").scored.index.tolist() == [2, 3]


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
    with pytest.raises(batch.BatchError, match=message):
        batch.score_batch(champion, content, "up.csv")


def test_oversized_upload_is_refused_with_its_size_and_the_limit(champion):
    content = (HEADER + "30,F,HIGH,35\n").encode().ljust(12 * 2**20, b" ")
    with pytest.raises(batch.BatchError, match=r"^big\.csv: the file is 12\.0 MB; the limit is 5 MB$"):
        batch.score_batch(champion, content, "big.csv")


def test_a_file_far_wider_than_the_model_is_refused_by_its_header_before_it_is_parsed(champion):
    """A 500k-column 3.9 MB upload took minutes of CPU (the duplicate check was quadratic) and
    1.4 GB: the header alone now says it is too wide."""
    import time

    extra = [f"c{i}" for i in range(500_000)]
    wide = (
        ",".join(["Age", "Sex", "BP", "Na_to_K", *extra])
        + "\n"
        + ",".join(["30", "F", "HIGH", "35"] + ["1"] * 500_000)
    )
    assert 3.5e6 < len(wide) < 5 * 2**20
    start = time.perf_counter()
    with pytest.raises(
        batch.BatchError,
        match=r"^wide\.csv: the header has 500004 columns; at most 1004 are read "
        r"\(the model's 4 and 1000 others\)$",
    ):
        batch.score_batch(champion, wide.encode(), "wide.csv")
    assert time.perf_counter() - start < 2
    row = HEADER + "30,F,HIGH,35\n" + ",".join(["30", "F", "HIGH", "35"] + ["1"] * 2000) + "\n"
    with pytest.raises(batch.BatchError, match=r"^row\.csv: row 3 has 2004 fields; at most 1004 are read"):
        batch.score_batch(champion, row.encode(), "row.csv")
    # a few hundred extra columns, as exports have them, are read and ignored
    some = ",".join(["Age", "Sex", "BP", "Na_to_K", *extra[:300]]) + "\n" + "30,F,HIGH,35" + ",x" * 300 + "\n"
    assert batch.score_batch(champion, some.encode(), "some.csv").scored.index.tolist() == [2]


def test_a_huge_cell_is_cut_to_80_characters_in_the_tables_and_messages(champion):
    """One 4 MB cell was printed whole in the problems table (the page, its widget message)."""
    huge = "4" + "x" * 4_000_000
    content = (HEADER + "30,F,HIGH,35\n" + f"{huge},F,HIGH,35\n" + f"40,M,{'H' * 200_000},20\n").encode()
    result = batch.score_batch(champion, content, "cell.csv")
    assert [(p.row, p.column) for p in result.problems] == [(3, "Age")]
    assert result.problems[0].value == huge  # the value itself is kept; only what is shown is cut
    page = html_page.batch_html(result, "cell.csv")
    page_without_download = re.sub(r'href="data:text/csv;base64,[^"]*"', "", page)
    assert len(page_without_download) < 5_000
    shown = re.search(r'<table class="nbops-problems">.*?<td>3</td><td>Age</td><td>([^<]*)</td>', page).group(
        1
    )
    assert shown == "&#x27;" + huge[:80] + "…&#x27;"
    warned = result.scored.loc[4, "warnings"]
    assert warned == f"BP '{'H' * 80}…' is not one of HIGH, LOW, NORMAL; the model scores it as none of them"
    assert len(html_page.message_html(result.problems[0].text())) < 300


FORMULAS = ["=cmd|' /C calc'!A0", "+F", "@SUM(1+1)", "-2+3"]


def test_the_downloaded_csv_neutralises_formulas_in_text_cells_and_keeps_numbers(tmp_path):
    """A champion trained on categories (and labels) a spreadsheet would run as formulas: every
    text cell of the download that starts with = + - @ tab or CR gets a leading quote (OWASP);
    numbers, negative ones included, stay numbers."""
    import csv
    import io

    from nbops.ml.models import make_model

    train = pd.DataFrame(
        {
            "delta": [-1.5, -0.5, 0.5, 1.5, -2.0, 2.0] * 6,
            "=code": FORMULAS * 9,
            "plain": ["a", "b", "c"] * 12,
        }
    )
    labels = ['=HYPERLINK("http://evil")' if v < 0 else "safe" for v in train["delta"]]
    model = make_model("decision_tree", {"random_state": 0}, ["delta"], ["=code", "plain"]).fit(train, labels)
    schema = {
        "target": "label",
        "numeric": {"delta": {"min": -2.0, "max": 2.0, "median": 0.0}},
        "categorical": {"=code": FORMULAS, "plain": ["a", "b", "c"]},
    }
    champion = champ.Champion(model, schema, {})
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["delta", "=code", "plain"])
    writer.writerows([[-1.5, f, "@x"] for f in FORMULAS] + [[1.5, "=unseen()", "a"]])
    result = batch.score_batch(champion, rows.getvalue().encode(), "f.csv")
    assert len(result.scored) == len(FORMULAS) + 1
    out = list(csv.reader(io.StringIO(result.to_csv())))
    header, body = out[0], out[1:]
    assert header[:4] == ["row", "delta", "'=code", "plain"]
    dangerous = tuple(batch.FORMULA_START)
    for record in body:
        for cell in record:
            assert not cell.startswith(dangerous) or _is_number(cell), record
    by_col = {name: [r[i] for r in body] for i, name in enumerate(header)}
    assert by_col["delta"] == ["-1.5000"] * len(FORMULAS) + ["1.5000"]  # numbers, not '-1.5000
    assert by_col["'=code"] == ["'" + f for f in FORMULAS] + ["'=unseen()"]
    assert by_col["plain"] == ["'@x"] * len(FORMULAS) + ["a"]
    assert set(by_col["prediction"]) <= {'\'=HYPERLINK("http://evil")', "safe"}
    assert '\'=HYPERLINK("http://evil")' in by_col["prediction"]
    assert by_col["warnings"][-1].startswith("'=code '=unseen()' is not one of")
    # the table on the page is HTML, escaped: the values are shown as they are
    assert "=cmd|&#x27; /C calc&#x27;!A0" in html_page.batch_html(result, "f.csv")


def test_formula_neutralising_covers_tab_and_cr_and_leaves_numbers_and_missing_cells():
    df = pd.DataFrame(
        {
            "text": pd.Series(["\tx", "\ry", "ok", None, "-1.5"], dtype="str"),
            "obj": pd.Series(["=1", 2, None, "a-b", "@"], dtype=object),
            "num": [-1.5, 2.0, float("nan"), -3.0, 0.0],
        },
        index=pd.RangeIndex(5, name="=row"),
    )
    out = batch.neutralise_formulas(df)
    assert out["text"].tolist()[:3] == ["'\tx", "'\ry", "ok"] and out["text"].isna().tolist()[3]
    assert out["text"].tolist()[4] == "'-1.5"  # text in a text column is text, whatever it reads like
    assert out["obj"].tolist()[:2] == ["'=1", 2] and out["obj"].tolist()[3:] == ["a-b", "'@"]
    assert out["num"].tolist()[:2] == [-1.5, 2.0] and out["num"].dtype == "float64"
    assert out.index.name == "'=row" and df.index.name == "=row"  # the original is left alone
    assert batch.neutralise_formula(-1.5) == -1.5 and batch.neutralise_formula("") == ""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
    dash = dashboard.Dashboard(champion)
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
    src = champ.resolve_model_source({"NBOPS_MODEL_DIR": "champion"}, cwd=tmp_path)
    assert (src.kind, src.folder) == ("folder", tmp_path / "champion")
    (tmp_path / "params").mkdir()
    (tmp_path / "notebooks").mkdir()
    from tests.conftest import REPO

    (tmp_path / "params" / "default.yaml").write_text((REPO / "params" / "smoke.yaml").read_text())
    src = champ.resolve_model_source({}, cwd=tmp_path / "notebooks")
    assert (src.kind, src.model_name, src.root) == ("registry", "drug-classifier", tmp_path)
    with pytest.raises(Exception, match=r"params file not found"):
        champ.resolve_model_source({"NBOPS_PARAMS": "params/nope.yaml"}, cwd=tmp_path)


def test_missing_or_broken_exported_champion_gives_a_page_not_a_traceback(tmp_path):
    with pytest.raises(champ.NoChampionError, match=r"No exported champion at .*make space"):
        champ.load_exported_champion(tmp_path / "none")
    folder = tmp_path / "champion"
    (folder / "model").mkdir(parents=True)
    (folder / "schema.json").write_text(json.dumps(SCHEMA))
    with pytest.raises(ModelError, match=r"model_card.json is missing"):
        champ.load_exported_champion(folder)
    (folder / "model_card.json").write_text("{}")
    with pytest.raises(ModelError, match=r"not an MLflow scikit-learn model folder"):
        champ.load_exported_champion(folder)
    page = dashboard.build_app({"NBOPS_MODEL_DIR": str(folder)})
    text = " ".join(getattr(c, "value", "") for c in page.children)
    assert "The model could not be loaded" in text and "not an MLflow scikit-learn model folder" in text
    page = dashboard.build_app({"NBOPS_MODEL_DIR": str(tmp_path / "none")})
    assert "No model to show yet" in " ".join(getattr(c, "value", "") for c in page.children)


def test_schema_without_columns_is_refused():
    with pytest.raises(ModelError, match=r"schema must list numeric columns"):
        champ.check_schema({"numeric": {"Age": {"min": 1}}, "categorical": {}}, "s.json")


def test_the_page_names_the_model_version_without_javascript(champion):
    """Voila puts an output's text/plain into the served HTML: `make deploy` polls for it."""
    bundle = dashboard.Dashboard(champion)._repr_mimebundle_()
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
        mlflow.log_dict(SCHEMA, champ.SCHEMA_FILE)  # the schema, but no holdout_metrics.json
    client.create_registered_model("m")
    version = client.create_model_version("m", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("m", "champion", version.version)
    expected = r"^m v1 \(run \w+\): .*no readable holdout_metrics.json.*make pipeline"
    with pytest.raises(ModelError, match=expected):
        champ.registry_champion_info("m")


# ---------------------------------------------------------------- the Voila server's side (deploy/voila)


def test_voila_py_serves_the_page_with_the_nbops_template(monkeypatch):
    """deploy/voila/voila.py, loaded as Voila loads it, names the nbops template and puts its
    folder on Jupyter's data path, where Voila resolves it on top of its own lab template."""
    from traitlets.config.loader import PyFileConfigLoader
    from voila.paths import collect_template_paths

    from nbops.serve import voila_kernels as vk
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


def test_voila_forks_its_page_kernels_with_the_kernel_manager_that_knows_how():
    from jupyter_server.services.kernels.kernelmanager import ServerKernelManager
    from traitlets.utils.importstring import import_item

    name = voila_json()["BoundedKernelManager"]["kernel_manager_class"]
    assert name == "nbops.serve.voila_forks.ForkingKernelManager"
    manager = import_item(name)
    assert issubclass(manager, ServerKernelManager) and manager().fork_kernels is True


@pytest.mark.parametrize(
    ("env", "registry"),
    [({"NBOPS_MODEL_DIR": "/srv/champion"}, False), ({}, True)],
    ids=["exported champion (the Space)", "the tracking store"],
)
def test_a_page_kernels_imports_are_the_dashboards_and_mlflow_only_for_the_registry(env, registry):
    import sys

    from nbops.serve.dashboard import PRELOAD, PRELOAD_REGISTRY, preload

    names = preload(env)
    assert names == [*PRELOAD, *(PRELOAD_REGISTRY if registry else ())]
    assert all(n in sys.modules for n in names)


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


def test_voila_json_bounds_kernels_and_lets_an_oversized_upload_reach_the_kernel():
    """The caps are on (and read by the manager Voila runs); the websocket takes a message well
    above the upload limit, so the dashboard's own check answers a too-big file (tornado's
    default 10 MiB dropped the websocket of a 12 MB upload, silently)."""
    from traitlets.config import Config

    from nbops.serve.voila_kernels import BoundedKernelManager

    config = voila_json()
    assert (
        config["VoilaConfiguration"]["multi_kernel_manager_class"]
        == "nbops.serve.voila_kernels.BoundedKernelManager"
    )
    manager = BoundedKernelManager(config=Config(config))
    assert (manager.max_kernels, manager.max_kernels_per_client) == (8, 2)
    assert manager.max_kernels > config["VoilaConfiguration"]["default_pool_size"]
    assert 0 < manager.unconnected_cull_timeout < manager.cull_idle_timeout
    assert manager.cull_interval <= manager.unconnected_cull_timeout / 2  # culled within 1.5× its timeout
    limit = config["Voila"]["tornado_settings"]["websocket_max_message_size"]
    assert limit >= 16 * 2**20 and limit >= 3 * batch.MAX_UPLOAD_BYTES


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.5", "", "203.0.113.5"),  # a direct visitor
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # ... whose own header is not believed
        ("10.0.0.7", "198.51.100.1", "198.51.100.1"),  # through the Space's proxy
        ("10.0.0.7", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # a forged entry left of the real one
        ("127.0.0.1", "198.51.100.1, 10.1.2.3", "198.51.100.1"),  # two proxies
        ("10.0.0.7", "", "10.0.0.7"),
        ("10.0.0.7", "not-an-ip", "not-an-ip"),
        ("::1", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_the_client_address_is_read_from_trusted_proxies_only(peer, forwarded, client):
    from nbops.serve.voila_kernels import PRIVATE_NETWORKS, client_address

    assert client_address(peer, forwarded, PRIVATE_NETWORKS) == client


def test_the_busy_page_says_when_to_come_back_and_loads_nothing():
    from nbops.serve.voila_kernels import busy_page

    page = busy_page("Too many <pages>.", 60)
    assert "Busy: try again in a minute" in page and "Too many &lt;pages&gt;." in page
    assert 'http-equiv="refresh" content="60"' in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


# ---------------------------------------------------------------- the kernel manager, with fake kernels

NOTEBOOK = "dash.ipynb"


class FakeRequest:
    def __init__(self, client: str):
        self.remote_ip = "127.0.0.1"  # a local proxy: X-Forwarded-For names the client
        self.headers = {"X-Forwarded-For": client}


class FakeHandler:
    def __init__(self, client: str):
        self.request = FakeRequest(client)
        self.status = 200
        self.headers: dict[str, str] = {}
        self.xsrf_token = b"token"  # tornado's property sets the _xsrf cookie when read

    def set_status(self, status):
        self.status = status

    def set_header(self, name, value):
        self.headers[name] = value


class FakeRenderer:
    def __init__(self, path):
        from types import SimpleNamespace

        self.notebook_path, self.template_name, self.theme = path, "lab", "light"
        self.notebook = SimpleNamespace(metadata=SimpleNamespace(kernelspec=SimpleNamespace(name="python3")))
        self.rendered_cache: list[str] = []
        self.stop_generator = False

    async def initialize(self, **_):
        return None

    async def generate_content_hybrid(self, kernel_id, kernel_future):
        return [], None


@pytest.fixture
def fake_voila(tmp_path, monkeypatch):
    """Voila's own preheated-pool manager (voila_kernel_manager_factory) around ours, pool of 1,
    with kernels that are objects, not processes: start and shutdown of the layer below ours."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
    from traitlets import Unicode
    from traitlets.config import Config, Configurable
    from voila.voila_kernel_manager import voila_kernel_manager_factory

    from nbops.serve.voila_kernels import BoundedKernelManager

    seen = {"most": 0}

    async def start(self, *, kernel_id=None, path=None, **kwargs):
        await asyncio.sleep(0.01)  # a kernel takes a while to start
        self._kernels[kernel_id] = SimpleNamespace(
            last_activity=datetime.now(UTC), execution_state="idle", kernel_name="python3", kernel_spec=None
        )
        seen["most"] = max(seen["most"], len(self._kernels))
        return kernel_id

    async def shutdown(self, kernel_id, *args, **kwargs):
        await asyncio.sleep(0.005)
        self._kernels.pop(kernel_id)

    monkeypatch.setattr(AsyncMappingKernelManager, "start_kernel", start)
    monkeypatch.setattr(AsyncMappingKernelManager, "shutdown_kernel", shutdown)

    class FakeVoila(Configurable):
        root_dir = Unicode(str(tmp_path))
        notebook_path = Unicode(str(tmp_path / NOTEBOOK))
        base_url = server_url = "/"
        port = 1

    cls = voila_kernel_manager_factory(BoundedKernelManager, True, 1)
    monkeypatch.setattr(cls, "_notebook_renderer_factory", lambda self, path=None: FakeRenderer(path))
    config = Config(
        {
            "BoundedKernelManager": {"max_kernels": 4, "max_kernels_per_client": 2},
            "VoilaKernelManager": {"fill_delay": 0},
        }
    )

    async def make():
        manager = cls(parent=FakeVoila(config=config), config=config)
        await asyncio.sleep(0.05)  # the pool fills
        return manager

    return make, seen


async def page_view(manager, client: str) -> tuple[int, str | None, FakeHandler]:
    """What Voila's page handler does with the kernel manager (voila/handler.py): take the
    pooled kernel if there is one, else start one; the busy page ends the request instead."""
    import tornado.web
    from jupyter_server.base.call_context import CallContext

    handler = FakeHandler(client)
    CallContext.set(CallContext.JUPYTER_HANDLER, handler)  # as JupyterHandler.prepare does
    try:
        if manager.get_pool_size(NOTEBOOK) > 0:
            _, _, kernel_id = await manager.get_rendered_notebook(notebook_name=NOTEBOOK)
        else:
            kernel_id = await manager.start_kernel(kernel_name="python3", path="")
    except tornado.web.Finish as busy:
        return handler.status, busy.args[0], handler
    return 200, kernel_id, handler


async def settle(manager) -> None:
    """Let the pool's tasks finish (asyncio.run would cancel them half-way)."""
    tasks = [t for pool in manager._pools.values() for t in pool] + list(manager._pool_tasks)
    await asyncio.gather(*tasks, return_exceptions=True)


def test_page_views_never_hold_more_kernels_than_the_cap(fake_voila):
    """Twelve visitors at once with a cap of 4 (pool included): four get a kernel, the others
    the busy page (503, Retry-After); the pool refills only when a kernel shuts down."""

    async def scenario():
        make, seen = fake_voila
        manager = await make()
        assert manager.live_kernel_count() == 1 == len(manager._kernels)  # the pooled kernel
        views = await asyncio.gather(*(page_view(manager, f"198.51.100.{i}") for i in range(12)))
        await asyncio.sleep(0.05)
        served = [kid for status, kid, _ in views if status == 200]
        busy = [(text, h) for status, text, h in views if status == 503]
        assert len(served) == 4 and len(set(served)) == 4 and len(busy) == 8
        assert seen["most"] == 4 and manager.live_kernel_count() == 4 and manager.get_pool_size(NOTEBOOK) == 0
        text, handler = busy[0]
        assert "as many pages as it can at once (4)" in text and handler.headers["Retry-After"] == "60"
        await manager.shutdown_kernel(served[0])  # a page closed: its place goes back to the pool
        await asyncio.sleep(0.05)
        assert manager.get_pool_size(NOTEBOOK) == 1 and manager.live_kernel_count() == 4 == seen["most"]
        status, kid, _ = await page_view(manager, "198.51.100.99")
        assert status == 200 and kid in manager._kernels
        await settle(manager)

    run_coroutine(scenario())  # a thread of its own: the browser fixture may hold a loop


def test_one_client_address_gets_at_most_two_kernels(fake_voila):
    async def scenario():
        make, _ = fake_voila
        manager = await make()
        first = [await page_view(manager, "203.0.113.7") for _ in range(3)]
        assert [s for s, _, _ in first] == [200, 200, 503]
        assert "already has 2 dashboard pages open" in first[2][1]
        assert (await page_view(manager, "203.0.113.8"))[0] == 200  # another address
        await manager.shutdown_kernel(first[0][1])
        assert (await page_view(manager, "203.0.113.7"))[0] == 200
        await settle(manager)

    run_coroutine(scenario())  # a thread of its own: the browser fixture may hold a loop


def test_a_kernel_whose_page_never_connects_is_culled_early_and_a_connected_one_is_kept(fake_voila):
    from datetime import UTC, datetime, timedelta

    async def scenario():
        make, _ = fake_voila
        manager = await make()
        (_, lost, _), (_, open_page, _) = [await page_view(manager, f"192.0.2.{i}") for i in (1, 2)]
        manager.notify_connect(open_page)  # its websocket opened
        pooled = manager.pooled_kernel_ids()
        soon = datetime.now(UTC) + timedelta(seconds=manager.unconnected_cull_timeout / 2)
        await manager.cull_unconnected(soon)
        assert lost in manager._kernels  # not yet
        later = datetime.now(UTC) + timedelta(seconds=manager.unconnected_cull_timeout + 1)
        await manager.cull_unconnected(later)
        await asyncio.sleep(0.05)
        assert lost not in manager._kernels and open_page in manager._kernels
        assert set(pooled) <= set(manager._kernels)  # the pool's kernel has no page yet: kept
        await settle(manager)

    run_coroutine(scenario())  # a thread of its own: the browser fixture may hold a loop
