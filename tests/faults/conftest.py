"""The fault tests that only need a champion read the session's smoke champion
(tests/conftest.py `smoke_champion`): it ran with sentinel secrets in the environment (as CI has
them) and its Space folder was built from it."""

from __future__ import annotations

import pytest

from tests.conftest import SECRET_ENV, SECRETS, SmokeChampion

__all__ = ["SECRETS", "SECRET_ENV"]


@pytest.fixture(scope="session")
def smoke_run(smoke_champion) -> SmokeChampion:
    """`root`, `run` (CompletedProcess of `nbops run`) and `space` (of `make space`)."""
    return smoke_champion
