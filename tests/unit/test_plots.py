import numpy as np
import pandas as pd

from nbops.ml import plots


def wide_table(columns=30, rows=200):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(rows, columns)), columns=[f"c{i}" for i in range(columns)])
    df["y"] = rng.choice(["a", "b"], rows)
    return df


def test_wide_tables_plot_only_the_first_columns():
    df = wide_table()
    numeric = [f"c{i}" for i in range(30)]
    assert len(plots.numeric_by_class(df, numeric, "y").axes) == plots.MAX_PLOTTED_COLUMNS
    corr = plots.correlations(df, numeric)
    assert len(corr.axes[0].get_xticklabels()) == plots.MAX_PLOTTED_COLUMNS


def test_sampling_keeps_every_class_share():
    df = wide_table(columns=2, rows=10_000)
    sample = plots.sample_rows(df, "y", 1000)
    assert 950 <= len(sample) <= 1050
    share = sample["y"].value_counts(normalize=True) - df["y"].value_counts(normalize=True)
    assert share.abs().max() < 0.01


def drug_table(rows=60):
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "Age": rng.integers(15, 75, rows).astype(float),
            "Na_to_K": np.full(rows, np.nan),
            "Sex": rng.choice(["F", "M"], rows),
            "BP": pd.Series([None] * rows, dtype=object),
            "Drug": rng.choice(["drugA", "drugY"], rows),
        }
    )


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_an_empty_numeric_column_is_annotated_not_a_crash():
    df = drug_table()
    fig = plots.numeric_by_class(df, ["Age", "Na_to_K"], "Drug")  # seaborn: UnboundLocalError 'boxprops'
    assert texts(fig) == ["Na_to_K has no values"]
    assert [ax.get_title() for ax in fig.axes] == ["Age by Drug", "Na_to_K by Drug"]
    fig = plots.categorical_by_class(df, ["Sex", "BP"], "Drug")
    assert texts(fig) == ["BP has no values"]
    assert plots.relationships(df, ["Age", "Na_to_K"], "Drug") is None  # one column left to pair
    assert plots.correlations(df, ["Age", "Na_to_K"]) is None


def test_the_eda_names_the_columns_without_values():
    df = drug_table()
    assert plots.column_notes(df, ["Age", "Na_to_K", "Sex", "BP"]) == [
        "column Na_to_K has no values",
        "column BP has no values",
    ]


def test_summary_leaves_min_median_max_blank_where_there_is_no_number():
    df = pd.DataFrame({"Age": [20.0, 30.0, 61.0], "Na_to_K": np.nan, "Sex": list("FMF"), "y": list("abc")})
    table = plots.summarize_table(df, ["Age", "Na_to_K"], ["Sex"])
    assert table.loc["Age", ["min", "median", "max"]].tolist() == ["20", "30", "61"]
    assert table.loc["Na_to_K", ["min", "median", "max"]].tolist() == ["", "", ""]
    assert table.loc["Sex", ["min", "median", "max"]].tolist() == ["", "", ""]
    assert "NaN" not in table.to_string() and "nan" not in table.to_html()


def test_per_class_f1_legend_sits_below_the_bars():
    import io

    scores = {
        "challenger v2": {"per_class": {"a": {"f1": 1.0}, "b": {"f1": 0.5}}},
        "champion v1": {"per_class": {"a": {"f1": 1.0}, "b": {"f1": 0.9}}},
    }
    fig = plots.per_class_f1(scores)
    fig.savefig(io.BytesIO(), format="png")  # lays the figure out
    (ax,) = fig.axes
    assert ax.get_legend() is None
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["challenger v2", "champion v1"]
    assert legend.get_window_extent().y1 <= ax.get_tightbbox().y0  # under the axes and their labels


def test_confusion_heatmap_axes_name_the_target():
    fig = plots.confusion_heatmap([[2, 0], [1, 3]], ["a", "b"], "challenger v2", "Species")
    assert (fig.axes[0].get_ylabel(), fig.axes[0].get_xlabel()) == ("actual Species", "predicted Species")
    assert plots.confusion_heatmap([[1]], ["a"], "t").axes[0].get_ylabel() == "actual"


# ------------------------------------------------------------------ the notebooks' score tables

METRICS = {"accuracy": 0.9, "macro_f1": 0.85, "weighted_f1": 0.875}


def test_metrics_table_without_a_champion_shows_dashes():
    from nbops.ml.evaluation import metrics_table

    table = metrics_table(METRICS, None)
    assert table.loc["accuracy"].tolist() == ["0.9000", "–", "–", "higher"]
    assert "None" not in table.to_string() and "NaN" not in table.to_string()
    table = metrics_table(METRICS, {**METRICS, "accuracy": 0.95})
    assert table.loc["accuracy"].tolist() == ["0.9000", "0.9500", "-0.0500", "higher"]
    assert table.loc["macro_f1", "delta"] == "+0.0000"


def test_cv_table_keeps_the_fold_count_an_integer():
    from nbops.ml.evaluation import cv_table

    scores = {
        "cv_accuracy_mean": 0.91234,
        "cv_accuracy_std": 0.02,
        "cv_macro_f1_mean": 0.8,
        "cv_macro_f1_std": 0.1,
        "cv_folds": 5,
    }
    table = cv_table(scores)
    assert table.index.name == "5-fold CV"
    assert table.to_dict("index") == {
        "accuracy": {"mean": 0.9123, "std": 0.02},
        "macro_f1": {"mean": 0.8, "std": 0.1},
    }
    assert "5.0" not in table.to_string()
    assert cv_table({}).index.name.startswith("no CV")


def record(before, after, promotion=None):
    out = {
        "model_name": "drug-classifier",
        "challenger": {"version": "3"},
        "champion": {"version": before},
        "champion_after": after,
    }
    return out if promotion is None else {**out, "promotion": promotion}


def test_champion_line_says_whether_the_champion_moved():
    from nbops.ml.evaluation import champion_line

    assert champion_line(record("1", "1")) == "champion stays drug-classifier v1"
    assert champion_line(record("1", "3")) == "champion is now drug-classifier v3"
    assert champion_line(record(None, None)) == "no champion yet"
    # deferred promotion: the evaluate step decides, the runner moves the alias after the run
    assert champion_line(record("1", "1", "pending")) == (
        "champion moves to drug-classifier v3 once every step of this run has succeeded (v1 until then)"
    )
    assert champion_line(record(None, None, "pending")).endswith("(no champion until then)")
    assert champion_line(record("1", "3", "applied")) == "champion is now drug-classifier v3"
    assert champion_line(record("1", "1", "withheld")) == "champion stays drug-classifier v1"
    assert champion_line(record("1", "1", "none")) == "champion stays drug-classifier v1"


# ------------------------------------------------------------------ many classes


def many_classes(n=600, rows_per_class=4, seed=0):
    """A confusion matrix of `n` classes, `rows_per_class` actual rows each, half of them right."""
    rng = np.random.default_rng(seed)
    matrix = np.zeros((n, n), dtype=int)
    for i in range(n):
        for _ in range(rows_per_class):
            matrix[i, i if rng.random() < 0.5 else rng.integers(n)] += 1
    matrix[7, 7] += 50  # one class with far more rows than the others
    return matrix, [f"class-{i:03d}" for i in range(n)]


def test_top_confusion_keeps_the_biggest_classes_and_sums_the_rest_into_other():
    matrix, labels = many_classes()
    shown, names = plots.top_confusion(matrix.tolist(), labels)
    assert shown.shape == (31, 31) and len(names) == 31
    assert "class-007" in names and names[-1] == "other (570 classes)"
    assert names[:-1] == sorted(names[:-1])  # in the labels' order
    assert shown.sum() == matrix.sum()
    keep = [labels.index(n) for n in names[:-1]]
    assert shown[:30].sum(axis=1).tolist() == matrix[keep].sum(axis=1).tolist()  # rows: actual counts
    assert shown[:, :30].sum(axis=0).tolist() == matrix[:, keep].sum(axis=0).tolist()
    small = [[2, 0], [1, 3]]
    assert plots.top_confusion(small, ["a", "b"])[0].tolist() == small


def test_the_confusion_heatmap_of_600_classes_shows_31_without_numbers_in_cells():
    matrix, labels = many_classes()
    fig = plots.confusion_heatmap(matrix.tolist(), labels, "challenger v2", "Drug")
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert len(ticks) == 31 and ticks[-1] == "other (570 classes)"
    assert len(ax.texts) == 0  # no per-cell annotation past ANNOTATED_CLASSES
    assert "the 30 of 600 classes with most rows" in ax.get_title()
    assert max(fig.get_size_inches()) < 25
    small = plots.confusion_heatmap([[2, 0], [1, 3]], ["a", "b"], "t")
    assert [t.get_text() for t in small.axes[0].texts] == ["2", "0", "1", "3"]


def test_long_class_names_are_cut_in_tick_labels():
    fig = plots.confusion_heatmap([[1, 0], [0, 1]], ["x" * 5000, "b"], "t")
    assert [len(t.get_text()) for t in fig.axes[0].get_xticklabels()] == [30, 1]


def test_eda_plots_lump_classes_past_the_top_thirty():
    rng = np.random.default_rng(0)
    labels = [f"k{i:03d}" for i in range(600)]
    df = pd.DataFrame({"a": rng.normal(size=2400), "b": rng.normal(size=2400), "y": np.repeat(labels, 4)})
    df = pd.concat([df, df.head(40).assign(y="k999")])  # the most frequent class
    lumped = plots.lump_classes(df, "y")
    assert lumped["y"].nunique() == 31 and (lumped["y"] == "other (571 classes)").sum() == 571 * 4
    fig = plots.class_balance(df, "y")
    names = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(names) == 31 and names[-1] == "other (571 classes)" and "k999" in names
    assert len(plots.numeric_by_class(df, ["a", "b"], "y").axes[0].get_xticklabels()) == 31
    scores = {"per_class": {label: {"f1": 0.5, "support": 4 + (label == "k007")} for label in labels}}
    fig = plots.per_class_f1({"challenger v1": scores})
    assert len(fig.axes[0].get_xticklabels()) == 30 and "k007" in [
        t.get_text() for t in fig.axes[0].get_xticklabels()
    ]
