"""The dashboard in chromium on a regression champion: a predicted number and the model's
typical error on its held-out rows, no class probabilities."""

from __future__ import annotations

import pytest

from tests.browser.conftest import serve_exported
from tests.browser.penguins import write_exported_champion
from tests.browser.test_dashboard_browser import open_dashboard, predict
from tests.regression_table import CATEGORICAL, NUMERIC, TARGET, house_table

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def houses(tmp_path_factory):
    """(model, exported champion folder) of a ridge regressor on tests/regression_table.py."""
    import json

    from nbops.ml.data import infer_schema
    from nbops.ml.models import make_model, score_values

    table = house_table(300)
    model = make_model("ridge", {}, NUMERIC, CATEGORICAL, task="regression")
    model.fit(table[[*NUMERIC, *CATEGORICAL]], table[TARGET])
    schema = infer_schema(table, TARGET, NUMERIC, CATEGORICAL, "regression")
    folder = write_exported_champion(tmp_path_factory.mktemp("houses") / "champion", model, schema)
    scores = score_values(table[TARGET], model.predict(table[[*NUMERIC, *CATEGORICAL]]))
    card = {"name": "houses-regressor", "version": "1", "task": "regression", "holdout_rows": 60}
    card["metrics"] = {k: scores[k] for k in ("rmse", "mae", "r2")}
    (folder / "model_card.json").write_text(json.dumps(card))
    return model, folder, scores


@pytest.fixture(scope="module")
def houses_server(houses):
    yield from serve_exported("houses", houses[1])


def test_a_regression_champion_shows_a_number_and_its_typical_error(houses_server, houses, page):
    import pandas as pd

    from nbops.serve.predict import number_text

    model, folder, scores = houses
    open_dashboard(page, houses_server.url)
    shown = predict(page)
    import json

    schema = json.loads((folder / "schema.json").read_text())
    row = {
        c: [round(info["median"]) if info["integer"] else round(info["median"], 2)]
        for c, info in schema["numeric"].items()
    }
    row.update({c: [page.locator(f".nbops-input-{c} select").input_value()] for c in schema["categorical"]})
    expected = float(model.predict(pd.DataFrame(row)[[*NUMERIC, *CATEGORICAL]])[0])
    assert shown == number_text(expected)
    assert float(shown.replace(",", "")) == pytest.approx(expected, rel=1e-3)
    note = page.inner_text(".nbops-result-box .nbops-confidence")
    assert note.startswith(f"± {number_text(scores['rmse'])} (the model's RMSE on its held-out rows)")
    assert page.locator(".nbops-result-box .nbops-bars").count() == 0  # no class probabilities
    card = page.inner_text(".nbops-card")
    assert "rmse" in card and "r2" in card and "macro f1" not in card
