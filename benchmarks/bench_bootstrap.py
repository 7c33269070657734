"""The gate's paired bootstrap at 1e6 held-out rows, for both tasks (target: at most 5 s).

    python -m benchmarks.run --only bootstrap

Classification: Δ macro-F1 of two five-class label vectors (the confusion-cell multinomial);
regression: Δ RMSE of two prediction vectors (row resampling by groups above 20,000 rows).
2,000 resamples each, as the gate draws them; the inputs are built before the clock starts."""

from __future__ import annotations

import time

ROWS = 1_000_000
BOOTSTRAP_KEYS = ("bootstrap_1e6_classification_s", "bootstrap_1e6_regression_s")


def bench_bootstrap(rounds: int, samples: dict[str, list]) -> None:
    import numpy as np

    from nbops.ml.bootstrap import paired_interval
    from nbops.ml.bootstrap_rows import paired_error_interval

    rng = np.random.default_rng(0)
    labels = ["drugA", "drugB", "drugC", "drugX", "drugY"]
    codes = rng.integers(0, 5, ROWS)
    y = np.array(labels, dtype=object)[codes]
    a = np.array(labels, dtype=object)[np.where(rng.random(ROWS) < 0.9, codes, rng.integers(0, 5, ROWS))]
    b = np.array(labels, dtype=object)[np.where(rng.random(ROWS) < 0.88, codes, rng.integers(0, 5, ROWS))]
    value = rng.normal(100, 20, ROWS)
    pa, pb = value + rng.normal(0, 5, ROWS), value + rng.normal(0, 5.1, ROWS)
    for _ in range(rounds):
        t = time.perf_counter()
        paired_interval(y, a, b, labels, seed=42)
        samples["bootstrap_1e6_classification_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        paired_error_interval(value, pa, pb, "rmse", seed=42)
        samples["bootstrap_1e6_regression_s"].append(time.perf_counter() - t)
