"""Model factory, fitting and scoring. Every model is a scikit-learn Pipeline:
impute + scale numeric columns, impute + one-hot categorical columns, then the estimator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbops.exceptions import ModelError
from nbops.ml.estimators import ESTIMATORS
from nbops.ml.metrics import CLASSIFICATION, CV_SCORERS, REGRESSION

# Heavy libraries imported inside the functions below; warm kernels load them early (nbops.runner.preload).
PRELOAD = (
    "sklearn.compose",
    "sklearn.impute",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.pipeline",
    "sklearn.preprocessing",
)

if TYPE_CHECKING:
    import pandas as pd

# Types skops must be told to trust when loading our pipelines. Derived with
# `skops.io.get_untrusted_types` on a fitted pipeline of every factory model (see
# tests/unit/test_models.py, which fails when a model needs a type not listed here) and reviewed:
# all are scikit-learn/numpy internals, none executes code on load.
TRUSTED_TYPES = [
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",
]


def _estimator_class(name: str, task: str = CLASSIFICATION):
    import importlib

    module, cls = ESTIMATORS[task][name]
    return getattr(importlib.import_module(module), cls)


MODEL_SEED = 42  # a model that draws random numbers is seeded with this unless params say


def make_estimator(name: str, params: dict[str, Any], source: str = "params", task: str = CLASSIFICATION):
    """Build the `task`'s estimator; an unknown hyperparameter names the params key."""
    cls = _estimator_class(name, task)
    valid = cls().get_params()
    if "random_state" in valid and "random_state" not in params:  # a rerun fits the same model
        params = {**params, "random_state": MODEL_SEED}
    unknown = [k for k in params if k not in valid]
    if unknown:
        import difflib

        lines = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(valid), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            lines.append(f"{source}: unknown key 'model.params.{key}' for {name}{hint}")
        raise ModelError(lines)
    estimator = cls(**params)
    # Check values too (max_depth: -1) before any kernel starts. `_validate_params` is how
    # scikit-learn itself validates at fit time (private, stable since 1.2).
    validate = getattr(estimator, "_validate_params", None)
    if validate is not None:
        try:
            validate()
        except ValueError as exc:  # sklearn's InvalidParameterError subclasses ValueError
            bad = next((k for k in params if f"'{k}'" in str(exc)), None)
            key = f"model.params.{bad}" if bad else "model.params"
            raise ModelError(f"{source}: key '{key}': {exc}") from None
    return estimator


# Hyperparameters that multiply the training time, and the value past which a run is warned
# before it starts: 100000 trees train for hours. (The run itself is bounded by run.timeout_s.)
SIZE_BOUNDS = {"n_estimators": 5000, "max_iter": 100_000}


def size_warnings(params: dict[str, Any], source: str = "params", timeout_s: int | None = None) -> list[str]:
    """One line per hyperparameter over its SIZE_BOUNDS value (the estimator accepts it)."""
    stop = f"; the run stops at run.timeout_s={timeout_s}" if timeout_s else ""
    return [
        f"{source}: key 'model.params.{key}': {params[key]} is more than {bound}, training may take "
        f"very long{stop}"
        for key, bound in SIZE_BOUNDS.items()
        if isinstance(params.get(key), (int, float))
        and not isinstance(params[key], bool)
        and params[key] > bound
    ]


def make_model(
    name: str,
    params: dict[str, Any],
    numeric: list[str],
    categorical: list[str],
    source: str = "params",
    task: str = CLASSIFICATION,
):
    """The full pipeline: preprocessing for the declared columns, then the task's named estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    estimator = make_estimator(name, params, source, task)
    pre = ColumnTransformer(
        [
            (
                "numeric",
                Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                numeric,
            ),
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                categorical,
            ),
        ],
        verbose_feature_names_out=False,
    )
    return Pipeline([("preprocess", pre), ("model", estimator)])


# Folds run in parallel worker processes only when a fold's fit outweighs starting a worker
# (~3 s to import scikit-learn there): at 1e6 rows the folds took 53 s one after another.
PARALLEL_CV_ROWS = 100_000


def cv_jobs(rows: int, folds: int) -> int | None:
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(folds, cores) if rows >= PARALLEL_CV_ROWS and cores > 1 else None


def fit_model(
    model, X: pd.DataFrame, y: pd.Series, cv_folds: int, seed: int, task: str = CLASSIFICATION
) -> dict[str, float]:
    """Cross-validate on the training part (stratified folds for classes, plain shuffled ones
    for a number), then fit on all of it. Returns CV scores."""
    import numpy as np
    from sklearn.model_selection import KFold, StratifiedKFold, cross_validate

    if task == REGRESSION:
        folds = min(cv_folds, len(y))
        cv: Any = KFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        folds = min(cv_folds, int(y.value_counts().min()))
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed) if folds >= 2 else None
    scores: dict[str, float] = {}
    if folds >= 2:
        scorers = CV_SCORERS[task]
        res = cross_validate(
            model, X, y, cv=cv, scoring=tuple(scorers.values()), n_jobs=cv_jobs(len(X), folds)
        )
        for name, scorer in scorers.items():
            values = res[f"test_{scorer}"] * (-1 if scorer.startswith("neg_") else 1)
            scores[f"cv_{name}_mean"] = float(np.mean(values))
            scores[f"cv_{name}_std"] = float(np.std(values))
        scores["cv_folds"] = folds
    model.fit(X, y)
    return scores


def score_model(
    model, X: pd.DataFrame, y: pd.Series, labels: list[str] | None = None, task: str = CLASSIFICATION
) -> dict[str, Any]:
    """Held-out metrics of the task (score_predictions)."""
    table = predict_table(model, X)
    return score_table(y, table, labels, task)


def score_table(
    y: pd.Series, table: pd.DataFrame, labels: list[str] | None = None, task: str = CLASSIFICATION
):
    """score_predictions from predict_table's output (its probabilities give a binary ROC AUC)."""
    labels = sorted(labels or set(y.unique())) if task == CLASSIFICATION else None
    proba = None
    if labels is not None and len(labels) == 2 and f"p_{labels[1]}" in table:
        proba = table[f"p_{labels[1]}"].to_numpy()
    return score_predictions(y, table["prediction"].to_numpy(), labels, task, proba)


def score_predictions(
    y: pd.Series, pred, labels: list[str] | None = None, task: str = CLASSIFICATION, proba=None
) -> dict[str, Any]:
    """Held-out metrics from predictions already made (the gate compares them row by row):
    classification: accuracy, macro/weighted F1, per-class P/R/F1, confusion matrix, and ROC AUC
    when `proba` (the second label's probability) is given for a binary target; regression:
    RMSE, MAE, R²."""
    if task == REGRESSION:
        return score_values(y, pred)
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    labels = sorted(labels or set(y.unique()))
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    out = {
        "task": CLASSIFICATION,
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y, pred, labels=labels, average="weighted", zero_division=0)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, prec, rec, f1, support, strict=True)
        },
        "labels": labels,
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
        "rows": int(len(y)),
    }
    if proba is not None and len(labels) == 2 and y.nunique() == 2:
        out["roc_auc"] = float(roc_auc_score((y == labels[1]).to_numpy(), proba))
    return out


def score_values(y: pd.Series, pred) -> dict[str, Any]:
    """RMSE, MAE and R² of predicted numbers, with the rows and the spread of the errors."""
    import numpy as np
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    errors = np.asarray(pred, dtype=float) - np.asarray(y, dtype=float)
    return {
        "task": REGRESSION,
        "rmse": float(root_mean_squared_error(y, pred)),
        "mae": float(mean_absolute_error(y, pred)),
        "r2": float(r2_score(y, pred)) if len(y) > 1 else float("nan"),
        "mean_error": float(errors.mean()),
        "rows": int(len(y)),
    }


def predict_table(model, X: pd.DataFrame) -> pd.DataFrame:
    """Predicted label plus one probability column per class; a regressor's predicted number."""
    import pandas as pd

    if not hasattr(model, "predict_proba"):
        return pd.DataFrame({"prediction": model.predict(X).astype(float)}, index=X.index)
    proba = model.predict_proba(X)
    classes = [str(c) for c in model.classes_]
    out = pd.DataFrame(proba, columns=[f"p_{c}" for c in classes], index=X.index)
    out.insert(0, "prediction", [classes[i] for i in proba.argmax(axis=1)])
    return out
