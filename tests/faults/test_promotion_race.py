"""Two evaluations promoting at once: MLflow has no compare-and-set for aliases, so
promote_if_better holds a store lock across read-compare-set and re-compares against a
champion that moved meanwhile. The final champion must be the better version."""

import multiprocessing as mp
import time

import pytest
from mlflow import MlflowClient

from nbops.ml import registry

NAME = "race-model"
METRICS = {"1": 0.85, "2": 0.90, "3": 0.95}
GATE = {"floors": {"macro_f1": 0.5, "accuracy": 0.5}, "tolerance": 0.0}


def metrics(version):
    return {"macro_f1": METRICS[version], "accuracy": METRICS[version]}


def _promote(uri, version, delay, barrier, out):
    import os

    os.environ["MLFLOW_TRACKING_URI"] = uri

    def score(v):  # the slower evaluation takes its time scoring the champion it read
        time.sleep(delay)
        return metrics(v)

    barrier.wait()
    decision = registry.promote_if_better(
        NAME, version, metrics(version), gate=GATE, allow_promotion=True, score_version=score
    )
    out.put((version, decision.promote, decision.champion_version))


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    client.create_registered_model(NAME)
    for _ in METRICS:
        client.create_model_version(NAME, source=str(tmp_path / "model"))
    client.set_registered_model_alias(NAME, "champion", "1")
    return uri, client


@pytest.mark.parametrize("slow", ["2", "3"])
def test_racing_promotions_end_with_the_better_champion(store, slow):
    uri, client = store
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_promote, args=(uri, v, 1.5 if v == slow else 0.0, barrier, out))
        for v in ("2", "3")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = {v: (promoted, compared) for v, promoted, compared in (out.get(timeout=5) for _ in procs)}
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "3"
    assert results["3"][0] is True
    # whoever went second compared against the first one's result, not the stale v1
    first = "2" if results["2"][1] == "1" else "3"
    second = "3" if first == "2" else "2"
    assert results[second][1] == first


def test_decision_is_recorded_on_the_version(store):
    uri, client = store
    decision = registry.promote_if_better(
        NAME, "2", metrics("2"), gate=GATE, allow_promotion=False, score_version=metrics
    )
    assert decision.verdict == "not promoted (promote: false)"
    tags = client.get_model_version(NAME, "2").tags
    assert tags["nbops.gate.verdict"] == "not promoted (promote: false)"
    assert tags["nbops.gate.compared_with"] == "1"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
