"""How sure is a difference between two models scored on the same held-out rows?

A paired bootstrap: resample the rows with replacement (the same rows for both models), score
both on each resample, and read the interval of the difference (challenger − champion), for
any gate metric. Three vectorised forms:

- classification labels (macro-F1, accuracy, weighted-F1): every row falls in one cell (true
  label, challenger's label, champion's label), and a resample of n rows is a multinomial draw of
  n over those cells, so the cost depends on the distinct cells (at most classes³), not the rows;
- ROC AUC (binary): the same with cells (true label, each model's positive-class probability
  rounded to 3 decimals), each resample's AUC from its two score histograms; when that makes
  more than AUC_MAX_CELLS cells, each model's probabilities are cut into AUC_COARSE_BINS bins of
  equal share instead (pairs within one bin count half, as ties do);
- regression errors (RMSE, MAE, R²): each metric is a function of sums over the rows (squared or
  absolute errors, y, y²). Up to EXACT_ROWS rows the row indices are drawn as they are. Above
  it the rows are cut into GROUPS groups of neighbours by the difference of the two models'
  errors (its quantiles): each resample draws exactly how many of its rows come from each group (a
  multinomial, as above) and their sums from a normal with the group's mean and covariance
  (their sum over hundreds of near-alike rows): a few passes over the rows plus resamples ×
  groups draws, instead of resamples × rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

LABEL_METRICS = ("macro_f1", "accuracy", "weighted_f1")
ERROR_METRICS = ("rmse", "mae", "r2")
METRICS = (*LABEL_METRICS, "roc_auc", *ERROR_METRICS)
RESAMPLES = 2000
EXACT_ROWS = 20_000  # regression: row indices drawn as they are up to this many rows
GROUPS = 1_000  # regression above EXACT_ROWS: groups of neighbouring rows
SCORE_DECIMALS = 3  # ROC AUC: probabilities rounded to this many decimals in the cells
AUC_MAX_CELLS = 20_000  # more distinct cells than this: each model's scores in AUC_COARSE_BINS
AUC_COARSE_BINS = 100  # bins of equal share of the rows (ties within a bin count half)
CHUNK_CELLS = 4_000_000  # resamples drawn at once: at most this many (resample, cell) counts


@dataclass(frozen=True)
class Interval:
    value: float  # the metric on the held-out rows themselves
    low: float
    high: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedInterval:
    """Δ = challenger − champion of `metric`, with both models' own intervals."""

    metric: str
    rows: int
    resamples: int
    confidence: float
    seed: int
    delta: Interval
    challenger: Interval
    champion: Interval

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return describe(self.to_dict())


def describe(interval: dict) -> str:
    """`macro_f1 +0.050 (95% interval -0.02 to +0.15) on 40 held-out rows`, from to_dict()'s
    record; an error in its own units, to three significant digits: `rmse -0.8 (95% interval
    -2.1 to +0.4)`."""
    d = interval["delta"]
    if interval["metric"] in ("rmse", "mae"):
        point, low, high = signed(d["value"]), signed(d["low"]), signed(d["high"])
    else:
        point, low, high = f"{d['value']:+.3f}", f"{d['low']:+.2f}", f"{d['high']:+.2f}"
    return (
        f"{interval['metric']} {point} ({interval['confidence']:.0%} interval "
        f"{low} to {high}) on {interval['rows']} held-out rows"
    )


def signed(value: float, digits: int = 2) -> str:
    """A signed number with `digits` significant digits, never in exponent form: +1,230, -0.8, +0.0042."""
    import math

    if not math.isfinite(value) or value == 0:
        return f"{value:+.1f}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:+,.{decimals}f}"


def scores_from_confusion(conf: np.ndarray) -> dict[str, np.ndarray]:
    """macro-F1, accuracy and support-weighted F1 of confusion matrices [..., true, predicted]
    (sklearn's definitions with its label list and zero_division=0: a class with no true and no
    predicted row scores F1 = 0)."""
    import numpy as np

    tp = np.diagonal(conf, axis1=-2, axis2=-1).astype(float)
    support = conf.sum(axis=-1)
    predicted = conf.sum(axis=-2)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    rows = support.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "macro_f1": f1.mean(axis=-1),
            "accuracy": tp.sum(axis=-1) / rows,
            "weighted_f1": (f1 * support).sum(axis=-1) / rows,
        }


def _codes(values, labels: list) -> np.ndarray:
    import numpy as np

    index = {label: i for i, label in enumerate(labels)}
    try:
        return np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
    except KeyError as exc:
        raise ValueError(f"label {exc.args[0]!r} is not one of the labels {labels}") from None


def paired_interval(
    y_true,
    challenger_pred,
    champion_pred,
    labels: list,
    metric: str = "macro_f1",
    *,
    resamples: int = RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedInterval:
    """The percentile interval of Δ metric over `resamples` paired bootstrap resamples."""
    import numpy as np

    if metric not in LABEL_METRICS:
        raise ValueError(
            f"metric {metric!r}: the paired bootstrap of labels knows {', '.join(LABEL_METRICS)}"
        )
    _check_settings(confidence, resamples)
    k = len(labels)
    y, a, b = (_codes(v, labels) for v in (y_true, challenger_pred, champion_pred))
    if not len(y) == len(a) == len(b):
        raise ValueError(f"{len(y)} true labels, {len(a)} and {len(b)} predictions: one per row each")
    if len(y) == 0:
        raise ValueError("no held-out rows to compare on")
    n = len(y)
    cells, counts = np.unique((y * k + a) * k + b, return_inverse=False, return_counts=True)
    true, chal, champ = cells // (k * k), (cells // k) % k, cells % k

    def confusion(weights: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """[resample, true, predicted] from each cell's count in each resample."""
        onehot = np.zeros((len(cells), k * k))
        onehot[np.arange(len(cells)), true * k + predicted] = 1.0
        return (weights @ onehot).reshape(*weights.shape[:-1], k, k)

    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts / n, size=resamples).astype(float)
    observed = counts.astype(float)[None, :]
    chal_scores = scores_from_confusion(confusion(draws, chal))[metric]
    champ_scores = scores_from_confusion(confusion(draws, champ))[metric]
    chal_point = float(scores_from_confusion(confusion(observed, chal))[metric][0])
    champ_point = float(scores_from_confusion(confusion(observed, champ))[metric][0])
    return _paired(
        metric, n, resamples, confidence, seed, (chal_point, champ_point), (chal_scores, champ_scores)
    )


def _check_settings(confidence: float, resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")


def _paired(metric, n, resamples, confidence, seed, points, samples) -> PairedInterval:
    """The record from both models' point values and per-resample values."""
    import numpy as np

    alpha = (1 - confidence) / 2

    def interval(point: float, values) -> Interval:
        low, high = np.nanquantile(values, [alpha, 1 - alpha])
        return Interval(float(point), float(low), float(high))

    (a, b), (sa, sb) = points, samples
    return PairedInterval(
        metric=metric,
        rows=n,
        resamples=resamples,
        confidence=confidence,
        seed=seed,
        delta=interval(a - b, sa - sb),
        challenger=interval(a, sa),
        champion=interval(b, sb),
    )
