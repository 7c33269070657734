"""The paired bootstrap of ROC AUC and of regression errors (nbops.ml.bootstrap says how)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbops.ml.bootstrap import (
    AUC_COARSE_BINS,
    AUC_MAX_CELLS,
    CHUNK_CELLS,
    ERROR_METRICS,
    EXACT_ROWS,
    GROUPS,
    RESAMPLES,
    SCORE_DECIMALS,
    PairedInterval,
    _check_settings,
    _paired,
)

if TYPE_CHECKING:
    import numpy as np


def _row_stats(metric: str, y, a, b) -> np.ndarray:
    """Per row, the values whose sums make the metric: [n, k]."""
    import numpy as np

    ea, eb = a - y, b - y
    if metric == "mae":
        return np.column_stack([np.abs(ea), np.abs(eb)])
    if metric == "rmse":
        return np.column_stack([ea * ea, eb * eb])
    return np.column_stack([ea * ea, eb * eb, y, y * y])


def _from_sums(metric: str, sums: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Both models' metric from sums [..., k] over n rows."""
    import numpy as np

    if metric == "mae":
        return sums[..., 0] / n, sums[..., 1] / n
    if metric == "rmse":
        return np.sqrt(np.maximum(sums[..., 0], 0) / n), np.sqrt(np.maximum(sums[..., 1], 0) / n)
    total = sums[..., 3] - sums[..., 2] ** 2 / n
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.where(total > 0, total, np.nan)  # a resample with one y value has no R²
        return 1 - sums[..., 0] / total, 1 - sums[..., 1] / total


def _exact_sums(stats: np.ndarray, resamples: int, rng) -> np.ndarray:
    """Sums over `resamples` resamples of the rows drawn with replacement: [resamples, k]."""
    import numpy as np

    n = len(stats)
    chunk = max(1, CHUNK_CELLS // n)
    out = np.empty((resamples, stats.shape[1]))
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        rows = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = stats[rows].sum(axis=1)
    return out


def _grouped_sums(stats: np.ndarray, resamples: int, rng, groups: int = GROUPS) -> np.ndarray:
    """The same sums, rows in `groups` groups of neighbours by the difference of the two models'
    values: exact multinomial counts per group, each group's sum drawn from a normal with the
    group's mean and covariance times its count."""
    import numpy as np

    n, k = stats.shape
    difference = stats[:, 0] - stats[:, 1]
    edges = np.quantile(difference, np.linspace(0, 1, groups + 1)[1:-1])  # a partition, not a sort
    group = np.searchsorted(edges, difference, side="right")
    sizes = np.bincount(group, minlength=groups).astype(float)
    kept = sizes > 0  # tied differences leave some groups empty
    group = np.cumsum(kept)[group] - 1
    sizes = sizes[kept]
    groups = len(sizes)
    means = np.column_stack([np.bincount(group, stats[:, i], groups) for i in range(k)]) / sizes[:, None]
    dev = stats - means[group]  # centred first: y² of large y would cancel
    covs = (
        np.column_stack(
            [np.bincount(group, dev[:, i] * dev[:, j], groups) for i in range(k) for j in range(k)]
        )
        / sizes[:, None]
    )
    counts = rng.multinomial(n, sizes / n, size=resamples).astype(float)
    centre = counts @ means
    spread = (counts @ covs).reshape(resamples, k, k)
    values, vectors = np.linalg.eigh(spread)
    root = vectors * np.sqrt(np.clip(values, 0, None))[:, None, :]
    noise = np.einsum("rij,rj->ri", root, rng.standard_normal((resamples, k)))
    return centre + noise


def paired_error_interval(
    y_true,
    challenger_pred,
    champion_pred,
    metric: str = "rmse",
    *,
    resamples: int = RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
    exact_rows: int = EXACT_ROWS,
) -> PairedInterval:
    """The percentile interval of Δ metric (rmse, mae, r2) over paired bootstrap resamples of
    the rows; above `exact_rows` rows, resampled by groups (see nbops.ml.bootstrap)."""
    import numpy as np

    if metric not in ERROR_METRICS:
        raise ValueError(
            f"metric {metric!r}: the paired bootstrap of errors knows {', '.join(ERROR_METRICS)}"
        )
    _check_settings(confidence, resamples)
    y, a, b = (np.asarray(v, dtype=float) for v in (y_true, challenger_pred, champion_pred))
    if not len(y) == len(a) == len(b):
        raise ValueError(f"{len(y)} true values, {len(a)} and {len(b)} predictions: one per row each")
    if len(y) == 0:
        raise ValueError("no held-out rows to compare on")
    if not (np.isfinite(y).all() and np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a true value or a prediction is not a finite number")
    n = len(y)
    stats = _row_stats(metric, y, a, b)
    rng = np.random.default_rng(seed)
    if n <= exact_rows:
        sums = _exact_sums(stats, resamples, rng)
    else:
        sums = _grouped_sums(stats, resamples, rng, min(GROUPS, n))
    points = _from_sums(metric, stats.sum(axis=0), n)
    return _paired(
        metric, n, resamples, confidence, seed, tuple(map(float, points)), _from_sums(metric, sums, n)
    )


def _auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC per resample from positive and negative counts per score bin [resample, bin] (ties half)."""
    import numpy as np

    below = np.cumsum(neg, axis=-1) - neg
    pairs = pos.sum(axis=-1) * neg.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, (pos * (below + 0.5 * neg)).sum(axis=-1) / pairs, np.nan)


def _percentile_bins(scores: np.ndarray, bins: int) -> np.ndarray:
    """Each score's bin among `bins` bins of equal share of the rows (AUC depends on ranks only)."""
    import numpy as np

    edges = np.unique(np.quantile(scores, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, scores, side="right").astype(np.int64)


def paired_auc_interval(
    y_true,
    challenger_score,
    champion_score,
    positive,
    *,
    resamples: int = RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedInterval:
    """The percentile interval of Δ ROC AUC of two binary models' positive-class probabilities."""
    import numpy as np
    from scipy import sparse

    _check_settings(confidence, resamples)
    y = np.fromiter((v == positive for v in y_true), dtype=np.int64, count=len(y_true))
    scores = [np.asarray(s, dtype=float) for s in (challenger_score, champion_score)]
    if not len(y) == len(scores[0]) == len(scores[1]) or len(y) == 0:
        raise ValueError(
            f"{len(y)} true labels, {len(scores[0])} and {len(scores[1])} scores: one per row each"
        )
    bins = 10**SCORE_DECIMALS + 1
    a, b = (np.rint(np.clip(s, 0, 1) * (bins - 1)).astype(np.int64) for s in scores)
    cells, counts = np.unique((y * bins + a) * bins + b, return_counts=True)
    if len(cells) > AUC_MAX_CELLS:  # ranks kept coarser: each model's scores by its own percentiles
        bins = AUC_COARSE_BINS
        a, b = (_percentile_bins(s, bins) for s in scores)
        cells, counts = np.unique((y * bins + a) * bins + b, return_counts=True)
    cell_y, cell_a, cell_b = cells // (bins * bins), (cells // bins) % bins, cells % bins
    n = len(y)

    def histograms(weights: np.ndarray, score_bins: np.ndarray) -> np.ndarray:
        onehot = sparse.csr_matrix(
            (np.ones(len(cells)), (np.arange(len(cells)), cell_y * bins + score_bins)),
            shape=(len(cells), 2 * bins),
        )
        out = np.asarray(onehot.T @ weights.T).T
        return _auc_from_histograms(out[:, bins:], out[:, :bins])

    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_CELLS // len(cells))
    samples_a, samples_b = [], []
    for start in range(0, resamples, chunk):
        draws = rng.multinomial(n, counts / n, size=min(chunk, resamples - start)).astype(float)
        samples_a.append(histograms(draws, cell_a))
        samples_b.append(histograms(draws, cell_b))
    observed = counts.astype(float)[None, :]
    points = (float(histograms(observed, cell_a)[0]), float(histograms(observed, cell_b)[0]))
    samples = (np.concatenate(samples_a), np.concatenate(samples_b))
    return _paired("roc_auc", n, resamples, confidence, seed, points, samples)
