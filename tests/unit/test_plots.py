import numpy as np
import pandas as pd

from nbops import plots


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
