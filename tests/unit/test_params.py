from pathlib import Path

import pytest

from nbops.exceptions import ParamsError
from nbops.params import load_params
from nbops.runner import (
    RUNNER_PARAMETERS,
    STEPS,
    VALIDATE_PARAMETERS,
    declared_parameters,
    read_notebook_source,
)

REPO = Path(__file__).resolve().parents[2]


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


def test_wrong_type_names_key_and_value(tmp_path):
    path = write(tmp_path, smoke_text().replace("test_size: 0.2", "test_size: twenty"))
    with pytest.raises(ParamsError, match=r"p\.yaml: key 'split\.test_size': .*number.*'twenty'"):
        load_params(path)


def test_bool_is_not_guessed_from_a_string(tmp_path):
    path = write(tmp_path, smoke_text().replace("promote: true", "promote: 'yes'"))
    with pytest.raises(ParamsError, match=r"key 'promote': .*boolean"):
        load_params(path)


def test_missing_required_key(tmp_path):
    path = write(tmp_path, smoke_text().replace("  target: Drug\n", ""))
    with pytest.raises(ParamsError, match=r"missing key 'data\.target'"):
        load_params(path)


def test_unknown_model_name_lists_the_choices(tmp_path):
    path = write(tmp_path, smoke_text().replace("name: decision_tree", "name: xgboost"))
    with pytest.raises(ParamsError, match=r"key 'model\.name'.*decision_tree.*'xgboost'"):
        load_params(path)


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
