"""What a run records about itself, through the real CLI in a temp git repository: the commit on
every registered version and its run (with `-dirty` for uncommitted edits), the reports attached
to the training run, a reviewer's HTML free of MLflow's log lines, a console that says only what
is true, and a failed run that moves no alias."""

import json
import shutil
import subprocess

import pytest
from mlflow import MlflowClient

from nbops.layout import build_dir, build_root, reports_dir
from tests.conftest import REPO, copy_project, make_project, nbops, write_params

pytestmark = pytest.mark.e2e
MODEL = "drug-classifier"


def git(root, *args) -> str:
    ident = ["-c", "user.name=nbops tests", "-c", "user.email=tests@127.0.0.1"]
    out = subprocess.run(["git", *ident, *args], cwd=root, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The project as a git checkout, after its first run on a fresh store (and what it said)."""
    root = make_project(tmp_path_factory.mktemp("provenance") / "project")
    # what `make space` copies from
    shutil.copytree(REPO / "deploy", root / "deploy")
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "requirements.txt", root / "requirements.txt")
    write_params(root, "deep", lambda p: p["model"]["params"].update(max_depth=5))
    (root / ".gitignore").write_text("build/\nreports/\nmlflow/\ndata/\n__pycache__/\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "project")
    # the first run, on a fresh store: what the tests below read (a test that runs again works on
    # a copy of its own, so each passes alone and in any order)
    first = nbops(root, "run", "--params", "params/smoke.yaml")
    assert first.returncode == 0, first.stderr
    return root, first


@pytest.fixture(scope="module")
def repo(first_run):
    return first_run[0]


@pytest.fixture
def own(repo, tmp_path):
    """A copy of the project after its first run (git history, store and build/ included)."""
    return copy_project(repo, tmp_path / "project")


def client(root) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")


def champion(root) -> str | None:
    try:
        return str(client(root).get_model_version_by_alias(MODEL, "champion").version)
    except Exception:
        return None


def stderr_outputs(notebook) -> list[str]:
    nb = json.loads(notebook.read_text())
    return [
        "".join(out.get("text", ""))
        for cell in nb["cells"]
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stderr"
    ]


def test_a_run_in_a_clean_checkout_records_its_commit_everywhere(repo):
    head = git(repo, "rev-parse", "HEAD")
    version = client(repo).get_model_version(MODEL, "1")
    assert version.tags["nbops.git_commit"] == head
    run = client(repo).get_run(version.tags["nbops.run_id"])
    assert run.data.tags["nbops.git_commit"] == head
    assert head[:12] in (reports_dir(repo, "smoke") / "index.html").read_text()
    assert head[:12] in (reports_dir(repo, "smoke") / "summary.md").read_text()
    # the version leads to the reports of the run that made it
    attached = {a.path for a in client(repo).list_artifacts(run.info.run_id, "reports")}
    for name in ("01_eda", "02_train", "03_evaluate"):
        assert {f"reports/{name}.html", f"reports/{name}.ipynb"} <= attached, attached
    assert {"reports/index.html", "reports/summary.md"} <= attached


def test_the_model_card_and_the_space_name_the_commit(repo):
    from nbops.serve import champion, page, space

    head = git(repo, "rev-parse", "HEAD")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}")
        _, _, card = champion.registry_champion_info(MODEL)
        assert card["git_commit"] == head
        assert head[:12] in page.model_card_html(card)
        space.build_space(repo, repo / "params" / "smoke.yaml", build_root(repo) / "space")
    folder = build_root(repo) / "space"
    exported = json.loads(next(folder.rglob(champion.MODEL_CARD_FILE)).read_text())
    assert exported["git_commit"] == head
    assert f"commit `{head[:12]}`" in (folder / "README.md").read_text()


def test_the_reviewers_notebooks_carry_no_mlflow_log_lines_on_a_fresh_store(repo):
    # the first run created the store, registered the model and wrote its conda.yaml
    for step in ("02_train", "03_evaluate"):
        assert stderr_outputs(build_dir(repo, "smoke") / step / f"{step}.ipynb") == [], step
        assert (
            'data-mime-type="application/vnd.jupyter.stderr"'
            not in (reports_dir(repo, "smoke") / f"{step}.html").read_text()
        )


def test_no_kernel_warns_about_unencrypted_transport(first_run):
    # the first run started every kernel (EDA's, and train's and evaluate's forks) fresh
    _, res = first_run
    assert "▶ 02_train" in res.stdout and "▶ 03_evaluate" in res.stdout
    assert "without encryption" not in res.stdout + res.stderr


def test_an_uncommitted_edit_marks_the_commit_dirty(own):
    head = git(own, "rev-parse", "HEAD")
    params = own / "params" / "smoke.yaml"
    params.write_text(params.read_text().replace("max_depth: 6", "max_depth: 3"))
    assert git(own, "status", "--porcelain", "--untracked-files=no")  # a tracked file differs
    res = nbops(own, "run", "--params", "params/smoke.yaml")
    assert res.returncode == 0, res.stderr
    newest = max(int(v.version) for v in client(own).search_model_versions(f"name='{MODEL}'"))
    assert newest == 2
    assert client(own).get_model_version(MODEL, "2").tags["nbops.git_commit"] == f"{head}-dirty"


def test_an_unknown_step_touches_nothing(repo):
    products = [
        reports_dir(repo, "smoke") / "02_train.html",
        build_dir(repo, "smoke") / "03_evaluate" / "metrics.json",
    ]
    before = [p.read_bytes() for p in products]
    res = nbops(repo, "run", "--params", "params/smoke.yaml", "--only", "bogus")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "error: --only: unknown step 'bogus' (steps: 01_eda, 02_train, 03_evaluate)"
    )
    assert [p.read_bytes() for p in products] == before


def test_a_skipped_run_does_not_name_a_stale_champion(own):
    res = nbops(own, "run", "--params", "params/deep.yaml")  # a new challenger, promoted or not
    assert res.returncode == 0, res.stderr
    client(own).set_registered_model_alias(MODEL, "champion", "1")  # as `make rollback` would
    res = nbops(own, "run", "--params", "params/deep.yaml")
    assert res.returncode == 0, res.stderr
    assert "03_evaluate   skipped (unchanged)" in res.stdout
    # the registry's champion, not the one the last evaluation left in metrics.json
    assert f"champion: {MODEL} v1 (registry)" in res.stdout
    assert "gate:" not in res.stdout


def test_a_run_that_fails_in_another_step_moves_no_alias(tmp_path):
    root = make_project(tmp_path / "project")
    eda = root / "notebooks" / "01_eda.ipynb"
    nb = json.loads(eda.read_text())
    broken = {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": []}
    warn = 'import warnings\nwarnings.warn("a warning of the user\'s own")'
    nb["cells"] += [{**broken, "source": warn}, {**broken, "source": "raise RuntimeError('the EDA broke')"}]
    eda.write_text(json.dumps(nb))
    res = nbops(root, "run", "--params", "params/smoke.yaml")
    assert res.returncode == 1
    assert "failed at 01_eda" in res.stderr
    # quieting MLflow's routine lines leaves the user's own warnings in the report
    assert any(
        "a warning of the user's own" in e
        for e in stderr_outputs(build_dir(root, "smoke") / "01_eda" / "01_eda.ipynb")
    )
    assert (
        'data-mime-type="application/vnd.jupyter.stderr"'
        in (reports_dir(root, "smoke") / "01_eda.html").read_text()
    )
    assert champion(root) is None  # evaluate said promote; the run failed, so nothing moved
    summary = (reports_dir(root, "smoke") / "summary.md").read_text()
    assert "No alias was moved" in summary
    metrics = json.loads((build_dir(root, "smoke") / "03_evaluate" / "metrics.json").read_text())
    assert metrics["promotion"] == "withheld" and metrics["champion_after"] is None
    assert metrics["decision"]["verdict"] == "not promoted (run failed)"
    version = client(root).get_model_version(MODEL, "1")
    assert version.tags["nbops.gate.verdict"] == "not promoted (run failed)"
    # fixed, the next run evaluates again and promotes
    del nb["cells"][-2:]
    eda.write_text(json.dumps(nb))
    res = nbops(root, "run", "--params", "params/smoke.yaml")
    assert res.returncode == 0, res.stderr
    assert "▶ 03_evaluate" in res.stdout
    trained = json.loads((build_dir(root, "smoke") / "02_train" / "model.json").read_text())["version"]
    assert champion(root) == str(trained)  # v1 (v2 if the package changed between the runs)
    assert f"champion: drug-classifier v{trained}" in res.stdout
