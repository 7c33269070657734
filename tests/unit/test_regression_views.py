"""A regression run as reviewers and users see it: summary.md, index.html, the dashboard's
prediction, and sweeps ranked in the metric's direction."""

from __future__ import annotations

import pytest

from nbops.ml.gate import decide_promotion
from nbops.runner.report import index_html
from nbops.runner.summary import summary_markdown
from nbops.serve.page import prediction_html
from nbops.serve.predict import Prediction, typical_error
from nbops.sweep.run import pick_best


def regression_evaluation() -> dict:
    chal = {"task": "regression", "rmse": 8.5, "mae": 6.25, "r2": 0.91, "mean_error": 0.1, "rows": 60}
    champ = {**chal, "rmse": 9.0, "mae": 6.5, "r2": 0.9}
    interval = {
        "metric": "rmse",
        "rows": 60,
        "resamples": 2000,
        "confidence": 0.95,
        "seed": 42,
        "delta": {"value": -0.5, "low": -1.2, "high": 0.3},
    }
    d = decide_promotion(
        chal,
        champ,
        metric="rmse",
        floors={"rmse": 20.0},
        challenger_version="2",
        champion_version="1",
        interval=interval,
    )
    return {
        "model_name": "houses-regressor",
        "challenger": {"version": "2", "run_id": "r2", "metrics": chal},
        "champion": {"version": "1", "run_id": "r1", "metrics": champ, "error": None},
        "decision": d.to_dict(),
        "champion_after": "1",
        "params_diff": {},
        "data": {"hash": "abc", "source": "data/raw/houses.csv", "synthetic": False, "holdout_rows": 60},
    }


def test_the_summary_speaks_in_the_metrics_of_regression():
    text = summary_markdown(regression_evaluation())
    assert "## ⏸️ Gate: keep champion" in text
    assert "- rmse -0.50 (95% interval -1.2 to +0.30) on 60 held-out rows is within noise" in text
    assert "| rmse (gate, lower is better) | 8.5000 | 9.0000 | -0.5000 |" in text
    assert "| mae | 6.2500 | 6.5000 | -0.2500 |" in text and "| r2 | 0.9100 | 0.9000 | +0.0100 |" in text
    assert "accuracy" not in text and "Per-class" not in text and "Confusion" not in text


def test_the_index_shows_the_regression_metrics():
    page = index_html({"03_evaluate": "ran"}, regression_evaluation(), None)
    assert "<td>rmse (gate, lower is better)</td><td class='num'>8.5000</td>" in page
    assert "macro_f1" not in page


def test_the_dashboard_shows_a_number_with_the_models_rmse_and_no_probabilities():
    card = {"metrics": {"rmse": 8.5, "mae": 6.25, "r2": 0.91}}
    assert typical_error(card) == ("rmse", 8.5)
    assert typical_error({"metrics": {"mae": 2.0}}) == ("mae", 2.0)
    assert typical_error({"metrics": {"accuracy": 0.9}}) is None
    html = prediction_html(Prediction("1,234", {}, 0.004, ("rmse", 8.5)))
    assert '<div class="nbops-label">1,234</div>' in html
    assert "± 8.5 (the model&#x27;s RMSE on its held-out rows) · answered in 4 ms" in html
    assert "nbops-bars" not in html


def test_sweeps_rank_an_error_lowest_first_and_a_score_highest_first():
    def rec(index, **metrics):
        return {"index": index, "status": "ok", "challenger": {"metrics": metrics}}

    records = [rec(1, rmse=9.0), rec(2, rmse=7.5), rec(3, rmse=8.0)]
    assert pick_best(records, "rmse")["index"] == 2
    assert pick_best([rec(1, r2=0.8), rec(2, r2=0.9)], "r2")["index"] == 2
    scored = [rec(1, macro_f1=0.8, accuracy=0.9), rec(2, macro_f1=0.85, accuracy=0.8)]
    assert pick_best(scored)["index"] == 2


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (250000.0, "250,000"),
        (1234.5678, "1,235"),
        (3.14159, "3.142"),
        (0.001234, "0.001234"),
        (-12.5, "-12.5"),
    ],
)
def test_a_predicted_number_is_shown_without_an_exponent(value, shown):
    from nbops.serve.predict import number_text

    assert number_text(value) == shown
