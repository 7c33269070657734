"""Each params file's folders: build/<stem>/ and reports/<stem>/ (nbops.layout), the names that
are refused and a stem another params file owns (nbops.runner.folders); no other module of src/
spells a build or reports path."""

import ast
from pathlib import Path

import pytest

from nbops import layout
from nbops.exceptions import NbopsError
from nbops.runner.folders import claim_folders, folders_owner, params_folders

SRC = Path(layout.__file__).parent


def test_the_folders_of_a_params_file_are_named_after_its_stem(tmp_path):
    assert layout.params_name("params/smoke.yaml") == "smoke"
    assert layout.params_name(Path("/x/params/drug.v2.yml")) == "drug.v2"
    assert layout.build_dir(tmp_path, "smoke") == tmp_path / "build" / "smoke"
    assert layout.reports_dir(tmp_path, "smoke") == tmp_path / "reports" / "smoke"
    assert layout.reports_index(tmp_path) == tmp_path / "reports" / "index.html"
    assert layout.lab_build_dir(tmp_path, "smoke") == tmp_path / "build" / "lab" / "smoke"
    assert layout.drift_dir(tmp_path / "build" / "smoke") == tmp_path / "build" / "smoke" / "04_drift"
    assert layout.sweep_build_dir(tmp_path, "trees") == tmp_path / "build" / "sweeps" / "trees"
    assert layout.sweep_reports_dir(tmp_path, "trees") == tmp_path / "reports" / "sweep" / "trees"


@pytest.mark.parametrize("name", ["smoke", "default", "drug.v2", "my_params-2", "A1"])
def test_a_plain_stem_names_folders(name):
    assert layout.name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("lab", "a name other than lab, sweeps, sweep, space-venv"),
        ("sweeps", "a name other than"),
        ("sweep", "a name other than"),
        ("space-venv", "a name other than"),
        (".hidden", "not starting with '.'"),
        ("-x", "not starting with"),
        ("has space", "letters, digits"),
        ("x" * 81, "at most 80"),
        ("", "letters, digits"),
    ],
)
def test_a_stem_that_would_reach_another_folder_is_refused(name, why):
    assert why in layout.name_problem(name)


def test_the_folders_of_a_params_file_are_free_until_it_claims_them(tmp_path):
    params = tmp_path / "params" / "smoke.yaml"
    folders = params_folders(tmp_path, params)
    assert (folders.name, folders.build, folders.reports) == (
        "smoke",
        tmp_path / "build" / "smoke",
        tmp_path / "reports" / "smoke",
    )
    assert not (tmp_path / "build").exists()  # finding the folders writes nothing
    claim_folders(folders, tmp_path, params)
    assert (folders.build / layout.OWNER_FILE).read_text() == "params/smoke.yaml\n"
    assert folders_owner(folders.build, tmp_path) == params
    assert params_folders(tmp_path, params) == folders  # its own name: no refusal


def test_a_stem_another_params_file_owns_is_refused_in_one_line(tmp_path):
    mine, other = tmp_path / "params" / "smoke.yaml", tmp_path / "params" / "old" / "smoke.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("{}\n")
    claim_folders(params_folders(tmp_path, mine), tmp_path, mine)
    with pytest.raises(NbopsError) as exc:
        params_folders(tmp_path, other)
    assert str(exc.value) == (
        "params/old/smoke.yaml: the name 'smoke' (build/smoke/, reports/smoke/) belongs to "
        "params/smoke.yaml; rename one of the two params files"
    )
    mine.unlink()  # the owner is gone (renamed, moved): the name is free again
    assert params_folders(tmp_path, other).build == tmp_path / "build" / "smoke"


def test_a_reserved_stem_is_refused_naming_the_file(tmp_path):
    with pytest.raises(NbopsError, match=r"^params/lab\.yaml: its stem 'lab' names its build and reports"):
        params_folders(tmp_path, tmp_path / "params" / "lab.yaml")


def path_literals(file: Path) -> list[str]:
    """Where a module spells a build/ or reports/ path: a string "build/..." or "reports/...",
    or "build"/"reports" joined onto a path with `/`."""
    tree = ast.parse(file.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value.startswith(("build/", "reports/")):
                found.append(f"{file.name}:{node.lineno}: {node.value!r}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and side.value in ("build", "reports"):
                    found.append(f"{file.name}:{node.lineno}: / {side.value!r}")
    return found


def test_only_layout_spells_the_build_and_reports_folders():
    found = [
        hit for file in sorted(SRC.rglob("*.py")) if file.name != "layout.py" for hit in path_literals(file)
    ]
    assert found == []


def test_the_path_check_finds_a_spelled_path(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        '"""build/ in a docstring is prose."""\nx = root / "build" / "a"\ny = "reports/x.html"\n'
    )
    assert sorted(path_literals(module)) == ["m.py:2: / 'build'", "m.py:3: 'reports/x.html'"]
