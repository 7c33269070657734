"""Data tests: the shipped schema accepts the synthetic and the real table, the synthetic table
looks like the real one, and no row is in both parts of the split."""

import pandas as pd
import pytest

from nbops.ml.data import load_table, split_holdout
from nbops.ml.synthetic import drug_label, generate_drug_table
from nbops.params import load_params
from tests.conftest import REPO

REAL = REPO.parent / "shared" / "data" / "drug200.csv"
needs_real = pytest.mark.skipif(not REAL.exists(), reason="reference table ../shared/data/drug200.csv absent")


@pytest.fixture
def params():
    return load_params(REPO / "params" / "default.yaml")


def test_synthetic_table_passes_the_default_schema(tmp_path, params):
    params.data.path = "missing.csv"
    df, path = load_table(params, tmp_path)
    assert path == tmp_path / params.data.synthetic.path
    assert len(df) == params.data.synthetic.rows
    assert set(df["Drug"]) == {"drugA", "drugB", "drugC", "drugX", "drugY"}


def test_synthetic_file_is_generated_once_and_never_overwritten(tmp_path, params):
    params.data.path = "missing.csv"
    _, path = load_table(params, tmp_path)
    path.write_text(path.read_text().replace("drugY", "DrugY"))  # a user's edit
    before = path.read_text()
    load_table(params, tmp_path)
    assert path.read_text() == before


def test_generator_is_seeded():
    assert generate_drug_table(50, seed=1).equals(generate_drug_table(50, seed=1))
    assert not generate_drug_table(50, seed=1).equals(generate_drug_table(50, seed=2))


def test_label_noise_flips_about_that_share():
    clean = generate_drug_table(4000, seed=5)
    noisy = generate_drug_table(4000, seed=5, label_noise=0.1)
    assert 0.08 < (clean["Drug"] != noisy["Drug"]).mean() < 0.12


@needs_real
def test_real_table_passes_the_default_schema(tmp_path, params):
    params.data.path = str(REAL)
    df, _ = load_table(params, tmp_path)
    assert len(df) == 200


@needs_real
def test_synthetic_rule_explains_the_real_table():
    real = pd.read_csv(REAL)
    rule = drug_label(
        real["Age"].to_numpy(),
        real["BP"].to_numpy(),
        real["Cholesterol"].to_numpy(),
        real["Na_to_K"].to_numpy(),
    )
    assert (rule == real["Drug"].to_numpy()).mean() == 1.0


@needs_real
def test_synthetic_marginals_are_close_to_the_real_ones():
    real = pd.read_csv(REAL)
    syn = generate_drug_table(20_000, seed=0)
    for col in ("Sex", "BP", "Cholesterol", "Drug"):
        gap = (real[col].value_counts(normalize=True) - syn[col].value_counts(normalize=True)).abs().max()
        assert gap < 0.06, f"{col} shares differ by {gap:.3f}"
    for col in ("Age", "Na_to_K"):
        assert abs(real[col].median() - syn[col].median()) / real[col].median() < 0.1
        assert syn[col].min() >= real[col].min() * 0.95 and syn[col].max() <= real[col].max() * 1.05


def test_split_is_disjoint_stratified_and_seeded(tmp_path, params):
    params.data.path = "missing.csv"
    df, _ = load_table(params, tmp_path)
    train, hold = split_holdout(df, "Drug", 0.2, 42)
    assert not set(train) & set(hold)
    assert set(train) | set(hold) == set(df.index)
    assert len(hold) == 40
    shares = df.loc[hold, "Drug"].value_counts(normalize=True) - df["Drug"].value_counts(normalize=True)
    assert shares.abs().max() < 0.05
    assert split_holdout(df, "Drug", 0.2, 42) == (train, hold)
    assert split_holdout(df, "Drug", 0.2, 7)[1] != hold
