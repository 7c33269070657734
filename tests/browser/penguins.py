"""A penguins-like champion built in the test (seaborn's penguins needs the network): long column
names, missing numbers and an empty category in the training table, and categories whose most
frequent value is not the alphabetically first (Dream, Male)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
CATEGORICAL = ["island", "sex"]
TARGET = "species"
# (island, share) and (sex, share): the most frequent is not the alphabetically first
ISLANDS = (["Biscoe", "Dream", "Torgersen"], [0.3, 0.5, 0.2])
SEXES = (["Female", "Male"], [0.4, 0.6])


def penguins_table(rows: int = 240, seed: int = 0) -> pd.DataFrame:
    """bill_length_mm in 33.1..59.6 exactly (the ranges the messages quote), a few NaNs and empty sexes."""
    rng = np.random.default_rng(seed)
    species = rng.choice(["Adelie", "Chinstrap", "Gentoo"], size=rows)
    base = {
        "Adelie": (38.8, 18.3, 190, 3700),
        "Chinstrap": (48.8, 18.4, 196, 3730),
        "Gentoo": (47.5, 15.0, 217, 5080),
    }
    centre = np.array([base[s] for s in species], dtype=float)
    df = pd.DataFrame(
        {
            "bill_length_mm": np.clip(centre[:, 0] + rng.normal(0, 2.5, rows), 33.1, 59.6).round(1),
            "bill_depth_mm": (centre[:, 1] + rng.normal(0, 0.8, rows)).round(1),
            "flipper_length_mm": (centre[:, 2] + rng.normal(0, 5, rows)).round().astype(float),
            "body_mass_g": (centre[:, 3] + rng.normal(0, 300, rows)).round(-1),
            "island": rng.choice(ISLANDS[0], size=rows, p=ISLANDS[1]),
            "sex": rng.choice(SEXES[0], size=rows, p=SEXES[1]).astype(object),
            TARGET: species,
        }
    )
    df.loc[[0, 1], "bill_length_mm"] = [33.1, 59.6]  # the range ends
    df.loc[[5, 17], "flipper_length_mm"] = np.nan
    df.loc[[3, 9, 30], "sex"] = None
    return df


def fit_penguins(df: pd.DataFrame):
    """The project's own pipeline (imputers, one-hot encoder with handle_unknown='ignore')."""
    from nbops.ml.data import infer_schema
    from nbops.ml.models import make_model

    model = make_model("decision_tree", {"random_state": 0, "max_depth": 4}, NUMERIC, CATEGORICAL)
    model.fit(df[[*NUMERIC, *CATEGORICAL]], df[TARGET])
    return model, infer_schema(df, TARGET, NUMERIC, CATEGORICAL)


def write_exported_champion(folder: Path, model, schema: dict) -> Path:
    """The folder `make space` exports (`model/` as MLflow writes it, schema, card), without MLflow."""
    import skops.io
    import yaml

    (folder / "model").mkdir(parents=True)
    skops.io.dump(model, folder / "model" / "model.skops")
    mlmodel = {"flavors": {"sklearn": {"serialization_format": "skops", "pickled_model": "model.skops"}}}
    (folder / "model" / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (folder / "schema.json").write_text(json.dumps(schema))
    card = {
        "name": "penguins",
        "version": "1",
        "metrics": {"accuracy": 0.9},
        "labels": [],
        "confusion_matrix": [],
    }
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder
