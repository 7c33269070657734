"""A pickle model registered as `champion` by someone else, whose unpickling writes a marker file:
the dashboard and the evaluate step refuse it and the marker never appears. MLflow's own loader
would run it (checked first, so the test is not vacuous)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nbops.layout import build_dir, reports_dir
from tests.conftest import copy_project, nbops, write_params
from tests.faults.conftest import SECRET_ENV

pytestmark = pytest.mark.e2e

REGISTER = textwrap.dedent(
    """
    import pathlib, sys
    import mlflow, mlflow.sklearn

    marker = sys.argv[1]  # relative: written into the folder of whoever unpickles it
    fmt = sys.argv[2]

    class Evil:
        def __reduce__(self):  # unpickling runs this code, which writes the marker
            return (exec, (f"import pathlib; pathlib.Path({marker!r}).write_text('pwned')",))

    client = mlflow.MlflowClient()
    # a plausible run: the schema and holdout metrics copied from the real champion's run
    real = client.get_model_version_by_alias("drug-classifier", "champion").run_id
    names = ("schema.json", "holdout_metrics.json")
    docs = {n: mlflow.artifacts.load_dict(f"runs:/{real}/{n}") for n in names}
    mlflow.set_experiment("someone-else")
    with mlflow.start_run():
        for name, doc in docs.items():
            mlflow.log_dict(doc, name)
        info = mlflow.sklearn.log_model(
            Evil(), name="model", serialization_format=fmt,
            pip_requirements=["scikit-learn"], registered_model_name="drug-classifier",
        )
    client.set_registered_model_alias("drug-classifier", "champion", info.registered_model_version)
    print(info.registered_model_version)
    """
)


MARKER = "pickle-ran"


class Marker:
    """The payload writes MARKER into its working folder: the project, notebooks/ (kernels), ..."""

    def __init__(self, root: Path):
        self.root = root

    def exists(self) -> bool:
        return any(self.root.rglob(MARKER))


def _python(code: str, *args: str, root: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or root,
        timeout=300,
    )


@pytest.fixture(scope="module")
def evil_champion(smoke_run, tmp_path_factory):
    """Register the pickle model as champion in a copy of the session's smoke project (the
    other suites read the original); put the real champion back afterwards."""
    from mlflow import MlflowClient

    root = copy_project(smoke_run.root, tmp_path_factory.mktemp("evil") / "project")
    client = MlflowClient(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    before = client.get_model_version_by_alias("drug-classifier", "champion").version
    reg = _python(REGISTER, MARKER, "cloudpickle", root=root)
    assert reg.returncode == 0, reg.stderr
    version = reg.stdout.strip().splitlines()[-1]
    marker = Marker(root)
    assert not marker.exists()
    yield root, marker, version
    client.set_registered_model_alias("drug-classifier", "champion", before)


def test_mlflow_itself_would_run_the_payload(evil_champion, tmp_path):
    """MLflow's own loader unpickles the model: the payload runs (here, in a scratch folder)."""
    root, marker, version = evil_champion
    code = f"import mlflow.sklearn; mlflow.sklearn.load_model('models:/drug-classifier/{version}')"
    res = _python(code, root=root, cwd=tmp_path)
    assert (tmp_path / MARKER).exists(), res.stderr[-2000:]
    assert not marker.exists()


def test_load_model_refuses_pickle(evil_champion):
    root, marker, version = evil_champion
    code = textwrap.dedent(
        f"""
        from nbops.ml import tracking
        from nbops.ml import registry
        from nbops.exceptions import ModelError
        try:
            registry.load_model("models:/drug-classifier/{version}")
        except ModelError as exc:
            print("refused:", exc)
        """
    )
    res = _python(code, root=root)
    assert "refused:" in res.stdout and "only skops models are trusted" in res.stdout, res.stderr
    assert not marker.exists()


def test_dashboard_shows_a_friendly_page(evil_champion):
    root, marker, _ = evil_champion
    env = {"NBOPS_PARAMS": str(root / "params" / "smoke.yaml"), "NBOPS_ROOT": str(root)}
    code = textwrap.dedent(
        f"""
        import ipywidgets as w
        from nbops.serve.dashboard import build_app
        page = build_app(env={env!r})
        texts = []
        def walk(x):
            if isinstance(x, w.HTML): texts.append(x.value)
            for c in getattr(x, "children", ()): walk(c)
        walk(page)
        print("nbops-status" in page._dom_classes)
        print("\\n".join(texts))
        """
    )
    res = _python(code, root=root)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("True"), res.stdout
    assert "The model could not be loaded" in res.stdout
    assert "refusing to load a &#x27;cloudpickle&#x27; model" in res.stdout
    assert "Traceback" not in res.stdout
    assert not marker.exists()


def test_evaluate_step_refuses_it_and_keeps_it_out_of_the_gate(evil_champion):
    from mlflow import MlflowClient

    root, marker, version = evil_champion
    write_params(root, "retrain", lambda p: p["model"]["params"].update(max_depth=5))
    res = nbops(root, "run", "--params", "params/retrain.yaml", env=SECRET_ENV)
    out = res.stdout + res.stderr
    assert not marker.exists()
    import json

    metrics = json.loads((build_dir(root, "retrain") / "03_evaluate" / "metrics.json").read_text())
    assert metrics["champion"]["version"] == version
    assert metrics["champion"]["metrics"] is None
    assert "refusing to load a 'cloudpickle' model" in metrics["champion"]["error"]
    summary = (reports_dir(root, "retrain") / "summary.md").read_text()
    assert "Champion not scored" in summary and "cloudpickle" in summary
    champion_now = MlflowClient(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}").get_model_version_by_alias(
        "drug-classifier", "champion"
    )
    assert res.returncode == 0, out
    # the gate cannot compare with a champion that cannot score: it keeps it (a human decides)
    decision = metrics["decision"]
    assert decision["verdict"] == "keep champion" and not decision["promote"], decision
    assert any("champion metrics are missing" in r for r in decision["reasons"]), decision
    assert str(champion_now.version) == version
    assert (
        f"gate: keep champion (challenger v{metrics['challenger']['version']}, champion before: v{version})"
        in out
    )


def test_skops_file_with_an_untrusted_type_is_refused(tmp_path):
    """A skops model folder (as MLflow writes it) holding a type outside TRUSTED_TYPES whose
    state restore writes a marker: skops would run it if told to trust the type; we do not."""
    import skops.io
    import yaml

    from nbops.exceptions import ModelError
    from nbops.ml.registry import load_model_dir
    from tests.faults.helpers import Payload

    folder = tmp_path / "model"
    folder.mkdir()
    marker = tmp_path / "skops-ran"
    skops.io.dump({"model": Payload(str(marker))}, folder / "model.skops")
    mlmodel = {"flavors": {"sklearn": {"pickled_model": "model.skops", "serialization_format": "skops"}}}
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    untrusted = skops.io.get_untrusted_types(file=folder / "model.skops")
    assert untrusted == ["tests.faults.helpers.Payload"]

    with pytest.raises(ModelError, match="refusing to load.*tests.faults.helpers.Payload"):
        load_model_dir(folder, "someone's model")
    assert not marker.exists()
    skops.io.load(folder / "model.skops", trusted=untrusted)  # what trusting it would do
    assert marker.exists()
