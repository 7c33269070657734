"""A search's study with a PostgreSQL tracking store: Optuna's tables in the schema `optuna` of
the same database, beside MLflow's (each with its own `alembic_version`), and resumable there.
A throwaway PostgreSQL cluster on 127.0.0.1 (tests/team's fixture); no kernel runs."""

from __future__ import annotations

import pytest

from nbops.sweep import search
from nbops.sweep.spec import load_sweep
from tests.sweep.test_search import fake_metric, write_search
from tests.team.conftest import Postgres


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()


def test_the_study_lives_in_its_own_schema_of_the_tracking_database(postgres, project, monkeypatch):
    import mlflow

    monkeypatch.delenv(search.ENV_STORAGE, raising=False)
    mlflow.MlflowClient(postgres.uri).search_experiments()  # MLflow's tables in schema public
    mlflow_revision = postgres.psql("SELECT version_num FROM public.alembic_version", db="mlflow")
    sweep = load_sweep(write_search(project, "pg"), project)

    study = search.open_study(sweep, postgres.uri)
    search.drive(study, sweep.search, 2, 2, fake_metric)
    first = [t.params for t in study.trials]

    tables = postgres.psql(
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables "
        "WHERE table_schema = 'optuna'",
        db="mlflow",
    ).split(",")
    assert {"alembic_version", "studies", "trials", "trial_params", "trial_values"} <= set(tables)
    assert postgres.psql("SELECT version_num FROM optuna.alembic_version", db="mlflow").startswith("v")
    # MLflow's revision is untouched, and no Optuna table landed beside MLflow's
    assert postgres.psql("SELECT version_num FROM public.alembic_version", db="mlflow") == mlflow_revision
    assert (
        postgres.psql(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_name = 'trials'",
            db="mlflow",
        )
        == "0"
    )
    mlflow.MlflowClient(postgres.uri).search_experiments()  # MLflow still opens its store

    resumed = search.open_study(sweep, postgres.uri)
    assert [t.params for t in resumed.trials] == first
    assert [t.state.name for t in resumed.trials] == ["COMPLETE", "COMPLETE"]
