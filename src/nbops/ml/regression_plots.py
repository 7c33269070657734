"""The figures of a regression run: the target's distribution, each column against the target
(EDA), and predicted against actual and the residuals on the held-out rows (evaluate). Large
tables arrive sampled (nbops.ml.plots.sample_rows); per-column plots are capped as there."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbops.ml.plots import MAX_PLOTTED_COLUMNS, _no_values, _sns, _subplots, has_values

if TYPE_CHECKING:
    import pandas as pd

POINT = {"s": 14, "alpha": 0.6}
TOP_CATEGORIES = 12  # a categorical column's most frequent values, against the target


def target_distribution(df: pd.DataFrame, target: str):
    """The target's histogram: where most values lie, how long the tails are."""
    sns = _sns()
    fig, ax = _subplots(1, 1, (6, 3.2))
    sns.histplot(df[target].dropna(), bins=30, kde=True, ax=ax, color="#2563eb")
    y = df[target]
    ax.set(title=f"Distribution of {target} (median {y.median():.4g}, {y.min():.4g} to {y.max():.4g})")
    ax.set(xlabel=target, ylabel="rows")
    return fig


def _per_column(df: pd.DataFrame, columns: list[str], title: str, draw):
    """One panel per column (the first MAX_PLOTTED_COLUMNS), titled `title.format(col)`;
    `draw(ax, col)` fills a panel whose column has values, an empty one says so."""
    columns = list(columns)[:MAX_PLOTTED_COLUMNS]
    if not columns:
        return None
    fig, axes = _subplots(1, len(columns), (4.5 * len(columns), 3.5))
    axes = [axes] if len(columns) == 1 else axes
    for ax, col in zip(axes, columns, strict=True):
        ax.set_title(title.format(col))
        if has_values(df[col]):
            draw(ax, col)
        else:
            _no_values(ax, col)
    return fig


def numeric_against_target(df: pd.DataFrame, numeric: list[str], target: str):
    """One scatter per numeric column against the target, with its least-squares line."""
    sns = _sns()

    def draw(ax, col):
        sns.regplot(data=df, x=col, y=target, ax=ax, scatter_kws=POINT, line_kws={"color": "#b91c1c"})

    return _per_column(df, numeric, f"{target} against {{}}", draw)


def categorical_against_target(df: pd.DataFrame, categorical: list[str], target: str):
    """The target's spread per value of each categorical column (its most frequent values)."""
    sns = _sns()

    def draw(ax, col):
        keep = df[col].value_counts().index[:TOP_CATEGORIES]
        sub = df[df[col].isin(keep)]
        sns.boxplot(data=sub, x=col, y=target, order=list(keep), ax=ax, color="#93c5fd")

    return _per_column(df, categorical, f"{target} by {{}}", draw)


def pairs_with_target(df: pd.DataFrame, numeric: list[str], target: str):
    """Pairs of the first numeric columns and the target (sampled rows)."""
    import matplotlib.pyplot as plt

    sns = _sns()
    columns = [c for c in numeric if has_values(df[c])][:4]
    if not columns:
        return None
    grid = sns.pairplot(df[[*columns, target]], plot_kws=POINT, height=2.2)
    plt.close(grid.figure)
    return grid.figure


def predicted_vs_actual(y, predictions: dict[str, pd.DataFrame], target: str):
    """Each model's predicted value against the actual one; the diagonal is a perfect model."""
    import numpy as np

    sns = _sns()
    shown = {who: p for who, p in predictions.items() if p is not None}
    fig, axes = _subplots(1, len(shown), (4.6 * len(shown), 4.2))
    axes = [axes] if len(shown) == 1 else axes
    actual = np.asarray(y, dtype=float)
    for ax, (who, table) in zip(axes, shown.items(), strict=True):
        predicted = table["prediction"].to_numpy(dtype=float)
        sns.scatterplot(x=actual, y=predicted, ax=ax, **POINT)
        low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
        ax.plot([low, high], [low, high], color="#b91c1c", linewidth=1, label="perfect")
        ax.set(title=f"{who}: predicted vs actual", xlabel=f"actual {target}", ylabel=f"predicted {target}")
        ax.legend(loc="upper left", fontsize=8)
    return fig


def residuals(y, predictions: dict[str, pd.DataFrame], target: str):
    """Residual (actual − predicted) against the predicted value, and their histogram: a pattern
    or a skew is what the model has not learned."""
    import numpy as np

    sns = _sns()
    shown = {who: p for who, p in predictions.items() if p is not None}
    fig, axes = _subplots(1, 2, (10, 3.8))
    actual = np.asarray(y, dtype=float)
    for who, table in shown.items():
        predicted = table["prediction"].to_numpy(dtype=float)
        sns.scatterplot(x=predicted, y=actual - predicted, ax=axes[0], label=who, **POINT)
        sns.histplot(actual - predicted, bins=30, ax=axes[1], label=who, element="step", fill=False)
    axes[0].axhline(0, color="#b91c1c", linewidth=1)
    axes[0].set(
        title="Residuals against the prediction", xlabel=f"predicted {target}", ylabel="actual − predicted"
    )
    axes[1].set(title="Distribution of the residuals", xlabel="actual − predicted", ylabel="rows")
    axes[1].legend(fontsize=8)
    return fig
