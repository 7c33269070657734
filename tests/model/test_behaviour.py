"""Behavioural tests of the default model (decision tree as in params/default.yaml) trained on
the synthetic table: minimum functionality, direction and invariance."""

import pandas as pd
import pytest

from nbops.ml.models import make_model
from nbops.ml.synthetic import generate_drug_table
from nbops.params import load_params
from tests.conftest import REPO


@pytest.fixture(scope="module")
def model():
    params = load_params(REPO / "params" / "default.yaml")
    table = generate_drug_table(600, seed=11)
    m = make_model(params.model.name, params.model.params, params.data.numeric, params.data.categorical)
    return m.fit(table[params.data.numeric + params.data.categorical], table["Drug"])


def rows(*records):
    return pd.DataFrame(records, columns=["Age", "Na_to_K", "Sex", "BP", "Cholesterol"])


KNOWN = [
    ((23, 25.4, "F", "HIGH", "HIGH"), "drugY"),
    ((35, 10.0, "M", "HIGH", "NORMAL"), "drugA"),
    ((65, 9.0, "F", "HIGH", "HIGH"), "drugB"),
    ((47, 10.1, "M", "LOW", "HIGH"), "drugC"),
    ((28, 7.8, "F", "NORMAL", "HIGH"), "drugX"),
    ((40, 8.5, "M", "LOW", "NORMAL"), "drugX"),
]


@pytest.mark.parametrize(("row", "drug"), KNOWN)
def test_known_rows_give_known_drugs(model, row, drug):
    assert model.predict(rows(row))[0] == drug


@pytest.mark.parametrize(("row", "_"), KNOWN)
def test_na_to_k_far_above_the_learned_split_gives_drug_y(model, row, _):
    age, _na, sex, bp, chol = row
    assert model.predict(rows((age, 35.0, sex, bp, chol)))[0] == "drugY"


@pytest.mark.parametrize(("row", "drug"), KNOWN)
def test_flipping_sex_does_not_change_rule_following_rows(model, row, drug):
    age, na, sex, bp, chol = row
    flipped = (age, na, "M" if sex == "F" else "F", bp, chol)
    assert model.predict(rows(flipped))[0] == drug
