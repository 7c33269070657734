import importlib.util
import os
import re
import time

import pytest

from nbops.exceptions import ParamsError
from nbops.params import load_params
from nbops.runner.notebook import declared_parameters, read_notebook_source
from nbops.runner.plan import RUNNER_PARAMETERS, STEPS, VALIDATE_PARAMETERS
from tests.conftest import REPO


def write(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def smoke_text():
    return (REPO / "params" / "smoke.yaml").read_text()


@pytest.mark.parametrize("name", ["default.yaml", "smoke.yaml"])
def test_shipped_params_files_are_valid(name):
    params = load_params(REPO / "params" / name)
    assert params.model.name == "decision_tree"
    assert params.data.target == "Drug"


def test_unknown_key_names_file_and_key_with_a_hint(tmp_path):
    path = write(tmp_path, smoke_text().replace("  test_size: 0.2", "  test_size: 0.2\n  seeed: 4"))
    with pytest.raises(ParamsError) as exc:
        load_params(path)
    assert exc.value.problems == [f"{path}: unknown key 'split.seeed' (did you mean 'split.seed'?)"]


def test_hyperparameter_at_model_level_points_to_model_params(tmp_path):
    path = write(tmp_path, smoke_text().replace("  cv_folds: 3", "  cv_folds: 3\n  max_depth: 4"))
    with pytest.raises(ParamsError) as exc:
        load_params(path)
    assert exc.value.problems == [
        f"{path}: unknown key 'model.max_depth' "
        "(hyperparameters go under model.params: 'model.params.max_depth')"
    ]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("test_size: 0.2", "test_size: twenty", r"p\.yaml: key 'split\.test_size': .*number.*'twenty'"),
        ("promote: true", "promote: 'yes'", r"key 'promote': .*boolean"),  # a bool is not guessed
        ("  target: Drug\n", "", r"missing key 'data\.target'"),
        ("name: decision_tree", "name: xgboost", r"key 'model\.name'.*decision_tree.*'xgboost'"),
    ],
    ids=["wrong-type", "string-for-bool", "missing-key", "unknown-model-lists-choices"],
)
def test_a_bad_value_is_refused_naming_its_key_and_value(tmp_path, old, new, message):
    text = smoke_text()
    assert old in text  # the case edits what params/smoke.yaml holds
    with pytest.raises(ParamsError, match=message):
        load_params(write(tmp_path, text.replace(old, new)))


def test_python_object_tag_is_refused_by_the_safe_loader(tmp_path):
    path = write(tmp_path, "data: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ParamsError, match=r"not valid YAML"):
        load_params(path)
    assert not (tmp_path / "pwned").exists()


def test_missing_params_file():
    with pytest.raises(ParamsError, match=r"nope\.yaml: params file not found"):
        load_params("nope.yaml")


def test_target_listed_as_feature_names_the_key_not_a_dump_of_the_section(tmp_path):
    path = write(tmp_path, smoke_text().replace("numeric: [Age, Na_to_K]", "numeric: [Age, Na_to_K, Drug]"))
    with pytest.raises(
        ParamsError,
        match=r"^.*p\.yaml: key 'data\.numeric': target 'Drug' is also listed as a feature; "
        r"remove it from data\.numeric$",
    ) as exc:
        load_params(path)
    assert len(exc.value.problems) == 1 and "{" not in str(exc.value)


def test_target_listed_as_categorical_names_data_categorical(tmp_path):
    text = smoke_text().replace("[Sex, BP, Cholesterol]", "[Sex, BP, Cholesterol, Drug]")
    with pytest.raises(ParamsError, match=r"key 'data\.categorical': target 'Drug' is also listed as a"):
        load_params(write(tmp_path, text))


def test_column_listed_twice_or_in_both_lists_names_key_and_column(tmp_path):
    text = smoke_text().replace("numeric: [Age, Na_to_K]", "numeric: [Age, Na_to_K, Age, Sex]")
    path = write(tmp_path, text)
    with pytest.raises(ParamsError) as exc:
        load_params(path)
    assert exc.value.problems == [
        f"{path}: key 'data.numeric': column 'Age' is listed twice",
        f"{path}: key 'data.categorical': column 'Sex' is also in data.numeric; keep it in one of the two",
    ]


def test_categories_and_ranges_of_undeclared_columns_name_their_key(tmp_path):
    text = smoke_text().replace("    Age: [0, 120]", "    Age: [130, 120]\n    BP: [0, 1]")
    path = write(tmp_path, text)
    with pytest.raises(ParamsError) as exc:
        load_params(path)
    assert exc.value.problems == [
        f"{path}: key 'data.ranges.BP': column 'BP' is not in data.numeric",
        f"{path}: key 'data.ranges.Age': low 130 > high 120",
    ]


def test_no_feature_declared(tmp_path):
    text = smoke_text().replace("numeric: [Age, Na_to_K]", "numeric: []")
    text = text.replace("categorical: [Sex, BP, Cholesterol]", "categorical: []")
    text = text.split("  categories:")[0] + "split:" + text.split("split:")[1]  # no categories/ranges either
    with pytest.raises(
        ParamsError,
        match=r"p\.yaml: key 'data\.numeric': declare at least one column in data\.numeric or "
        r"data\.categorical$",
    ):
        load_params(write(tmp_path, text))


def test_every_params_key_is_declared_by_a_notebook():
    """Params are the only knob: each key reaches a notebook's parameters cell (run.* is the runner's)."""
    flat = load_params(REPO / "params" / "default.yaml").notebook_parameters()
    declared = set()
    for step in STEPS:
        path = REPO / step.notebook
        declared |= set(declared_parameters(read_notebook_source(path), path))
    # 00_validate (in-process) reads the data.* checks; `nbops drift` reads drift.* itself
    unused = sorted(k for k in set(flat) - declared - VALIDATE_PARAMETERS if not k.startswith("drift_"))
    assert unused == []
    assert declared <= set(flat) | set(RUNNER_PARAMETERS)


# ------------------------------------------------------------------ bounded reading


def refused(path, shown=None) -> list[str]:
    with pytest.raises(ParamsError) as exc:
        load_params(path, shown)
    return exc.value.problems


def test_a_yaml_alias_is_refused_naming_file_and_line(tmp_path):
    text = smoke_text().replace("  experiment: drug-classifier", "  experiment: &name drug-classifier")
    text = text.replace("  model_name: drug-classifier", "  model_name: *name")
    assert "*name" in text
    path = write(tmp_path, text)
    line = text.splitlines().index("  model_name: *name") + 1
    assert refused(path, "params/p.yaml") == [
        f"params/p.yaml: line {line}: YAML alias '*name' refused: write the value out "
        "(aliases can expand a small file into gigabytes)"
    ]


def test_nested_aliases_are_refused_before_anything_expands_them(tmp_path):
    """The 1.4 KB file that grew to 21 GB: each level refers nine times to the one before."""
    levels = ["    a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    text = smoke_text().replace(
        "    random_state: 42", "    random_state: 42\n    class_weight:\n" + "\n".join(levels)
    )
    path = write(tmp_path, text)
    assert path.stat().st_size < 3000
    (line,) = refused(path)
    assert line.startswith(f"{path}: line ") and "YAML alias '*a0' refused" in line


def test_duplicate_keys_name_both_lines(tmp_path):
    text = smoke_text().replace("    max_depth: 6", "    max_depth: 6\n    random_state: 1\n    max_depth: 9")
    path = write(tmp_path, text)
    lines = text.splitlines()
    first, second = lines.index("    max_depth: 6") + 1, lines.index("    max_depth: 9") + 1
    assert refused(path) == [
        f"{path}: line {second}: duplicate key 'max_depth' (first at line {first}): keep one"
    ]


def test_a_duplicate_section_is_not_last_wins(tmp_path):
    text = smoke_text() + "split:\n  test_size: 0.5\n"
    (line,) = refused(write(tmp_path, text))
    assert "duplicate key 'split' (first at line" in line


def test_params_read_and_refuse_the_same_without_libyaml(monkeypatch):
    """PyYAML built without libyaml has no CSafeLoader: the pure-Python loader stands in."""
    import yaml

    import nbops.yaml_read

    expected = nbops.yaml_read.safe_yaml(smoke_text())
    monkeypatch.delattr(yaml, "CSafeLoader")
    spec = importlib.util.spec_from_file_location("yaml_read_pure", nbops.yaml_read.__file__)
    assert spec is not None and spec.loader is not None
    pure = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pure)  # a fresh copy: the module the package imported stays as it is
    assert "CSafeLoader" not in [c.__name__ for c in pure._BoundedLoader.__mro__]
    assert pure.safe_yaml(smoke_text()) == expected
    for text, line, problem in (
        ("a: &x 1\nb: *x\n", 2, "YAML alias '*x' refused"),
        ("a: 1\na: 2\n", 2, "duplicate key 'a' (first at line 1)"),
        ("a: " + "[" * 40 + "]" * 40 + "\n", 1, "nested more than 32 levels deep"),
    ):
        with pytest.raises(pure.YamlRefused, match=re.escape(problem)) as exc:
            pure.safe_yaml(text)
        assert exc.value.line == line


def test_deep_nesting_is_refused(tmp_path):
    text = smoke_text().replace(
        "    random_state: 42", "    random_state: 42\n    class_weight: " + "[" * 200 + "]" * 200
    )
    (line,) = refused(write(tmp_path, text))
    assert line.endswith("nested more than 32 levels deep")


def test_a_params_file_over_one_mb_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "wb") as fh:
        fh.truncate(48 << 20)  # sparse: 48 MB that cost no disk
    assert refused(path, "params/big.yaml") == [
        "params/big.yaml: 48.0 MB, more than the 1 MB a params file may have"
    ]


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda p: os.mkfifo(p), "a FIFO"),
        (lambda p: p.mkdir(), "a directory"),
        (lambda p: p.symlink_to("/dev/zero"), "a character device"),
    ],
    ids=["fifo", "directory", "dev-zero"],
)
def test_params_must_be_a_regular_file(tmp_path, make, kind):
    path = tmp_path / "p.yaml"
    make(path)
    assert refused(path) == [f"{path}: not a regular file ({kind})"]


def test_quoted_values_are_cut_to_eighty_characters(tmp_path):
    text = smoke_text().replace("test_size: 0.2", "test_size: '" + "x" * 100_000 + "'")
    (line,) = refused(write(tmp_path, text))
    assert line.startswith(
        f"{tmp_path / 'p.yaml'}: key 'split.test_size': Input should be a valid number (got 'xxx"
    )
    assert len(line) < 250 and "…" in line


def test_a_long_list_of_problems_is_cut(tmp_path):
    names = ", ".join(f"c{i % 50}" for i in range(100))
    text = smoke_text().replace("numeric: [Age, Na_to_K]", f"numeric: [{names}]")
    problems = refused(write(tmp_path, text))
    assert len(problems) == 21 and problems[-1].endswith("… and 32 more problems")


def test_validation_is_linear_in_the_length_of_a_column_list(tmp_path):
    """100k names (0.8 MB): the duplicate check took minutes when it was a list lookup per name."""
    names = ", ".join(f"c{i}" for i in range(100_000))
    text = smoke_text().replace("numeric: [Age, Na_to_K]", f"numeric: [{names}, c7]")
    text = text.split("  ranges:")[0] + "split:" + text.split("split:")[1]
    start = time.monotonic()
    problems = refused(write(tmp_path, text))
    assert time.monotonic() - start < 10
    assert problems == [f"{tmp_path / 'p.yaml'}: key 'data.numeric': column 'c7' is listed twice"]


def test_new_bounds_keys_have_generous_defaults():
    params = load_params(REPO / "params" / "smoke.yaml")
    assert (params.data.max_mb, params.run.timeout_s, params.run.cell_timeout_s) == (1024, 3600, 600)
