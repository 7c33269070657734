"""Hostile params files, through the real CLI in a temp project: a YAML tag that would run code,
strings that would be code if pasted into a cell, a system file as the data, a very wide table."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from nbops.layout import build_dir, build_root, reports_dir
from tests.conftest import make_project, nbops, write_params

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("hostile-params") / "project")


def test_yaml_python_object_tag_is_refused_and_runs_nothing(root):
    marker = root / "yaml-tag-ran"
    smoke = (root / "params" / "smoke.yaml").read_text()
    # the same file with one value replaced by a tag that calls os.system when a full loader reads it
    text = smoke.replace(
        "experiment: drug-classifier", f"experiment: !!python/object/apply:os.system ['touch {marker}']"
    )
    assert text != smoke
    (root / "params" / "tag.yaml").write_text(text)
    res = nbops(root, "run", "--params", "params/tag.yaml", timeout=120)
    assert res.returncode != 0
    assert "params/tag.yaml: not valid YAML" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not marker.exists()
    assert not (root / "mlflow").exists(), "nothing may reach the registry"
    assert not build_root(root).exists()


def _code(marker: Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).write_text('pwned')"


def _injected(notebook: Path) -> dict:
    """The assignments of the cell papermill injected, evaluated as literals (raises if not)."""
    nb = json.loads(notebook.read_text())
    cells = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(cells) == 1, notebook
    tree = ast.parse("".join(cells[0]["source"]))
    values = {}
    for node in tree.body:
        assert isinstance(node, ast.Assign), ast.dump(node)  # nothing but NAME = literal
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def test_strings_with_newlines_and_code_land_as_literal_strings(root):
    """`registry.experiment` (free text) and a column name (from the CSV header, through
    `data.categorical`) reach the notebooks' parameters cells; both try to break out of the
    string literal, with a newline and with quotes, and run code that writes a marker."""
    experiment_marker = root / "experiment-ran"
    column_marker = root / "column-ran"
    experiment = f'x"\n{_code(experiment_marker)}\n#' + "'''\n" + _code(experiment_marker) + "\n'''"
    column = f'BP"+{_code(column_marker)}+"\\'
    from nbops.ml.synthetic import write_synthetic_table

    table = write_synthetic_table(root / "data" / "raw" / "base.csv", 120, 42, 0.0)
    import pandas as pd

    pd.read_csv(table).rename(columns={"BP": column}).to_csv(
        root / "data" / "raw" / "hostile.csv", index=False
    )

    def edit(p):
        p["data"]["path"] = "data/raw/hostile.csv"
        del p["data"]["synthetic"]
        p["data"]["categorical"] = ["Sex", column, "Cholesterol"]
        p["data"]["categories"] = {"Sex": ["F", "M"], column: ["HIGH", "LOW", "NORMAL"]}
        p["registry"]["experiment"] = experiment

    write_params(root, "strings", edit)
    res = nbops(root, "run", "--params", "params/strings.yaml")
    assert res.returncode == 0, res.stderr + res.stdout
    assert not experiment_marker.exists()
    assert not column_marker.exists()

    # the payload did reach the parameters cells, as the exact strings
    train = _injected(build_dir(root, "strings") / "02_train" / "02_train.ipynb")
    assert train["registry_experiment"] == experiment
    assert train["data_categorical"] == ["Sex", column, "Cholesterol"]
    assert _injected(build_dir(root, "strings") / "01_eda" / "01_eda.ipynb")["data_categorical"][1] == column
    # and the run used them as data: the experiment has that name, the model that column
    client = MlflowClient(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    assert len(client.search_runs([exp.experiment_id])) == 1
    schema = json.loads((build_dir(root, "strings") / "02_train" / "model.json").read_text())["schema"]
    assert column in schema["categorical"]


def test_system_file_as_data_names_it_and_never_echoes_it(root):
    passwd = Path("/etc/passwd")
    lines = [ln for ln in passwd.read_text().splitlines() if ln.strip()]
    assert lines, "/etc/passwd is empty on this machine"

    def edit(p):
        p["data"]["path"] = str(passwd)
        del p["data"]["synthetic"]

    write_params(root, "passwd", edit)
    for delimiter in (",", ":"):  # ':' splits its lines into fields that look like columns
        path = write_params(root, "passwd", edit)
        raw = yaml.safe_load(path.read_text())
        raw["data"]["delimiter"] = delimiter
        path.write_text(yaml.safe_dump(raw))
        res = nbops(root, "run", "--params", "params/passwd.yaml", timeout=120)
        out = res.stdout + res.stderr
        assert res.returncode != 0
        assert "error: /etc/passwd:" in res.stderr, out
        assert "missing column" in res.stderr or "duplicate column" in res.stderr, out
        assert "Traceback" not in out
        assert "started" not in res.stdout, "no step may start on such a file"
        for line in lines:
            assert line not in out, "a line of /etc/passwd was echoed"
            for field in line.split(":")[5:]:  # home folders and shells: never shown
                if len(field) > 3:
                    assert field not in out, f"{field!r} from /etc/passwd was echoed"


@pytest.fixture(scope="module")
def wide_csv(root) -> Path:
    import numpy as np
    import pandas as pd

    from nbops.ml.synthetic import write_synthetic_table

    base = pd.read_csv(write_synthetic_table(root / "data" / "raw" / "base.csv", 120, 42, 0.0))
    extra = pd.DataFrame(
        np.random.default_rng(0).normal(size=(len(base), 5000)), columns=[f"c{i}" for i in range(5000)]
    )
    path = root / "data" / "raw" / "wide.csv"
    pd.concat([base, extra], axis=1).to_csv(path, index=False)
    return path


def test_five_thousand_undeclared_columns_are_read_in_bounded_time(root, wide_csv):
    """Only the declared columns are read: validation of a 5005-column file takes seconds."""

    def edit(p):
        p["data"]["path"] = "data/raw/wide.csv"
        del p["data"]["synthetic"]

    write_params(root, "wide", edit)
    start = time.monotonic()
    res = nbops(root, "run", "--params", "params/wide.yaml", "--only", "01_eda", timeout=180)
    assert res.returncode == 0, res.stderr + res.stdout
    assert time.monotonic() - start < 120
    import pandas as pd

    table = pd.read_parquet(build_dir(root, "wide") / "00_validate" / "table.parquet")
    assert list(table.columns) == ["Age", "Na_to_K", "Sex", "BP", "Cholesterol", "Drug"]


def test_five_thousand_declared_columns_end_in_bounded_time(root, wide_csv):
    """Declaring all 5000 columns as features: validation and the notebooks get them all. The run
    must end within the per-cell timeout (today EDA's per-column plots take longer than that,
    so it fails at 01_eda naming the cell) rather than hang, and nothing reaches the registry."""

    def edit(p):
        p["data"]["path"] = "data/raw/wide.csv"
        del p["data"]["synthetic"]
        p["data"]["numeric"] = ["Age", "Na_to_K", *[f"c{i}" for i in range(5000)]]
        p["run"] = {"cell_timeout_s": 8}

    write_params(root, "wide-declared", edit)
    start = time.monotonic()
    res = nbops(root, "run", "--params", "params/wide-declared.yaml", "--only", "01_eda", timeout=300)
    elapsed = time.monotonic() - start
    assert elapsed < 240, f"took {elapsed:.0f} s"
    if res.returncode != 0:
        assert "failed at 01_eda" in res.stderr, res.stderr + res.stdout
        assert "Traceback" not in res.stderr
        assert (reports_dir(root, "wide-declared") / "01_eda.html").is_file(), (
            "a failed step still leaves its report"
        )
    table = __import__("pandas").read_parquet(
        build_dir(root, "wide-declared") / "00_validate" / "table.parquet"
    )
    assert table.shape[1] == 5000 + 6


def test_target_as_a_feature_names_the_key_and_dumps_no_section(tmp_path):
    """pydantic's section-level check would show `(got {'path': ...` cut at 60 characters."""
    root = make_project(tmp_path / "project")  # its own: the module's project has a registry by now

    def edit(p):
        p["data"]["numeric"] = ["Age", "Na_to_K", "Drug"]

    write_params(root, "target-feature", edit)
    res = nbops(root, "run", "--params", "params/target-feature.yaml", timeout=120)
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        "error: params/target-feature.yaml: key 'data.numeric': target 'Drug' is also listed as a feature; "
        "remove it from data.numeric"
    ]
    assert not (root / "mlflow").exists(), "nothing may reach the registry"


# ------------------------------------------------------------------ bounds
# Each row of the table, through the CLI in a child that bounds itself (tests/faults/
# test_bounds.py: RLIMIT_AS, a timeout that kills its process group): one clear line, exit 1,
# nothing built or registered.

ALIAS = "YAML alias '*a0' refused: write the value out (aliases can expand a small file into gigabytes)"


def alias_bomb(indent: str, levels: int = 12) -> str:
    """~1.4 KB: each level lists the one before nine times (9**12 strings once expanded)."""
    lines = [f"{indent}a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{indent}a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines)


BOMB_SITES = {
    "model.params.class_weight": (
        "    random_state: 42\n",
        "    random_state: 42\n    class_weight:\n",
        "      ",
    ),
    "registry.experiment": ("  experiment: drug-classifier\n", "  experiment:\n", "    "),
    "data.target": ("  target: Drug\n", "  target:\n", "    "),
    "promote": ("promote: true\n", "promote:\n", "  "),
}


def _bomb_file(root: Path, site: str) -> tuple[str, int]:
    """params/bomb.yaml with the bomb at `site`; returns its name and the line of the first alias."""
    old, new, indent = BOMB_SITES[site]
    smoke = (root / "params" / "smoke.yaml").read_text()
    assert smoke.count(old) == 1
    text = smoke.replace(old, new + alias_bomb(indent) + "\n")
    assert len(text) - len(smoke) < 1600
    (root / "params" / "bomb.yaml").write_text(text)
    return "params/bomb.yaml", text.splitlines().index(f"{indent}a1: &a1 [{', '.join(['*a0'] * 9)}]") + 1


@pytest.fixture
def fresh(tmp_path) -> Path:
    return make_project(tmp_path / "project")


@pytest.mark.parametrize("site", BOMB_SITES)
def test_nested_aliases_are_refused_before_they_expand(fresh, site):
    from tests.faults.test_bounds import nbops_bounded, nothing_registered

    name, line = _bomb_file(fresh, site)
    res = nbops_bounded(fresh, "run", "--params", name, mem_mb=1024, timeout=60)
    assert (res.returncode, res.stderr.splitlines()) == (1, [f"error: {name}: line {line}: {ALIAS}"])
    assert res.seconds < 20
    assert not build_root(fresh).exists() and nothing_registered(fresh)


def test_sweep_check_refuses_aliases_in_its_base_and_in_the_sweep_file(fresh):
    from tests.faults.test_bounds import nbops_bounded

    name, line = _bomb_file(fresh, "model.params.class_weight")
    sweeps = fresh / "params" / "sweeps"
    (sweeps / "bomb-base.yaml").write_text(f"base: {name}\ngrid:\n  model.params.max_depth: [2, 3]\n")
    res = nbops_bounded(
        fresh, "sweep", "--sweep", "params/sweeps/bomb-base.yaml", "--check", mem_mb=1024, timeout=60
    )
    assert (res.returncode, res.stderr.splitlines()) == (1, [f"error: {name}: line {line}: {ALIAS}"])
    text = (
        "base: params/smoke.yaml\nanchors:\n"
        + alias_bomb("  ")
        + "\npoints:\n  - {model.params.max_depth: *a11}\n"
    )
    (sweeps / "bomb.yaml").write_text(text)
    res = nbops_bounded(
        fresh, "sweep", "--sweep", "params/sweeps/bomb.yaml", "--check", mem_mb=1024, timeout=60
    )
    assert (res.returncode, res.stderr.splitlines()) == (
        1,
        [f"error: params/sweeps/bomb.yaml: line 4: {ALIAS}"],
    )
    assert not build_root(fresh).exists()


def test_a_duplicate_key_names_both_lines_instead_of_the_last_winning(fresh):
    from tests.faults.test_bounds import nbops_bounded

    smoke = (fresh / "params" / "smoke.yaml").read_text()
    text = smoke.replace("promote: true\n", "promote: true\nmodel:\n  name: random_forest\n")
    (fresh / "params" / "dup.yaml").write_text(text)
    first, second = smoke.splitlines().index("model:") + 1, text.splitlines().index("model:", 30) + 1
    res = nbops_bounded(fresh, "run", "--params", "params/dup.yaml", mem_mb=1024, timeout=60)
    assert res.stderr.splitlines() == [
        f"error: params/dup.yaml: line {second}: duplicate key 'model' (first at line {first}): keep one"
    ]
    assert res.returncode == 1 and not build_root(fresh).exists()


def test_an_oversized_params_file_is_refused_in_one_line(fresh):
    """The issue's 48 MB `data.numeric` list took minutes to validate; 9 MB of names here."""
    from tests.faults.test_bounds import nbops_bounded

    names = ", ".join(f"column_{i:07d}" for i in range(600_000))
    smoke = (fresh / "params" / "smoke.yaml").read_text()
    path = fresh / "params" / "long.yaml"
    path.write_text(smoke.replace("numeric: [Age, Na_to_K]", f"numeric: [{names}]"))
    mb = path.stat().st_size / 2**20
    assert mb > 8
    res = nbops_bounded(fresh, "run", "--params", "params/long.yaml", mem_mb=1024, timeout=60)
    assert (res.returncode, res.stderr.splitlines()) == (
        1,
        [f"error: params/long.yaml: {mb:.1f} MB, more than the 1 MB a params file may have"],
    )
    assert res.seconds < 10 and not build_root(fresh).exists()


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_params_that_are_not_a_regular_file_are_refused_unread(fresh, kind):
    import os

    from tests.faults.test_bounds import nbops_bounded

    if kind == "fifo":
        os.mkfifo(fresh / "params" / "fifo.yaml")
        arg, line = "params/fifo.yaml", "error: params/fifo.yaml: not a regular file (a FIFO)"
    else:
        arg, line = "/dev/zero", "error: /dev/zero: not a regular file (a character device)"
    res = nbops_bounded(fresh, "run", "--params", arg, mem_mb=1024, timeout=60)
    assert (res.returncode, res.stderr.splitlines()) == (1, [line])
    assert res.seconds < 10 and not build_root(fresh).exists()
