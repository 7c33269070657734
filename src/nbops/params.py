"""The params schema: `params/*.yaml` is the whole configuration surface.

Every key is declared here (pydantic, unknown keys forbidden, strict types) and, flattened to
`section_key`, in the `parameters` cell of each notebook that uses it. A bad file stops the run
before any kernel starts, with one line per problem naming the file and the key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nbops.exceptions import ParamsError
from nbops.models import ESTIMATORS
from nbops.products import params_hash  # noqa: F401  (here too: sweeps and tests import it from params)

MODEL_NAMES = tuple(ESTIMATORS)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _KeyProblems(ValueError):
    """Problems a section's cross-field check found, each as (dotted key, message): pydantic would
    name the whole section and dump its dict as the value."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{key}: {msg}" for key, msg in problems))


class SyntheticParams(_Section):
    """Where and how to generate the seeded synthetic drug table when `data.path` is absent."""

    path: str
    rows: int = Field(200, ge=10)
    seed: int = 42
    label_noise: float = Field(0.0, ge=0.0, le=0.5)


class DataParams(_Section):
    path: str
    target: str
    numeric: list[str] = []
    categorical: list[str] = []
    classes: list[str] | None = None
    categories: dict[str, list[str]] = {}
    ranges: dict[str, Annotated[list[float], Field(min_length=2, max_length=2)]] = {}
    delimiter: str = Field(",", min_length=1, max_length=1)
    synthetic: SyntheticParams | None = None

    @model_validator(mode="after")
    def _columns_consistent(self):
        if not self.numeric + self.categorical:
            raise _KeyProblems(
                [("data.numeric", "declare at least one column in data.numeric or data.categorical")]
            )
        problems = []
        for key, names in (("data.numeric", self.numeric), ("data.categorical", self.categorical)):
            for pos, col in enumerate(names):
                if col == self.target:
                    msg = f"target {col!r} is also listed as a feature; remove it from {key}"
                    problems.append((key, msg))
                elif col in names[:pos]:
                    problems.append((key, f"column {col!r} is listed twice"))
                elif key == "data.categorical" and col in self.numeric:
                    msg = f"column {col!r} is also in data.numeric; keep it in one of the two"
                    problems.append((key, msg))
        for key, names, declared in (
            ("categories", self.categories, "categorical"),
            ("ranges", self.ranges, "numeric"),
        ):
            for col in names:
                if col not in getattr(self, declared):
                    problems.append((f"data.{key}.{col}", f"column {col!r} is not in data.{declared}"))
        for col, (low, high) in self.ranges.items():
            if not low <= high:
                problems.append((f"data.ranges.{col}", f"low {low:g} > high {high:g}"))
        if problems:
            raise _KeyProblems(problems)
        return self


class SplitParams(_Section):
    test_size: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 42


class ModelParams(_Section):
    name: Literal[MODEL_NAMES]  # type: ignore[valid-type]
    params: dict[str, Any] = {}
    cv_folds: int = Field(5, ge=2, le=20)


class GateParams(_Section):
    min_macro_f1: float = Field(ge=0.0, le=1.0)
    min_accuracy: float = Field(ge=0.0, le=1.0)
    tolerance: float = Field(0.0, ge=0.0, le=1.0)


class RegistryParams(_Section):
    model_name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    experiment: str = Field("nbops", min_length=1)


class EdaParams(_Section):
    sample_rows: int = Field(2000, ge=100)


class RunParams(_Section):
    """Runner settings (not injected into notebooks)."""

    cell_timeout_s: int = Field(600, ge=1)


class DriftParams(_Section):
    """The drift check (`make drift`): current data vs the champion's training sample.

    A column drifts when its test's p-value is below `alpha` divided by the number of columns
    tested (Bonferroni), so `alpha` bounds the false-alarm rate of the whole check.
    """

    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    min_rows: int = Field(30, ge=5)  # fewer values than this in a column: not tested


class Params(_Section):
    data: DataParams
    split: SplitParams = SplitParams()
    model: ModelParams
    gate: GateParams
    registry: RegistryParams
    eda: EdaParams = EdaParams()
    run: RunParams = RunParams()
    drift: DriftParams = DriftParams()
    promote: bool = True

    def notebook_parameters(self) -> dict[str, Any]:
        """Flatten to `section_key` names, as declared in the notebooks' parameters cells."""
        flat: dict[str, Any] = {}
        for section, value in self.model_dump(mode="json").items():
            if section == "run":
                continue
            if isinstance(value, dict):
                for key, inner in value.items():
                    flat[f"{section}_{key}"] = inner
            else:
                flat[section] = value
        return flat


def _dotted(loc) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-after"))


def _known_keys(model: type[BaseModel], prefix="") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        ann = field.annotation
        for sub in (ann, *getattr(ann, "__args__", ())):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                keys += _known_keys(sub, prefix + name + ".")
    return keys


def _describe(error: dict, source: str) -> list[str]:
    key = _dotted(error["loc"])
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, _known_keys(Params), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        if key.startswith("model.") and key.count(".") == 1:
            hint = f" (hyperparameters go under model.params: 'model.params.{key[6:]}')"
        return [f"{source}: unknown key '{key}'{hint}"]
    if error["type"] == "missing":
        return [f"{source}: missing key '{key}'"]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _KeyProblems):  # the message names the value; no dump of the section
        return [f"{source}: key '{k}': {msg}" for k, msg in cause.problems]
    shown = repr(error.get("input"))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    where = f"key '{key}'" if key else "params"
    msg = error["msg"].removeprefix("Value error, ")
    return [f"{source}: {where}: {msg} (got {shown})"]


def parse_params(raw: Any, source: str = "<params>") -> Params:
    """Validate an already-loaded mapping; raise ParamsError with one line per problem."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError([line for e in exc.errors() for line in _describe(e, source)]) from None


def safe_yaml(text: str) -> Any:
    """yaml.safe_load with libyaml's C parser when PyYAML has it (10x faster; same safe
    constructors: a `!!python/object` tag is refused either way)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def load_params(path: str | Path, shown: str | None = None) -> Params:
    """Read a params YAML file with the safe loader and validate it; messages name the file
    as `shown` (default: the path as given)."""
    path = Path(path)
    label = shown or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{label}: params file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{label}: cannot read params file ({exc.__class__.__name__})") from None
    try:
        raw = safe_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise ParamsError(f"{label}: not valid YAML{where}: {problem}") from None
    return parse_params(raw, label)
