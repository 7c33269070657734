"""Figures and tables the notebooks show. Each returns a matplotlib Figure or a DataFrame;
large tables are sampled (stratified by class) before plotting so plots cost the same at 1e6 rows,
and what is drawn per class or per column is capped (the most frequent classes, then one
'other'), so they cost the same at 600 classes as at 30."""

from __future__ import annotations

from typing import TYPE_CHECKING

# Heavy libraries imported inside the functions below; warm kernels load them early (nbops.runner.preload).
PRELOAD = ("matplotlib.pyplot", "seaborn")

if TYPE_CHECKING:
    import pandas as pd


def _sns():
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return sns


MAX_PLOTTED_COLUMNS = 12  # wide tables: per-column plots of the first ones only (EDA stays bounded)
MAX_PLOTTED_CLASSES = 30  # many classes: the most frequent ones, the rest drawn as one 'other'
ANNOTATED_CLASSES = 20  # a confusion heatmap writes each cell's count up to this many classes
_TICK_CHARS = 30  # a class name longer than this is cut in tick labels


def _first(columns: list[str]) -> list[str]:
    return list(columns)[:MAX_PLOTTED_COLUMNS]


def _tick(label) -> str:
    text = str(label)
    return text if len(text) <= _TICK_CHARS else text[: _TICK_CHARS - 1] + "…"


def other_label(count: int) -> str:
    return f"other ({count} classes)"


def lump_classes(df: pd.DataFrame, target: str, top: int = MAX_PLOTTED_CLASSES) -> pd.DataFrame:
    """`df` with only its `top` most frequent classes kept as they are, the rest relabelled as
    one 'other (N classes)': plots that draw per class cost the same at 600 classes as at 30."""
    counts = df[target].value_counts()
    if len(counts) <= top:
        return df
    keep = counts.index[:top]
    other = other_label(len(counts) - top)
    return df.assign(**{target: df[target].where(df[target].isin(keep), other).astype("str")})


def _class_order(df: pd.DataFrame, target: str) -> list[str]:
    """Classes sorted, a lumped 'other' last."""
    return sorted(df[target].dropna().unique(), key=lambda c: (str(c).startswith("other ("), str(c)))


def sample_rows(
    df: pd.DataFrame, target: str, max_rows: int, seed: int = 0, task: str = "classification"
) -> pd.DataFrame:
    """At most `max_rows` rows, keeping every class's share (and at least one row of each); a
    regression table's rows drawn plainly."""
    if len(df) <= max_rows:
        return df
    if task == "regression":
        return df.sample(n=max_rows, random_state=seed)
    frac = max_rows / len(df)
    return df.groupby(target, group_keys=False, observed=True).sample(frac=frac, random_state=seed)


def has_values(s: pd.Series) -> bool:
    return bool(s.notna().any())


def column_notes(df: pd.DataFrame, columns: list[str]) -> list[str]:
    """What the EDA must say about columns it cannot plot: the ones with no value at all."""
    return [f"column {col} has no values" for col in columns if not has_values(df[col])]


def _number(value) -> str:
    """A min/median/max cell: six significant digits, blank when there is no number."""
    import math

    return "" if value is None or math.isnan(value) else f"{value:.6g}"


def summarize_table(df: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """One row per column: type, missing count and share, distinct values, min/median/max
    (as text: blank for categorical columns and for numeric ones without any value)."""
    import pandas as pd

    rows = []
    for col in df.columns:
        s = df[col]
        kind = "numeric" if col in numeric else "categorical" if col in categorical else "target"
        row = {
            "column": col,
            "kind": kind,
            "missing": int(s.isna().sum()),
            "missing_%": round(100 * float(s.isna().mean()), 2),
            "distinct": int(s.nunique()),
        }
        if col in numeric:
            row.update(min=_number(s.min()), median=_number(s.median()), max=_number(s.max()))
        else:
            row.update(min="", median="", max="")
        rows.append(row)
    return pd.DataFrame(rows).set_index("column")


def class_balance(df: pd.DataFrame, target: str):
    sns = _sns()
    df = lump_classes(df[[target]], target)
    counts = df[target].value_counts().reindex(_class_order(df, target))
    fig, ax = _subplots(1, 1, (6, 3.2))
    sns.barplot(x=counts.index, y=counts.values, hue=counts.index, ax=ax, legend=False, palette="viridis")
    for i, v in enumerate(counts.values):
        ax.text(i, v, f"{v} ({v / counts.sum():.0%})", ha="center", va="bottom", fontsize=9)
    ax.set(title=f"Class balance of {target}", xlabel=target, ylabel="rows")
    ax.set_xticks(range(len(counts)), [_tick(c) for c in counts.index])
    return fig


def _subplots(nrows, ncols, size):
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained")
    plt.close(fig)  # shown by returning it, not by pyplot's global state
    # A closed figure is left a bare canvas that draws the whole figure again for every text
    # extent asked (seaborn asks one per tick label): gigabytes with hundreds of labels.
    FigureCanvasAgg(fig)
    return fig, axes[0, 0] if nrows * ncols == 1 else axes.ravel()


def _no_values(ax, col: str) -> None:
    """An axis that says its column is empty, where the plot would be (seaborn fails on it)."""
    ax.text(0.5, 0.5, f"{col} has no values", ha="center", va="center", transform=ax.transAxes)
    ax.set(xticks=[], yticks=[])


def numeric_by_class(df: pd.DataFrame, numeric: list[str], target: str):
    numeric = _first(numeric)
    sns = _sns()
    if not numeric:
        return None
    fig, axes = _subplots(1, len(numeric), (4.5 * len(numeric), 3.5))
    axes = [axes] if len(numeric) == 1 else axes
    df = lump_classes(df[[*numeric, target]], target)
    order = _class_order(df, target)
    for ax, col in zip(axes, numeric, strict=True):
        ax.set_title(f"{col} by {target}")
        if not has_values(df[col]):
            _no_values(ax, col)
            continue
        sns.boxplot(
            data=df,
            x=target,
            y=col,
            order=order,
            hue=target,
            hue_order=order,
            ax=ax,
            legend=False,
            palette="viridis",
        )
        ax.set_xticks(range(len(order)), [_tick(c) for c in order])
    return fig


def categorical_by_class(df: pd.DataFrame, categorical: list[str], target: str, top: int = 12):
    categorical = _first(categorical)
    sns = _sns()
    if not categorical:
        return None
    fig, axes = _subplots(1, len(categorical), (4.5 * len(categorical), 3.5))
    axes = [axes] if len(categorical) == 1 else axes
    df = lump_classes(df[[*categorical, target]], target)
    order = _class_order(df, target)
    for ax, col in zip(axes, categorical, strict=True):
        ax.set_title(f"{target} by {col}")
        if not has_values(df[col]):
            _no_values(ax, col)
            continue
        keep = df[col].value_counts().index[:top]
        sub = df[df[col].isin(keep)]
        sns.countplot(data=sub, x=col, hue=target, hue_order=order, ax=ax, palette="viridis")
        ax.legend(fontsize=7, title=None)
    return fig


def relationships(df: pd.DataFrame, numeric: list[str], target: str):
    sns = _sns()
    numeric = [c for c in numeric if has_values(df[c])]
    if len(numeric) < 2:
        return None
    df = lump_classes(df[[*numeric[:5], target]], target)
    grid = sns.pairplot(
        df,
        hue=target,
        hue_order=_class_order(df, target),
        palette="viridis",
        plot_kws={"s": 14, "alpha": 0.7},
        height=2.2,
    )
    import matplotlib.pyplot as plt

    plt.close(grid.figure)
    return grid.figure


def correlations(
    df: pd.DataFrame, numeric: list[str], target: str | None = None, task: str = "classification"
):
    """Spearman correlations of the numeric columns (and a numeric target)."""
    numeric = _first([c for c in numeric if has_values(df[c])])
    if task == "regression" and target is not None:
        numeric = [*numeric, target]
    sns = _sns()
    if len(numeric) < 2:
        return None
    corr = df[numeric].corr(method="spearman")
    fig, ax = _subplots(1, 1, (1.2 * len(numeric) + 3, 1.0 * len(numeric) + 2))
    sns.heatmap(corr, annot=True, fmt=".2f", vmin=-1, vmax=1, cmap="vlag", ax=ax)
    ax.set_title("Spearman correlation of numeric columns")
    return fig


def missing_values(df: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    counts = df.isna().sum()
    return pd.DataFrame({"missing": counts, "missing_%": (100 * counts / len(df)).round(2)})


def top_confusion(matrix, labels: list[str], top: int = MAX_PLOTTED_CLASSES):
    """(matrix, labels) of the `top` classes with the most actual rows, in their order, and one
    'other' row and column summing the rest; as given when there are no more than `top`."""
    import numpy as np

    m = np.asarray(matrix, dtype=np.int64).reshape(len(labels), len(labels))
    if len(labels) <= top:
        return m, list(labels)
    keep = np.sort(np.argsort(-m.sum(axis=1), kind="stable")[:top])
    rest = np.setdiff1d(np.arange(len(labels)), keep)
    out = np.zeros((top + 1, top + 1), dtype=np.int64)
    out[:top, :top] = m[np.ix_(keep, keep)]
    out[:top, top] = m[keep].sum(axis=1) - out[:top, :top].sum(axis=1)
    out[top, :top] = m[:, keep].sum(axis=0) - out[:top, :top].sum(axis=0)
    out[top, top] = m.sum() - out.sum()
    return out, [labels[i] for i in keep] + [other_label(len(rest))]


def confusion_heatmap(matrix: list[list[int]], labels: list[str], title: str, target: str | None = None):
    """Rows: the actual `target`, columns: the predicted one. Many classes: the most frequent
    MAX_PLOTTED_CLASSES and one 'other'; counts written in the cells up to ANNOTATED_CLASSES."""
    sns = _sns()
    shown, names = top_confusion(matrix, labels)
    n = len(names)
    fig, ax = _subplots(1, 1, (0.55 * n + 2.6, 0.45 * n + 1.8))
    ticks = [_tick(name) for name in names]
    annotate = n <= ANNOTATED_CLASSES
    sns.heatmap(
        shown,
        annot=annotate,
        fmt="d",
        cmap="Blues",
        cbar=not annotate,
        xticklabels=ticks,
        yticklabels=ticks,
        ax=ax,
    )
    what = f" {target}" if target else ""
    if n < len(labels):
        title = f"{title}\n(the {n - 1} of {len(labels)} classes with most rows; the rest as 'other')"
    ax.set(title=title, xlabel=f"predicted{what}", ylabel=f"actual{what}")
    return fig


def per_class_f1(scores: dict[str, dict], title: str = "Per-class F1 on the holdout"):
    """Bars of F1 per class for each scored model, side by side."""
    import pandas as pd

    sns = _sns()
    scored = [metrics for metrics in scores.values() if metrics]
    shown = set(_most_support(scored[0]["per_class"])) if scored else set()
    rows = [
        {"model": who, "class": label, "f1": v["f1"]}
        for who, metrics in scores.items()
        if metrics
        for label, v in metrics["per_class"].items()
        if label in shown
    ]
    fig, ax = _subplots(1, 1, (7, 3.8))
    sns.barplot(data=pd.DataFrame(rows), x="class", y="f1", hue="model", ax=ax, palette="Set2")
    ax.set_xticks(ax.get_xticks(), [_tick(t.get_text()) for t in ax.get_xticklabels()])
    if scored and len(shown) < len(scored[0]["per_class"]):
        title = f"{title} (the {len(shown)} of {len(scored[0]['per_class'])} classes with most rows)"
    ax.set(ylim=(0, 1.05), title=title)
    # below the axes, not over the bars (an F1 of 1.0 reaches the top of the plot)
    handles, names = ax.get_legend_handles_labels()
    ax.get_legend().remove()
    fig.legend(handles, names, loc="outside lower center", ncol=len(names), frameon=False)
    return fig


def _most_support(per_class: dict[str, dict], top: int = MAX_PLOTTED_CLASSES) -> list[str]:
    """The `top` classes with the most holdout rows (all of them when there are no more)."""
    ranked = sorted(per_class, key=lambda label: -per_class[label].get("support", 0))
    return ranked[:top]
