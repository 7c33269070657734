import math

import pytest

from nbops.gate import decide_promotion

FLOORS = {"min_macro_f1": 0.8, "min_accuracy": 0.8, "tolerance": 0.01}


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
