"""Regression and the metric the gate ranks by: directions, floors (old keys mapped), roc_auc's
refusal for more than two classes, the paired bootstrap of errors, `nbops init` on a number."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from nbops.exceptions import DataError, ParamsError
from nbops.ml.bootstrap_rows import paired_auc_interval, paired_error_interval
from nbops.ml.data import check_table
from nbops.ml.gate import decide_promotion
from nbops.ml.metrics import gain, higher_is_better, meets_floor
from nbops.params import parse_params
from tests.regression_table import house_table, regression_params

BASE = {
    "data": {"path": "d.csv", "target": "y", "numeric": ["a"]},
    "model": {"name": "decision_tree"},
    "registry": {"model_name": "m"},
}


def params(**top) -> dict:
    return {**BASE, "gate": {}, **top}


@pytest.mark.parametrize(
    ("metric", "higher"),
    [
        ("macro_f1", True),
        ("accuracy", True),
        ("roc_auc", True),
        ("r2", True),
        ("rmse", False),
        ("mae", False),
    ],
)
def test_each_metric_has_its_direction(metric, higher):
    assert higher_is_better(metric) is higher
    assert gain(metric, 0.5) == (0.5 if higher else -0.5)
    assert meets_floor(metric, 1.0, 2.0) is (not higher)


def test_the_old_floor_keys_are_floors_and_the_metric_defaults_by_task():
    p = parse_params(params(gate={"min_macro_f1": 0.7, "min_accuracy": 0.6, "tolerance": 0.01}))
    assert p.gate.metric == "macro_f1" and p.gate.floors == {"macro_f1": 0.7, "accuracy": 0.6}
    assert "gate_min_macro_f1" not in p.notebook_parameters()
    assert p.notebook_parameters()["gate_floors"] == {"macro_f1": 0.7, "accuracy": 0.6}
    r = parse_params(params(task="regression", gate={"floors": {"rmse": 3.5}}))
    assert r.gate.metric == "rmse" and r.gate.floors == {"rmse": 3.5}


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        (
            params(gate={"min_macro_f1": 0.7, "floors": {"macro_f1": 0.8}}),
            "key 'gate.min_macro_f1': 0.7 differs",
        ),
        (
            params(task="regression", gate={"metric": "macro_f1"}),
            "key 'gate.metric': 'macro_f1' is not a regression",
        ),
        (params(gate={"metric": "rmse"}), "key 'gate.metric': 'rmse' is not a classification metric"),
        (params(task="regression", gate={"floors": {"rmse": -1.0}}), "key 'gate.floors.rmse': -1 is below 0"),
        (params(gate={"floors": {"accuracy": 1.5}}), "key 'gate.floors.accuracy': 1.5 is outside [0, 1]"),
        (
            params(task="regression", model={"name": "logistic_regression"}),
            "'logistic_regression' is not a regression model",
        ),
    ],
)
def test_a_metric_or_floor_of_another_task_is_one_line(raw, line):
    with pytest.raises(ParamsError) as exc:
        parse_params(raw, "p.yaml")
    assert any(problem.startswith("p.yaml: ") and line in problem for problem in exc.value.problems), (
        exc.value.problems
    )


def test_a_ceiling_of_rmse_rejects_an_error_above_it_and_names_it():
    d = decide_promotion({"rmse": 5.2, "mae": 4.0}, None, metric="rmse", floors={"rmse": 5.0})
    assert not d.promote and d.verdict == "reject"
    assert d.reasons == ["rmse 5.2000 is above the ceiling 5.0000"]
    d = decide_promotion({"rmse": 4.2}, None, metric="rmse", floors={"rmse": 5.0})
    assert d.promote and d.reasons[0] == "rmse 4.2000 meets the ceiling 5.0000"


def test_a_lower_rmse_beyond_noise_promotes_and_within_noise_keeps():
    iv = {"metric": "rmse", "rows": 40, "resamples": 2000, "confidence": 0.95, "seed": 1}
    kw = {"metric": "rmse", "floors": {"rmse": 10.0}, "challenger_version": "2", "champion_version": "1"}
    kept = decide_promotion(
        {"rmse": 5.0},
        {"rmse": 5.8},
        **kw,
        interval={**iv, "delta": {"value": -0.8, "low": -2.1, "high": 0.4}},
    )
    assert not kept.promote
    assert kept.reasons[-1] == "rmse -0.80 (95% interval -2.1 to +0.40) on 40 held-out rows is within noise"
    won = decide_promotion(
        {"rmse": 3.0},
        {"rmse": 5.8},
        **kw,
        interval={**iv, "delta": {"value": -2.8, "low": -3.5, "high": -2.0}},
    )
    assert won.promote and won.reasons[-1].endswith("its upper end is below zero")
    worse = decide_promotion({"rmse": 6.0}, {"rmse": 5.8}, **kw, tolerance=0.5)
    assert not worse.promote and worse.reasons[-1] == "rmse is above the champion's (5.8000)"


def errors_table(n: int, gap: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.normal(100, 20, n)
    return y, y + rng.normal(0, 5.0 - gap, n), y + rng.normal(0, 5.0, n)


def test_the_regression_bootstrap_is_seeded_and_tells_noise_from_progress():
    y, a, b = errors_table(60, 0.1)
    first = paired_error_interval(y, a, b, "rmse", seed=7)
    assert first == paired_error_interval(y, a, b, "rmse", seed=7)
    assert first != paired_error_interval(y, a, b, "rmse", seed=8)
    assert first.delta.low < 0 < first.delta.high  # 0.1 less noise on 60 rows: within noise
    y, a, b = errors_table(400, 3.0)
    progress = paired_error_interval(y, a, b, "rmse", seed=7)
    assert progress.delta.high < 0 and progress.resamples >= 1000
    assert paired_error_interval(y, a, b, "r2", seed=7).delta.low > 0  # R²: higher is better


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_the_grouped_resample_agrees_with_the_exact_one(metric):
    y, a, b = errors_table(30_000, 0.05, seed=3)
    exact = paired_error_interval(y, a, b, metric, seed=1, exact_rows=10**9).delta
    grouped = paired_error_interval(y, a, b, metric, seed=1, exact_rows=0).delta
    width = exact.high - exact.low
    assert grouped.value == pytest.approx(exact.value)
    assert abs(grouped.low - exact.low) < 0.1 * width and abs(grouped.high - exact.high) < 0.1 * width


def test_the_auc_bootstrap_is_seeded_and_its_value_is_the_auc():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = np.where(rng.random(300) < 0.5, "yes", "no")
    score = 1 / (1 + np.exp(-((y == "yes") * 1.5 + rng.normal(0, 1, 300))))
    other = 1 / (1 + np.exp(-((y == "yes") * 0.2 + rng.normal(0, 1, 300))))
    iv = paired_auc_interval(y, score, other, "yes", seed=3)
    assert iv == paired_auc_interval(y, score, other, "yes", seed=3)
    assert iv.challenger.value == pytest.approx(roc_auc_score(y == "yes", score), abs=2e-3)
    assert iv.delta.low > 0


def test_roc_auc_is_refused_for_more_than_two_classes_in_one_line():
    import pandas as pd

    raw = params(gate={"metric": "roc_auc"})
    p = parse_params(raw)
    table = pd.DataFrame({"a": [1.0, 2, 3, 4, 5, 6] * 5, "y": ["x", "y", "z"] * 10}, index=range(2, 32))
    with pytest.raises(DataError) as exc:
        check_table(table, p, "d.csv")
    assert str(exc.value) == (
        "d.csv: key 'gate.metric': roc_auc needs a binary target; column 'y' has 3 classes "
        "(use macro_f1, accuracy or weighted_f1)"
    )
    check_table(table[table.y != "z"], p, "d.csv")  # two classes: accepted


def test_init_on_a_regression_table_writes_regression_with_ceilings_from_a_mean_predictor(tmp_path):
    from nbops.init_params import regression_baseline, write_params_file

    table = house_table(200)
    (tmp_path / "data").mkdir()
    table.to_csv(tmp_path / "data" / "houses.csv", index=False, sep=";")
    out = write_params_file(tmp_path / "data" / "houses.csv", "price", root=tmp_path)
    text = out.read_text()
    written = yaml.safe_load(text)
    assert written["task"] == "regression" and written["data"]["delimiter"] == ";"
    assert written["registry"]["model_name"] == "houses-regressor"
    assert written["model"]["name"] == "hist_gradient_boosting" and "ridge {alpha}" in text
    assert written["data"]["numeric"] == ["sqft", "rooms", "age"] and written["data"]["categorical"] == [
        "district"
    ]
    assert "'house_id': every value is different: an identifier" in text
    assert "classes" not in written["data"]
    baseline = regression_baseline(table["price"])
    assert f"a mean predictor scores RMSE {baseline['rmse']:.4g}" in text
    assert written["gate"]["floors"]["rmse"] == pytest.approx(baseline["rmse"] * 0.9, rel=0.01)
    assert written["gate"]["metric"] == "rmse"


def test_a_regression_params_file_from_the_tests_validates():
    p = parse_params(regression_params("d.csv"))
    assert p.task == "regression" and p.gate.metric == "rmse" and p.model.name == "ridge"


def test_the_task_figures_of_a_regression_table_draw_what_they_say():
    import pandas as pd

    from nbops.ml import task_plots
    from tests.regression_table import CATEGORICAL, NUMERIC, TARGET

    table = house_table(120)
    assert task_plots.describe_target(table, TARGET, "regression").startswith("target price: ")
    hist = task_plots.target_plot(table, TARGET, "regression")
    assert hist.axes[0].get_xlabel() == TARGET
    scatter = task_plots.numeric_vs_target(table, NUMERIC, TARGET, "regression")
    assert [ax.get_title() for ax in scatter.axes] == [f"price against {c}" for c in NUMERIC]
    boxes = task_plots.categorical_vs_target(table, CATEGORICAL, TARGET, "regression")
    assert [ax.get_title() for ax in boxes.axes] == ["price by district"]
    prediction = pd.DataFrame({"prediction": table[TARGET] + 1.0})
    figures = task_plots.holdout_figures(
        "regression",
        table[TARGET],
        {"challenger v2": ({"rmse": 1.0}, prediction), "champion (none)": (None, None)},
        [],
        TARGET,
    )
    assert [ax.get_title() for ax in figures[0].axes] == ["challenger v2: predicted vs actual"]
    residuals = figures[1].axes[0].collections[0].get_offsets()[:, 1]
    assert np.allclose(residuals, -1.0)  # actual − predicted


@pytest.mark.parametrize(
    ("trained_for", "run_task"), [("regression", "classification"), ("classification", "regression")]
)
def test_a_version_made_for_the_other_task_cannot_score_and_the_champion_is_kept(
    monkeypatch, trained_for, run_task
):
    """A params file that switched `task:` but kept `registry.model_name`: the old champion is
    refused in one line (the gate keeps it) instead of crashing the evaluation."""
    from nbops.exceptions import NbopsError
    from nbops.ml import evaluation, registry
    from nbops.ml.models import make_model
    from tests.regression_table import CATEGORICAL, NUMERIC, TARGET, house_table

    table = house_table(120).dropna()
    y = table[TARGET] if trained_for == "regression" else (table[TARGET] > table[TARGET].median()).map(str)
    model = make_model("decision_tree", {"max_depth": 3}, NUMERIC, CATEGORICAL, task=trained_for)
    model.fit(table[[*NUMERIC, *CATEGORICAL]], y)
    monkeypatch.setattr(registry, "load_model", lambda uri: model)
    X = table[[*NUMERIC, *CATEGORICAL]]
    with pytest.raises(NbopsError, match=rf"^v1 is a {trained_for} model; this run is {run_task}$"):
        evaluation.predict_version("houses", "1", X, run_task)
    assert evaluation.quiet_scorer("houses", X, y, [], run_task)("1") is None
    assert len(evaluation.predict_version("houses", "1", X, trained_for)) == len(X)
