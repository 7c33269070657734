"""The notebook tests read the session's smoke run (tests/conftest.py `smoke_champion`):
the outputs tests read it as it is; nbval re-executes the notebooks, which log to the store, so
it works on a copy."""

import pytest

from tests.conftest import copy_project


@pytest.fixture(scope="session")
def smoke_project(smoke_champion):
    """A project after `python -m nbops run --params params/smoke.yaml`: build/smoke/ and reports/smoke/."""
    return smoke_champion.root


@pytest.fixture(scope="session")
def smoke_project_copy(smoke_champion, tmp_path_factory):
    """A copy of it that names only itself (its store, its executed notebooks' paths)."""
    return copy_project(smoke_champion.root, tmp_path_factory.mktemp("nbval") / "project")
