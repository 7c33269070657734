"""A step's cache key covers the package code its notebook can run, and nothing else: the static
import graph (nbops.runner.codehash) and the keys make_plan builds from it."""

import ast
import json
import shutil
from pathlib import Path

import pytest
import yaml

from nbops.runner import codehash
from nbops.runner.codehash import imported_modules, module_closure, notebook_modules
from nbops.runner.notebook import read_notebook_source
from nbops.runner.plan import make_plan
from tests.conftest import REPO

PACKAGE = REPO / "src" / "nbops"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def toy(tmp_path):
    """A package named nbops with every import form the graph must follow."""
    return write(
        tmp_path / "nbops",
        {
            "__init__.py": "",
            "top.py": "",
            "a/__init__.py": "",
            "a/one.py": "from . import two\nfrom .sub.deep import f\n",
            "a/two.py": "def g():\n    import nbops.b.lazy  # function level\n",
            "a/sub/__init__.py": "",
            "a/sub/deep.py": "from ...top import x\nfrom typing import TYPE_CHECKING\n",
            "b/__init__.py": "",
            "b/lazy.py": "from nbops.b import other\n",
            "b/other.py": "import json\n",
            "c/__init__.py": "",
            "c/app.py": "from nbops.a.one import thing\n",
        },
    )


def test_the_graph_follows_absolute_relative_and_function_level_imports(toy):
    closure = module_closure(["nbops.a.one"], toy)
    assert closure == [
        "nbops",
        "nbops.a",
        "nbops.a.one",
        "nbops.a.sub",
        "nbops.a.sub.deep",
        "nbops.a.two",
        "nbops.b",
        "nbops.b.lazy",
        "nbops.b.other",
        "nbops.top",
    ]
    assert "nbops.c.app" not in closure  # what imports a module is not part of it


def test_a_from_import_of_a_name_is_its_module_and_of_a_module_is_that_module(toy):
    tree = ast.parse("from nbops.a.one import thing\nfrom nbops.b import other\nimport os\n")
    assert imported_modules(tree, "", toy) == {"nbops.a.one", "nbops.b", "nbops.b.other"}


def test_the_code_hash_changes_only_with_a_module_in_the_closure(toy):
    before = codehash.code_hash(module_closure(["nbops.a.one"], toy), toy)
    (toy / "c" / "app.py").write_text("from nbops.a.one import thing\nEDITED = 1\n")
    assert codehash.code_hash(module_closure(["nbops.a.one"], toy), toy) == before
    (toy / "b" / "other.py").write_text("import json\nEDITED = 1\n")  # reached through a lazy import
    assert codehash.code_hash(module_closure(["nbops.a.one"], toy), toy) != before


@pytest.mark.parametrize("step", ["01_eda", "02_train", "03_evaluate", "04_drift"])
def test_no_pipeline_notebook_reaches_the_served_app_or_the_runner(step):
    nb = read_notebook_source(REPO / "notebooks" / f"{step}.ipynb")
    reached = module_closure(notebook_modules(nb))
    assert reached and not [
        m for m in reached if m.startswith(("nbops.serve", "nbops.runner", "nbops.sweep"))
    ]


def test_train_reaches_the_modules_it_imports_and_what_they_import():
    nb = read_notebook_source(REPO / "notebooks" / "02_train.ipynb")
    reached = set(module_closure(notebook_modules(nb)))
    assert {"nbops.ml.models", "nbops.ml.tracking", "nbops.ml.data", "nbops.params"} <= reached
    assert "nbops.ml.plots" not in reached  # train draws nothing


# ------------------------------------------------------------------ the plan's keys


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project and a copy of the package for the keys to read, so edits touch no real source."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for folder in ("notebooks", "params"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    package = tmp_path / "pkg" / "nbops"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(codehash, "PACKAGE_DIR", package)
    params = tmp_path / "params" / "t.yaml"
    params.write_text(yaml.safe_dump(yaml.safe_load((tmp_path / "params" / "smoke.yaml").read_text())))
    return tmp_path, package, params


def changed_keys(project, edit) -> set[str]:
    root, package, params = project
    before = make_plan(params, root)
    edit(package)
    after = make_plan(params, root)
    return {step for step in before.keys if before.keys[step] != after.keys[step]}


def append(path: Path) -> None:
    path.write_text(path.read_text() + "\n# edited\n")


@pytest.mark.parametrize(
    "module", ["serve/dashboard.py", "serve/voila_kernels.py", "serve/space.py", "sweep/run.py", "comment.py"]
)
def test_editing_code_no_step_imports_reruns_no_step(project, module):
    assert changed_keys(project, lambda pkg: append(pkg / module)) == set()


def test_editing_a_module_train_imports_reruns_train_and_evaluate_and_keeps_eda(project):
    assert changed_keys(project, lambda pkg: append(pkg / "ml" / "models.py")) == {"02_train", "03_evaluate"}


def test_editing_the_validation_code_reruns_everything(project):
    changed = changed_keys(project, lambda pkg: append(pkg / "ml" / "data.py"))
    assert changed == {"00_validate", "01_eda", "02_train", "03_evaluate"}


def test_editing_what_only_eda_and_evaluate_draw_with_reruns_those(project):
    assert changed_keys(project, lambda pkg: append(pkg / "ml" / "plots.py")) == {"01_eda", "03_evaluate"}


def test_a_notebook_that_starts_importing_a_module_reruns_its_step(project):
    root, _, _ = project

    def edit(_pkg):
        path = root / "notebooks" / "01_eda.ipynb"
        nb = json.loads(path.read_text())
        nb["cells"].append({"cell_type": "code", "metadata": {}, "source": "from nbops.ml import gate\n"})
        path.write_text(json.dumps(nb))

    assert changed_keys(project, edit) == {"01_eda"}


def test_a_spare_kernel_keys_on_the_code_it_loads_not_on_the_served_app(project):
    """What a kept-warm kernel has imported: the notebook's modules and the preloader."""
    root, package, _ = project
    from nbops.runner.notebook import PRELOADER

    nb = read_notebook_source(root / "notebooks" / "02_train.ipynb")

    def key():
        return codehash.notebook_code_hash(nb, extra=(PRELOADER,))

    before = key()
    append(package / "serve" / "dashboard.py")
    assert key() == before
    append(package / "runner" / "preload.py")
    assert key() != before


def test_a_project_copied_elsewhere_keeps_every_key(project, tmp_path_factory):
    """Keys name the project's own paths (build/, its default store) relative to it: a moved or
    copied project stays cached; a tracking server named by MLFLOW_TRACKING_URI stays in the key."""
    root, _, params = project
    before = make_plan(params, root)
    copy = tmp_path_factory.mktemp("elsewhere") / "project"
    shutil.copytree(root / "notebooks", copy / "notebooks")
    shutil.copytree(root / "params", copy / "params")
    after = make_plan(copy / "params" / "t.yaml", copy)
    assert str(root) not in json.dumps(after.injected)  # the notebooks are given the copy's paths
    assert after.keys == before.keys


def test_another_tracking_store_changes_the_tracked_steps_keys(project, monkeypatch):
    root, _, params = project
    before = make_plan(params, root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    after = make_plan(params, root)
    assert {s for s in before.keys if before.keys[s] != after.keys[s]} == {"02_train", "03_evaluate"}
