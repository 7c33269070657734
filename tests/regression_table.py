"""A seeded regression table the tests build: a house price from its size, rooms, age and
district, with an id column, missing values in a numeric and a categorical column."""

from __future__ import annotations

import numpy as np
import pandas as pd

NUMERIC = ["sqft", "rooms", "age"]
CATEGORICAL = ["district"]
TARGET = "price"
DISTRICTS = {"north": 40.0, "south": 0.0, "east": 15.0, "west": -10.0}


def house_table(rows: int = 300, seed: int = 0, noise: float = 8.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sqft = rng.uniform(40, 220, rows).round(1)
    rooms = rng.integers(1, 7, rows)
    age = rng.uniform(0, 80, rows).round(0)
    district = rng.choice(list(DISTRICTS), size=rows)
    price = 50 + 1.2 * sqft + 6 * rooms - 0.4 * age + np.vectorize(DISTRICTS.get)(district)
    df = pd.DataFrame(
        {
            "house_id": np.arange(1000, 1000 + rows),
            "sqft": sqft,
            "rooms": rooms,
            "age": age,
            "district": district.astype(object),
            TARGET: (price + rng.normal(0, noise, rows)).round(2),
        }
    )
    df.loc[[4, 11, 25], "sqft"] = np.nan
    df.loc[[7, 30], "district"] = None
    return df


def regression_params(csv: str, model: str = "ridge", params: dict | None = None, **gate) -> dict:
    """A regression params file (as a mapping) for house_table written to `csv`."""
    return {
        "task": "regression",
        "data": {"path": csv, "target": TARGET, "numeric": NUMERIC, "categorical": CATEGORICAL},
        "split": {"test_size": 0.2, "seed": 42},
        "model": {"name": model, "params": params or {}, "cv_folds": 3},
        "gate": {"floors": {"rmse": 40.0}, **gate},
        "registry": {"model_name": "houses-regressor", "experiment": "houses"},
        "promote": True,
    }
