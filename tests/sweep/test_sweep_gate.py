"""The best point of a sweep goes through the regular gate, paired interval included: a gain the
point's own evaluation measured as within noise keeps the champion."""

import pytest

from nbops.sweep.run import gate_best
from nbops.sweep.spec import load_sweep
from tests.conftest import make_project


def best_record(point_id, low):
    return {
        "id": point_id,
        "model_name": "drug-classifier",
        "challenger": {
            "version": "2",
            "run_id": "run-of-v2",
            "metrics": {"macro_f1": 0.95, "accuracy": 0.95},
        },
        "champion": {"version": "1", "metrics": {"macro_f1": 0.90, "accuracy": 0.94}},
        "decision": {
            "interval": {
                "metric": "macro_f1",
                "rows": 40,
                "resamples": 2000,
                "confidence": 0.95,
                "seed": 42,
                "delta": {"value": 0.05, "low": low, "high": 0.15},
            }
        },
    }


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return load_sweep("params/sweeps/smoke.yaml", make_project(tmp_path / "project"))


def test_a_best_point_within_noise_keeps_the_champion(sweep):
    decision = gate_best(sweep, best_record(sweep.points[0].id, low=-0.02), allow_promotion=True)
    assert decision["promote"] is False
    assert (
        "macro_f1 +0.050 (95% interval -0.02 to +0.15) on 40 held-out rows is within noise"
        in decision["reasons"]
    )


def test_a_best_point_beyond_noise_passes_the_gate(sweep):
    """Its gain clears the interval; the store here does not hold v2, so no alias moves either way."""
    decision = gate_best(sweep, best_record(sweep.points[0].id, low=0.01), allow_promotion=True)
    assert any("its lower end is above zero" in r for r in decision["reasons"])
    assert decision["verdict"] == "not promoted (model not in this registry)"
