"""The paired bootstrap of the gate: challenger and champion predicted the same held-out rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from nbops.ml.bootstrap import paired_interval, scores_from_confusion

LABELS = ["drugA", "drugB", "drugC", "drugX", "drugY"]


def holdout(rows: int = 40) -> np.ndarray:
    """`rows` held-out labels over five classes, as drug200's 40-row holdout has."""
    return np.array([LABELS[i % len(LABELS)] for i in range(rows)], dtype=object)


def wrong_on(y: np.ndarray, rows: list[int]) -> np.ndarray:
    """The labels with the given rows predicted as the next class."""
    pred = y.copy()
    for i in rows:
        pred[i] = LABELS[(LABELS.index(y[i]) + 1) % len(LABELS)]
    return pred


@pytest.mark.parametrize("metric", ["macro_f1", "accuracy", "weighted_f1"])
def test_the_point_values_are_sklearns(metric):
    rng = np.random.default_rng(3)
    y = rng.choice(LABELS, 300)
    a = np.where(rng.random(300) < 0.8, y, rng.choice(LABELS, 300))
    b = np.where(rng.random(300) < 0.7, y, rng.choice(LABELS, 300))
    score = {
        "macro_f1": lambda p: f1_score(y, p, labels=LABELS, average="macro", zero_division=0),
        "accuracy": lambda p: accuracy_score(y, p),
        "weighted_f1": lambda p: f1_score(y, p, labels=LABELS, average="weighted", zero_division=0),
    }[metric]
    result = paired_interval(y, a, b, LABELS, metric, seed=1)
    assert result.challenger.value == pytest.approx(score(a))
    assert result.champion.value == pytest.approx(score(b))
    assert result.delta.value == pytest.approx(score(a) - score(b))
    assert result.delta.low <= result.delta.value <= result.delta.high


def test_one_row_apart_is_noise_eleven_rows_apart_is_progress():
    y = holdout(40)
    near = paired_interval(y, y, wrong_on(y, [7]), LABELS, seed=42)
    assert near.delta.value > 0 and near.delta.low <= 0  # better on one row: not beyond doubt
    far = paired_interval(y, y, wrong_on(y, list(range(0, 33, 3))), LABELS, seed=42)
    assert far.delta.low > 0  # better on eleven rows of forty: beyond doubt
    assert "on 40 held-out rows" in far.describe()


def test_identical_predictions_tie_exactly():
    y = holdout(40)
    pred = wrong_on(y, [1, 2])
    tie = paired_interval(y, pred, pred, LABELS, seed=0)
    assert (tie.delta.value, tie.delta.low, tie.delta.high) == (0.0, 0.0, 0.0)


def test_same_seed_same_interval_and_the_seed_matters():
    rng = np.random.default_rng(5)
    y = rng.choice(LABELS, 200)
    a = np.where(rng.random(200) < 0.85, y, rng.choice(LABELS, 200))
    b = np.where(rng.random(200) < 0.8, y, rng.choice(LABELS, 200))
    first, again = (paired_interval(y, a, b, LABELS, seed=11) for _ in range(2))
    assert first == again
    assert paired_interval(y, a, b, LABELS, seed=12).delta != first.delta


def test_the_interval_is_the_one_resampling_row_indices_gives():
    """Same distribution as drawing row indices with replacement (the textbook bootstrap)."""
    rng = np.random.default_rng(8)
    y = rng.choice(LABELS, 120)
    a = np.where(rng.random(120) < 0.8, y, rng.choice(LABELS, 120))
    b = np.where(rng.random(120) < 0.75, y, rng.choice(LABELS, 120))
    fast = paired_interval(y, a, b, LABELS, resamples=20_000, seed=2)
    code = {label: i for i, label in enumerate(LABELS)}
    yi, ai, bi = (np.array([code[v] for v in arr]) for arr in (y, a, b))
    k, deltas = len(LABELS), []
    for _ in range(5_000):
        i = rng.integers(0, 120, 120)  # the scores are sklearn's (checked above); here the resampling
        conf_a = np.bincount(yi[i] * k + ai[i], minlength=k * k).reshape(k, k)
        conf_b = np.bincount(yi[i] * k + bi[i], minlength=k * k).reshape(k, k)
        deltas.append(scores_from_confusion(conf_a)["macro_f1"] - scores_from_confusion(conf_b)["macro_f1"])
    low, high = np.quantile(deltas, [0.025, 0.975])
    assert fast.delta.low == pytest.approx(low, abs=0.02)
    assert fast.delta.high == pytest.approx(high, abs=0.02)


def test_a_class_with_a_single_held_out_row_scores():
    y = np.array(["a"] * 10 + ["b"] * 10 + ["c"], dtype=object)
    result = paired_interval(y, y, np.array(["a"] * 10 + ["b"] * 11, dtype=object), ["a", "b", "c"], seed=0)
    assert result.challenger.value == 1.0
    assert result.delta.value == pytest.approx(1 - f1_score(y, ["a"] * 10 + ["b"] * 11, average="macro"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((["a", "b"], ["a", "z"], ["a", "b"], ["a", "b"]), r"label 'z' is not one of the labels"),
        ((["a", "b"], ["a"], ["a", "b"], ["a", "b"]), r"2 true labels, 1 and 2 predictions"),
        (([], [], [], ["a"]), r"no held-out rows"),
    ],
)
def test_bad_input_is_one_line(args, message):
    with pytest.raises(ValueError, match=message):
        paired_interval(*args)


def test_unknown_metric_and_confidence_are_refused():
    with pytest.raises(ValueError, match=r"metric 'rmse'"):
        paired_interval(["a"], ["a"], ["a"], ["a"], "rmse")
    with pytest.raises(ValueError, match=r"confidence must be between 0 and 1, got 1.5"):
        paired_interval(["a"], ["a"], ["a"], ["a"], confidence=1.5)
