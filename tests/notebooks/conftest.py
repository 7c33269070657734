"""One smoke run of the pipeline, shared by the notebook tests (nbval and the outputs)."""

import pytest

from tests.conftest import make_project, nbops


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory):
    """A project after `python -m nbops run --params params/smoke.yaml`: build/ and reports/."""
    root = make_project(tmp_path_factory.mktemp("nbval") / "project")
    res = nbops(root, "run", "--params", "params/smoke.yaml")
    assert res.returncode == 0, res.stderr
    return root
