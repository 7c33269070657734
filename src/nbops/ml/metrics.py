"""The metrics a run is scored on, per task, and which way each one is better.

The gate ranks by one of them (`gate.metric`), the floors hold for any of them, sweeps rank by the
gate's metric: all of them ask here whether a higher value is progress (macro-F1, R²) or a lower
one (RMSE, MAE). Scoring itself is scikit-learn's (nbops.ml.models.score_predictions).
"""

from __future__ import annotations

from dataclasses import dataclass

CLASSIFICATION = "classification"
REGRESSION = "regression"


@dataclass(frozen=True)
class Metric:
    name: str
    task: str
    higher_is_better: bool
    title: str  # as a reviewer reads it
    binary_only: bool = False


METRICS = {
    m.name: m
    for m in (
        Metric("macro_f1", CLASSIFICATION, True, "macro-F1"),
        Metric("accuracy", CLASSIFICATION, True, "accuracy"),
        Metric("weighted_f1", CLASSIFICATION, True, "weighted-F1"),
        Metric("roc_auc", CLASSIFICATION, True, "ROC AUC", binary_only=True),
        Metric("rmse", REGRESSION, False, "RMSE"),
        Metric("mae", REGRESSION, False, "MAE"),
        Metric("r2", REGRESSION, True, "R²"),
    )
}
DEFAULT_METRIC = {CLASSIFICATION: "macro_f1", REGRESSION: "rmse"}
# what tables show, in this order (roc_auc only where it was scored: binary targets)
SHOWN = {
    CLASSIFICATION: ("accuracy", "macro_f1", "weighted_f1", "roc_auc"),
    REGRESSION: ("rmse", "mae", "r2"),
}
# cross-validation: our name -> scikit-learn's scorer (negated ones are errors, sign flipped back)
CV_SCORERS = {
    CLASSIFICATION: {"accuracy": "accuracy", "macro_f1": "f1_macro"},
    REGRESSION: {"rmse": "neg_root_mean_squared_error", "mae": "neg_mean_absolute_error", "r2": "r2"},
}


def task_metrics(task: str) -> list[str]:
    return [name for name, m in METRICS.items() if m.task == task]


def metric_problem(task: str, metric: str) -> str | None:
    """Why `metric` cannot be a `task` run's metric, or None when it can."""
    if metric in METRICS and METRICS[metric].task == task:
        return None
    return f"{metric!r} is not a {task} metric (one of: {', '.join(task_metrics(task))})"


def higher_is_better(metric: str) -> bool:
    return METRICS[metric].higher_is_better


def gain(metric: str, delta: float) -> float:
    """Δ (challenger − champion) as progress: positive when the challenger is better."""
    return delta if higher_is_better(metric) else -delta


def meets_floor(metric: str, value: float, floor: float) -> bool:
    """A floor of an error (RMSE, MAE) is a ceiling: the value must be at most it."""
    return value >= floor if higher_is_better(metric) else value <= floor


def floor_word(metric: str) -> str:
    return "floor" if higher_is_better(metric) else "ceiling"


def task_of(metrics: dict | None) -> str:
    """The task a metrics record was scored for (records without one are classification)."""
    return str((metrics or {}).get("task", CLASSIFICATION))


def shown_metrics(metrics: dict | None) -> list[str]:
    """The metrics a table shows for this record, in SHOWN's order."""
    return [m for m in SHOWN[task_of(metrics)] if m in (metrics or {})]


def direction_text(metric: str) -> str:
    return "higher is better" if higher_is_better(metric) else "lower is better"
