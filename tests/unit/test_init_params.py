"""`nbops init`: the params file it writes for a table, and the tables it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from nbops.init_params import InitError, draft_params, write_params_file
from nbops.params import load_params


def titanic_like(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """An integer target with its word form beside it (alive), an id, names, missing values, a
    boolean column and a constant one."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["male", "female"], rows, p=[0.65, 0.35])
    pclass = rng.choice([1, 2, 3], rows, p=[0.25, 0.2, 0.55])
    survived = (rng.random(rows) < np.where(sex == "female", 0.74, 0.19) * (1.2 - 0.1 * pclass)).astype(int)
    age = rng.normal(30, 14, rows).clip(1, 80).round()
    age[rng.random(rows) < 0.2] = np.nan
    return pd.DataFrame(
        {
            "passenger_id": np.arange(1, rows + 1),
            "name": [f"Passenger number {i}, travelling in class {c}" for i, c in enumerate(pclass)],
            "pclass": pclass,
            "sex": sex,
            "age": age,
            "fare": rng.lognormal(3, 1, rows).round(2),
            "alone": rng.random(rows) < 0.6,
            "embarked": rng.choice(["S", "C", "Q", None], rows, p=[0.7, 0.18, 0.1, 0.02]),
            "ship": "Titanic",
            "alive": np.where(survived == 1, "yes", "no"),
            "survived": survived,
        }
    )


def write(tmp_path: Path, table: pd.DataFrame, name: str = "titanic.csv", sep: str = ",") -> Path:
    path = tmp_path / "data" / "raw" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, sep=sep)
    return path


def test_columns_are_sorted_and_each_left_out_one_says_why(tmp_path):
    draft = draft_params(write(tmp_path, titanic_like()), "survived")
    assert draft.numeric == ["pclass", "age", "fare"]
    assert draft.categorical == ["sex", "alone", "embarked"]
    why = {c.name: c.why for c in draft.left_out}
    assert why == {
        "passenger_id": "every value is different: an identifier",
        "name": "free text: not a category a model can learn from",
        "ship": "one value only ('Titanic')",
        "alive": "maps one-to-one onto 'survived': the target in disguise",
    }
    assert draft.classes == ["0", "1"]


def test_the_file_validates_and_names_the_registry_after_the_table(tmp_path):
    csv = write(tmp_path, titanic_like(), sep=";")
    out = write_params_file(Path("data/raw/titanic.csv"), "survived", root=tmp_path)
    assert out == tmp_path / "params" / "titanic.yaml"
    params = load_params(out)
    assert params.data.delimiter == ";"  # sniffed
    assert params.data.path == "data/raw/titanic.csv"
    assert params.registry.model_name == "titanic-classifier"
    assert params.model.name == "hist_gradient_boosting" and params.model.params == {"random_state": 42}
    text = out.read_text()
    assert "# left out: 'alive': maps one-to-one onto 'survived': the target in disguise" in text
    # the floors: a margin above the majority-class baseline the comment shows
    survived = pd.read_csv(csv, sep=";")["survived"]
    majority = survived.value_counts(normalize=True).max()
    assert f"accuracy {majority:.3f}" in text
    assert params.gate.metric == "macro_f1" and set(params.gate.floors) == {"macro_f1", "accuracy"}
    assert params.gate.floors["accuracy"] == pytest.approx(round(majority + 0.10, 2))
    assert majority < params.gate.floors["accuracy"] < 0.95
    assert "metric: macro_f1   # or accuracy, weighted_f1, roc_auc\n" in text  # two classes: roc_auc too


def test_an_existing_file_is_kept_unless_forced(tmp_path):
    write(tmp_path, titanic_like())
    out = tmp_path / "params" / "titanic.yaml"
    out.parent.mkdir()
    out.write_text("mine\n")
    with pytest.raises(InitError, match=r"titanic.yaml: exists; --force to overwrite it"):
        write_params_file(Path("data/raw/titanic.csv"), "survived", root=tmp_path)
    assert out.read_text() == "mine\n"
    write_params_file(Path("data/raw/titanic.csv"), "survived", root=tmp_path, force=True)
    assert yaml.safe_load(out.read_text())["data"]["target"] == "survived"


@pytest.mark.parametrize(
    ("edit", "target", "message"),
    [
        (lambda t: t, "survive", r"no column 'survive'; did you mean 'survived'"),
        (lambda t: t.assign(survived=1), "survived", r"column 'survived' has one value only \(1\)"),
        (
            lambda t: t.assign(survived=t.survived.where(~t.index.isin([3, 8]))),
            "survived",
            r"column 'survived' has 2 missing value\(s\) \(lines 5, 10\)",
        ),
    ],
)
def test_refusals_are_one_line_and_write_nothing(tmp_path, edit, target, message):
    write(tmp_path, edit(titanic_like()))
    with pytest.raises(InitError, match=message) as err:
        write_params_file(Path("data/raw/titanic.csv"), target, root=tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "params").exists() or not list((tmp_path / "params").iterdir())
