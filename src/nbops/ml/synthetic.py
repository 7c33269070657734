"""A seeded SYNTHETIC stand-in for the drug classification table (drug200 schema).

The marginals follow the public table (Age 15-74 uniform, Sex ~52% M, BP HIGH/LOW/NORMAL
~38/32/30%, Cholesterol ~50/50, Na_to_K ~6-38 with ~45% above 15) and the labels follow the
rule that explains all 200 real rows:

    Na_to_K > 15                    -> drugY
    BP HIGH and Age <= 50           -> drugA
    BP HIGH and Age  > 50           -> drugB
    BP LOW and Cholesterol HIGH     -> drugC
    otherwise                       -> drugX

`label_noise` replaces that share of labels with a random other drug. The file this writes
starts with no marker row (the schema must match), so its name says `synthetic`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

DRUGS = ("drugA", "drugB", "drugC", "drugX", "drugY")
NA_TO_K_SPLIT = 15.0


def drug_label(age, bp, cholesterol, na_to_k):
    """The reference table's label rule, vectorised over numpy arrays."""
    import numpy as np

    return np.select(
        [
            na_to_k > NA_TO_K_SPLIT,
            (bp == "HIGH") & (age <= 50),
            bp == "HIGH",
            (bp == "LOW") & (cholesterol == "HIGH"),
        ],
        ["drugY", "drugA", "drugB", "drugC"],
        default="drugX",
    )


def generate_drug_table(rows: int = 200, seed: int = 42, label_noise: float = 0.0):
    """Return a synthetic DataFrame with columns Age, Sex, BP, Cholesterol, Na_to_K, Drug."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.integers(15, 75, size=rows)
    sex = rng.choice(["F", "M"], size=rows, p=[0.48, 0.52])
    bp = rng.choice(["HIGH", "LOW", "NORMAL"], size=rows, p=[0.385, 0.32, 0.295])
    chol = rng.choice(["HIGH", "NORMAL"], size=rows, p=[0.515, 0.485])
    high = rng.random(rows) < 0.455
    na_low = rng.uniform(6.2, NA_TO_K_SPLIT, size=rows)
    na_high = np.minimum(NA_TO_K_SPLIT + 0.05 + rng.gamma(2.0, 4.2, size=rows), 38.5)
    na_to_k = np.round(np.where(high, na_high, na_low), 3)
    drug = drug_label(age, bp, chol, na_to_k).astype(object)
    if label_noise > 0:
        flip = rng.random(rows) < label_noise
        for i in np.flatnonzero(flip):
            drug[i] = rng.choice([d for d in DRUGS if d != drug[i]])
    return pd.DataFrame(
        {"Age": age, "Sex": sex, "BP": bp, "Cholesterol": chol, "Na_to_K": na_to_k, "Drug": drug}
    )


def write_synthetic_table(path: str | Path, rows: int, seed: int, label_noise: float) -> Path:
    """Generate the table into `path` once; an existing file is never overwritten."""
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    generate_drug_table(rows, seed, label_noise).to_csv(tmp, index=False)
    os.replace(tmp, path)  # two runs racing write the same seeded table: either one wins whole
    return path
