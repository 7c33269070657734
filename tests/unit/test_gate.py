import math

import pytest

from nbops.ml.gate import decide_promotion

FLOORS = {"floors": {"macro_f1": 0.8, "accuracy": 0.8}, "tolerance": 0.01}


def m(f1, acc):
    return {"macro_f1": f1, "accuracy": acc}


def test_no_champion_and_floors_met_promotes():
    d = decide_promotion(m(0.9, 0.9), None, **FLOORS, challenger_version="1")
    assert d.promote and d.verdict == "promote"
    assert "no champion yet" in d.reasons


def test_below_a_floor_is_rejected_even_without_champion():
    d = decide_promotion(m(0.79, 0.95), None, **FLOORS)
    assert not d.promote and d.verdict == "reject"
    assert "macro_f1 0.7900 is below the floor 0.8000" in d.reasons


def test_better_challenger_promotes_with_deltas():
    d = decide_promotion(m(0.95, 0.95), m(0.90, 0.94), **FLOORS, challenger_version="3", champion_version="2")
    assert d.promote
    assert d.deltas == pytest.approx({"macro_f1": 0.05, "accuracy": 0.01})
    assert d.champion_version == "2"


def test_tie_keeps_the_champion():
    d = decide_promotion(m(0.9, 0.9), m(0.9, 0.9), **FLOORS, challenger_version="3", champion_version="2")
    assert not d.promote and d.verdict == "keep champion"
    assert any("ties the champion" in r for r in d.reasons)


def test_worse_challenger_keeps_the_champion():
    d = decide_promotion(m(0.85, 0.85), m(0.9, 0.9), **FLOORS)
    assert not d.promote
    assert any("macro_f1 regresses by 0.0500" in r for r in d.reasons)


def test_better_f1_but_accuracy_regression_beyond_tolerance_is_refused():
    d = decide_promotion(m(0.95, 0.85), m(0.9, 0.9), **FLOORS)
    assert not d.promote
    assert any("accuracy regresses by 0.0500 (> tolerance 0.0100)" in r for r in d.reasons)


def test_small_accuracy_dip_within_tolerance_is_allowed_when_f1_improves():
    d = decide_promotion(m(0.95, 0.895), m(0.9, 0.9), **FLOORS)
    assert d.promote


@pytest.mark.parametrize("bad", [None, math.nan, "n/a", math.inf])
def test_missing_or_nan_metric_never_promotes(bad):
    d = decide_promotion({"macro_f1": bad, "accuracy": 0.99}, None, **FLOORS)
    assert not d.promote and d.verdict == "reject"
    assert d.reasons == ["challenger metric macro_f1 is missing or not a number"]


def test_champion_without_metrics_is_kept():
    d = decide_promotion(m(0.99, 0.99), {"macro_f1": math.nan}, **FLOORS, champion_version="1")
    assert not d.promote and d.verdict == "keep champion"


def test_promote_false_reports_but_does_not_promote():
    d = decide_promotion(m(0.95, 0.95), m(0.9, 0.9), **FLOORS, allow_promotion=False)
    assert not d.promote
    assert d.verdict == "not promoted (promote: false)"
    assert d.deltas["macro_f1"] == pytest.approx(0.05)


def test_challenger_that_is_already_champion_is_not_repromoted():
    d = decide_promotion(m(0.95, 0.95), m(0.95, 0.95), **FLOORS, challenger_version="4", champion_version="4")
    assert not d.promote
    assert "challenger is already the champion" in d.reasons


def interval(value, low, high, rows=40):
    return {
        "metric": "macro_f1",
        "rows": rows,
        "resamples": 2000,
        "confidence": 0.95,
        "seed": 42,
        "delta": {"value": value, "low": low, "high": high},
    }


def paired(challenger, champion, iv, **kw):
    return decide_promotion(
        challenger, champion, **FLOORS, challenger_version="3", champion_version="2", interval=iv, **kw
    )


def test_paired_a_gain_within_noise_keeps_the_champion_and_says_so():
    d = paired(m(0.95, 0.95), m(0.90, 0.94), interval(0.05, -0.02, 0.15))
    assert not d.promote and d.verdict == "keep champion"
    assert (
        d.reasons[-1] == "macro_f1 +0.050 (95% interval -0.02 to +0.15) on 40 held-out rows is within noise"
    )
    assert d.to_dict()["interval"]["delta"]["low"] == -0.02


def test_paired_a_gain_beyond_noise_promotes():
    d = paired(m(0.94, 0.95), m(0.33, 0.50), interval(0.61, 0.40, 0.69))
    assert d.promote and d.verdict == "promote"
    assert d.reasons[-1] == (
        "macro_f1 +0.610 (95% interval +0.40 to +0.69) on 40 held-out rows: its lower end is above zero"
    )


@pytest.mark.parametrize(
    ("low", "min_improvement", "promote", "reason_end"),
    [
        (0.0, 0.0, False, "is within noise"),  # a lower end of exactly zero is not above it
        (0.01, 0.02, False, "is within the minimum improvement +0.020"),
        (0.03, 0.02, True, "its lower end is above the minimum improvement +0.020"),
        (math.nan, 0.0, False, "is within noise"),
    ],
)
def test_paired_the_lower_end_must_clear_the_minimum_improvement(low, min_improvement, promote, reason_end):
    d = paired(m(0.95, 0.95), m(0.90, 0.94), interval(0.05, low, 0.1), min_improvement=min_improvement)
    assert d.promote is promote
    assert d.reasons[-1].endswith(reason_end)


def test_paired_a_regression_beyond_tolerance_keeps_the_champion_whatever_the_interval():
    d = paired(m(0.95, 0.85), m(0.90, 0.90), interval(0.05, 0.02, 0.1))
    assert not d.promote
    assert any("accuracy regresses by 0.0500" in r for r in d.reasons)


def test_paired_no_champion_needs_no_interval():
    d = decide_promotion(m(0.9, 0.9), None, **FLOORS, interval=None)
    assert d.promote and d.interval is None


def test_paired_the_drug_holdout_case_one_row_kept_eleven_rows_promoted():
    """40 held-out rows over five classes: a challenger right on one more row than the champion
    is within noise; right on eleven more is progress."""
    import numpy as np

    from nbops.ml.bootstrap import paired_interval

    labels = ["drugA", "drugB", "drugC", "drugX", "drugY"]
    y = np.array([labels[i % 5] for i in range(40)], dtype=object)

    def champion_wrong_on(rows):
        pred = y.copy()
        for i in rows:
            pred[i] = labels[(labels.index(y[i]) + 1) % 5]
        return pred

    for rows, promote in (([7], False), (list(range(0, 33, 3)), True)):
        champ = champion_wrong_on(rows)
        iv = paired_interval(y, y, champ, labels, seed=42).to_dict()
        chal_m = m(1.0, 1.0)
        champ_m = m(iv["champion"]["value"], float((champ == y).mean()))
        d = decide_promotion(
            chal_m,
            champ_m,
            floors={"macro_f1": 0.5, "accuracy": 0.5},
            tolerance=0.01,
            interval=iv,
            challenger_version="2",
            champion_version="1",
        )
        assert d.promote is promote, (rows, d.reasons)
