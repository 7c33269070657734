"""The published params schema (params/params.schema.json) is the one the pydantic model gives,
and every params file points editors at it and passes it."""

import json

import jsonschema
import pytest

from nbops.exceptions import ParamsError
from nbops.params import load_params, params_json_schema, params_schema_text, parse_params, safe_yaml
from tests.conftest import REPO

SCHEMA = REPO / "params" / "params.schema.json"
PARAMS_FILES = sorted((REPO / "params").glob("*.yaml"))
FIRST_LINE = "# yaml-language-server: $schema=./params.schema.json"


def test_the_committed_schema_is_the_one_the_model_generates():
    assert SCHEMA.read_text(encoding="utf-8") == params_schema_text(), (
        "params/params.schema.json differs from nbops.params.Params: regenerate it with `make params-schema`"
    )


def test_the_schema_is_a_valid_draft_2020_12_schema():
    schema = params_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: p.name)
def test_every_params_file_points_at_the_schema_and_passes_it(path):
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == FIRST_LINE, f"{path.name}: first line should be {FIRST_LINE!r}"
    load_params(path)  # the loader reads the comment line as a comment
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    assert [e.message for e in validator.iter_errors(safe_yaml(text))] == []


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p["model"].update(max_depth=3), "'max_depth' was unexpected"),
        (lambda p: p["gate"].update(tolerance="high"), "'high' is not of type 'number'"),
        (lambda p: p["model"].update(name="svm"), "'svm' is not one of"),
        (lambda p: p["split"].update(test_size=1.5), "1.5 is greater than or equal to the maximum of 1"),
        (lambda p: p.pop("registry"), "'registry' is a required property"),
    ],
    ids=["unknown key", "wrong type", "unknown model", "out of range", "missing section"],
)
def test_the_schema_refuses_what_the_loader_refuses(change, message):
    raw = safe_yaml((REPO / "params" / "smoke.yaml").read_text(encoding="utf-8"))
    change(raw)
    errors = [e.message for e in jsonschema.Draft202012Validator(params_json_schema()).iter_errors(raw)]
    assert any(message in e for e in errors), errors
    with pytest.raises(ParamsError):
        parse_params(raw)
