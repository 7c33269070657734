import pytest
import skops.io as sio

from nbops.exceptions import ModelError
from nbops.ml.estimators import ESTIMATORS
from nbops.ml.models import TRUSTED_TYPES, fit_model, make_model, predict_table, score_model
from nbops.ml.synthetic import generate_drug_table

NUMERIC, CATEGORICAL = ["Age", "Na_to_K"], ["Sex", "BP", "Cholesterol"]


@pytest.fixture(scope="module")
def table():
    return generate_drug_table(300, seed=3)


@pytest.mark.parametrize("name", list(ESTIMATORS["classification"]))
def test_every_factory_model_fits_scores_and_needs_only_trusted_types(name, table):
    model = make_model(name, {}, NUMERIC, CATEGORICAL)
    X, y = table[NUMERIC + CATEGORICAL], table["Drug"]
    cv = fit_model(model, X, y, cv_folds=3, seed=0)
    assert 0.5 < cv["cv_macro_f1_mean"] <= 1.0 and cv["cv_folds"] == 3
    scores = score_model(model, X, y)
    assert scores["accuracy"] > 0.9
    assert set(sio.get_untrusted_types(data=sio.dumps(model))) <= set(TRUSTED_TYPES)
    loaded = sio.loads(sio.dumps(model), trusted=TRUSTED_TYPES)
    assert (loaded.predict(X) == model.predict(X)).all()


def test_unknown_hyperparameter_names_the_key_with_a_hint():
    with pytest.raises(ModelError) as exc:
        make_model("decision_tree", {"max_dept": 3}, NUMERIC, CATEGORICAL, source="params/x.yaml")
    assert exc.value.problems == [
        "params/x.yaml: unknown key 'model.params.max_dept' for decision_tree (did you mean 'max_depth'?)"
    ]


def test_score_model_reports_per_class_and_confusion(table):
    model = make_model("decision_tree", {"max_depth": 1}, NUMERIC, CATEGORICAL)
    X, y = table[NUMERIC + CATEGORICAL], table["Drug"]
    model.fit(X, y)
    scores = score_model(model, X, y, labels=["drugA", "drugB", "drugC", "drugX", "drugY"])
    assert scores["labels"] == ["drugA", "drugB", "drugC", "drugX", "drugY"]
    assert sum(map(sum, scores["confusion_matrix"])) == len(y)
    assert scores["per_class"]["drugY"]["recall"] == pytest.approx(1.0)
    assert scores["macro_f1"] < scores["accuracy"]  # a stump misses the small classes


def test_predict_table_has_label_and_probabilities(table):
    model = make_model("logistic_regression", {"max_iter": 500}, NUMERIC, CATEGORICAL)
    X, y = table[NUMERIC + CATEGORICAL], table["Drug"]
    model.fit(X, y)
    out = predict_table(model, X.head(5))
    assert list(out.columns) == ["prediction", "p_drugA", "p_drugB", "p_drugC", "p_drugX", "p_drugY"]
    assert out.filter(like="p_").sum(axis=1).round(6).eq(1).all()


@pytest.mark.parametrize(
    ("task", "name"),
    [
        ("classification", "random_forest"),
        ("classification", "hist_gradient_boosting"),
        ("regression", "random_forest"),
    ],
)
def test_a_model_that_draws_random_numbers_is_seeded_unless_the_params_say(task, name):
    from nbops.ml.models import MODEL_SEED, make_estimator

    assert make_estimator(name, {}, task=task).random_state == MODEL_SEED
    assert make_estimator(name, {"random_state": 7}, task=task).random_state == 7


def test_invalid_hyperparameter_value_is_a_params_error():
    with pytest.raises(ModelError) as exc:
        make_model("decision_tree", {"max_depth": -1}, NUMERIC, CATEGORICAL, source="params/x.yaml")
    assert exc.value.problems[0].startswith(
        "params/x.yaml: key 'model.params.max_depth': The 'max_depth' parameter of DecisionTreeClassifier"
    )


def test_folds_run_in_parallel_only_when_the_table_is_large(monkeypatch):
    from nbops.ml.models import PARALLEL_CV_ROWS, cv_jobs

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert cv_jobs(200, 5) is None  # a worker's start (~3 s) would cost more than the folds
    assert cv_jobs(PARALLEL_CV_ROWS, 5) == 2
    assert cv_jobs(PARALLEL_CV_ROWS, 1) == 1
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert cv_jobs(10 * PARALLEL_CV_ROWS, 5) is None  # one core: nothing to share
