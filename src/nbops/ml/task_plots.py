"""What the notebooks call, by task: the same call draws the classification figure
(nbops.ml.plots) or the regression one (nbops.ml.regression_plots), so a notebook has no branch
of its own per task."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbops.ml import regression_plots as reg
from nbops.ml.plots import (
    categorical_by_class,
    class_balance,
    confusion_heatmap,
    numeric_by_class,
    per_class_f1,
    relationships,
)

if TYPE_CHECKING:
    import pandas as pd


def describe_target(df: pd.DataFrame, target: str, task: str = "classification") -> str:
    """One line on the target: its classes, or a number's range and median."""
    if task == "regression":
        y = df[target]
        return f"target {target}: {y.min():.6g} to {y.max():.6g}, median {y.median():.6g}"
    return f"classes: {sorted(df[target].unique())}"


def target_plot(df: pd.DataFrame, target: str, task: str = "classification"):
    """The class balance, or the distribution of a number."""
    if task == "regression":
        return reg.target_distribution(df, target)
    return class_balance(df, target)


def numeric_vs_target(df: pd.DataFrame, numeric: list[str], target: str, task: str = "classification"):
    """Each numeric column by class (boxes), or against a numeric target (scatter)."""
    if task == "regression":
        return reg.numeric_against_target(df, numeric, target)
    return numeric_by_class(df, numeric, target)


def categorical_vs_target(
    df: pd.DataFrame, categorical: list[str], target: str, task: str = "classification"
):
    """Class counts per category, or the target's spread per category."""
    if task == "regression":
        return reg.categorical_against_target(df, categorical, target)
    return categorical_by_class(df, categorical, target)


def pairs(df: pd.DataFrame, numeric: list[str], target: str, task: str = "classification"):
    """Pairs of numeric columns coloured by class; for regression the target is one of the columns."""
    if task == "regression":
        return reg.pairs_with_target(df, numeric, target)
    return relationships(df, numeric, target)


def holdout_figures(task: str, y, models: dict[str, tuple], labels: list[str], target: str) -> list:
    """The evaluate step's figures: {model label: (metrics, predict_table)} of the models scored.
    Classification: a confusion matrix per model and the per-class F1; regression: predicted
    against actual, and the residuals."""
    scored = {who: pair for who, pair in models.items() if pair[0]}
    if task == "regression":
        predictions = {who: pred for who, (_, pred) in scored.items()}
        return [reg.predicted_vs_actual(y, predictions, target), reg.residuals(y, predictions, target)]
    figures = [
        confusion_heatmap(m["confusion_matrix"], labels, who, target) for who, (m, _) in scored.items()
    ]
    return [*figures, per_class_f1({who: m for who, (m, _) in scored.items()})]
