"""The params schema: `params/*.yaml` is the whole configuration surface.

Every key is declared here (pydantic, unknown keys forbidden, strict types) and, flattened to
`section_key`, in the `parameters` cell of each notebook that uses it. A bad file stops the run
before any kernel starts, with one line per problem naming the file and the key.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from nbops.exceptions import ParamsError
from nbops.ml.estimators import ESTIMATORS, MODEL_NAMES, TASKS
from nbops.ml.metrics import DEFAULT_METRIC, METRICS, metric_problem
from nbops.products import params_hash  # noqa: F401  (here too: sweeps and tests import it from params)
from nbops.yaml_read import MAX_PARAMS_BYTES, MAX_YAML_DEPTH, quoted, read_yaml, safe_yaml, shorten  # noqa: F401  (the params API)

LEGACY_FLOOR_KEYS = ("min_macro_f1", "min_accuracy")  # folded into gate.floors
MAX_PROBLEMS = 20  # lines of one error; the rest counted


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

    path: str = Field(description="Where the synthetic CSV is written, relative to the project.")
    rows: int = Field(200, ge=10, le=10_000_000, description="Rows to generate.")
    seed: int = Field(42, description="Random seed: the same seed gives the same table.")
    label_noise: float = Field(0.0, ge=0.0, le=0.5, description="Share of rows given a random label.")


class DataParams(_Section):
    """The input table: which CSV, which columns, and what values they may hold."""

    path: str = Field(description="The CSV, relative to the project.")
    target: str = Field(description="The label column.")
    numeric: list[str] = Field([], description="Numeric feature columns; missing values are imputed.")
    categorical: list[str] = Field([], description="Categorical feature columns; missing values are imputed.")
    classes: list[str] | None = Field(
        None, description="The allowed labels, matched case-insensitively (`DrugY` is read as `drugY`)."
    )
    categories: dict[str, list[str]] = Field(
        {}, description="Allowed values per categorical column, checked when the table is read."
    )
    ranges: dict[str, Annotated[list[float], Field(min_length=2, max_length=2)]] = Field(
        {}, description="`[low, high]` bounds per numeric column, checked when the table is read."
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="The CSV's field separator.")
    max_mb: int = Field(  # data.path larger than this is refused before it is read
        1024, ge=1, description="The largest `data.path` read, in MB; a larger file is refused unread."
    )
    synthetic: SyntheticParams | None = Field(
        None,
        description="Generate the seeded synthetic drug table when `data.path` is absent; "
        "omit it to require a real file.",
    )

    @model_validator(mode="after")
    def _columns_consistent(self):
        if not self.numeric + self.categorical:
            raise _KeyProblems(
                [("data.numeric", "declare at least one column in data.numeric or data.categorical")]
            )
        # sets, not list lookups: a list of 100k names must validate in linear time
        problems = []
        numeric = set(self.numeric)
        for key, names in (("data.numeric", self.numeric), ("data.categorical", self.categorical)):
            seen: set[str] = set()
            for col in names:
                if col == self.target:
                    msg = f"target {quoted(col)} is also listed as a feature; remove it from {key}"
                    problems.append((key, msg))
                elif col in seen:
                    problems.append((key, f"column {quoted(col)} is listed twice"))
                elif key == "data.categorical" and col in numeric:
                    msg = f"column {quoted(col)} is also in data.numeric; keep it in one of the two"
                    problems.append((key, msg))
                seen.add(col)
        for key, names, declared in (
            ("categories", list(self.categories), "categorical"),
            ("ranges", list(self.ranges), "numeric"),
        ):
            known = set(getattr(self, declared))
            for col in names:
                if col not in known:
                    problems.append(
                        (f"data.{key}.{shorten(col)}", f"column {quoted(col)} is not in data.{declared}")
                    )
        for col, (low, high) in self.ranges.items():
            if not low <= high:
                problems.append((f"data.ranges.{col}", f"low {low:g} > high {high:g}"))
        if problems:
            raise _KeyProblems(problems)
        return self


class SplitParams(_Section):
    """The holdout that challenger and champion are both scored on (stratified by class for
    classification, a plain seeded split for regression)."""

    test_size: float = Field(0.2, gt=0.0, lt=1.0, description="Share of rows held out.")
    seed: int = Field(42, description="Seed of the split: the same seed gives the same rows.")


class ModelParams(_Section):
    """The estimator to train."""

    name: Literal[MODEL_NAMES] = Field(  # type: ignore[valid-type]
        description="The scikit-learn estimator; the task's variant (a regressor under `task: regression`)."
    )
    params: dict[str, Any] = Field(
        {},
        description="Hyperparameters of that estimator; names and values checked before any kernel starts.",
    )
    cv_folds: int = Field(5, ge=2, le=20, description="Cross-validation folds on the training part.")


class GateParams(_Section):
    """The promotion gate: when a challenger becomes `champion` (docs/gate.md)."""

    metric: str | None = Field(
        None,
        description="The metric the gate ranks by: macro_f1 (the classification default), accuracy, "
        "weighted_f1, roc_auc (binary targets); rmse (the regression default), mae, r2.",
    )
    floors: dict[str, float] = Field(
        {},
        description="Per metric, the value the challenger must reach; for rmse and mae a ceiling "
        "(at most it): `{macro_f1: 0.8}`, `{rmse: 12.5}`.",
    )
    min_macro_f1: float | None = Field(None, ge=0.0, le=1.0, description="The same as `floors.macro_f1`.")
    min_accuracy: float | None = Field(None, ge=0.0, le=1.0, description="The same as `floors.accuracy`.")
    tolerance: float = Field(
        0.0,
        ge=0.0,
        description="How far the challenger may fall behind the champion on each metric with a floor, "
        "in that metric's units.",
    )
    paired: bool = Field(
        True,
        description="Promote only when the paired bootstrap interval of Δ gate.metric (both models on "
        "the same held-out rows) lies beyond min_improvement in the metric's direction; false: any "
        "better value promotes.",
    )
    confidence: float = Field(0.95, ge=0.5, lt=1.0, description="Coverage of that interval.")
    min_improvement: float = Field(
        0.0, ge=0.0, description="The interval's near end must be beyond this improvement of gate.metric."
    )

    @model_validator(mode="after")
    def _fold_legacy_floors(self):
        """`min_macro_f1` and `min_accuracy` are floors by another name: folded into `floors`."""
        problems = []
        for metric in ("macro_f1", "accuracy"):
            legacy = getattr(self, f"min_{metric}")
            if legacy is None:
                continue
            if metric in self.floors and self.floors[metric] != legacy:
                msg = f"{legacy:g} differs from gate.floors.{metric} {self.floors[metric]:g}; keep one"
                problems.append((f"gate.min_{metric}", msg))
            self.floors.setdefault(metric, legacy)
        if problems:
            raise _KeyProblems(problems)
        return self


class RegistryParams(_Section):
    """Where runs and versions go in MLflow."""

    model_name: str = Field(
        min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="The MLflow registered model."
    )
    experiment: str = Field("nbops", min_length=1, description="The MLflow experiment of the runs.")


class EdaParams(_Section):
    """The EDA notebook."""

    sample_rows: int = Field(2000, ge=100, description="Rows plotted at most in the relationship plots.")


class RunParams(_Section):
    """Runner settings (not injected into notebooks)."""

    cell_timeout_s: int = Field(600, ge=1, description="Seconds one cell may run.")
    timeout_s: int = Field(  # the whole run, from its start: kernels stopped past it
        3600,
        ge=1,
        description="Seconds the whole run may take, from its start; past it the kernels are stopped.",
    )


class DriftParams(_Section):
    """The drift check (`make drift`): current data vs the champion's training sample.

    A column drifts when its test's p-value is below `alpha` divided by the number of columns
    tested (Bonferroni), so `alpha` bounds the false-alarm rate of the whole check.
    """

    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="False-alarm rate of the whole check.")
    min_rows: int = Field(  # fewer values than this in a column: not tested
        30, ge=5, description="A column with fewer values than this is not tested."
    )


class Params(_Section):
    """A params file: `params/*.yaml`."""

    task: Literal[TASKS] = Field(  # type: ignore[valid-type]
        "classification", description="What the target is: class labels, or a number to predict."
    )
    data: DataParams
    split: SplitParams = SplitParams()
    model: ModelParams
    gate: GateParams
    registry: RegistryParams
    eda: EdaParams = EdaParams()
    run: RunParams = RunParams()
    drift: DriftParams = DriftParams()
    promote: bool = Field(
        True, description="`false` evaluates and reports but moves no alias (pull requests)."
    )

    @model_validator(mode="after")
    def _task_consistent(self):
        """The model, the gate's metric and its floors belong to the task; `gate.metric` is set."""
        problems = []
        if self.model.name not in ESTIMATORS[self.task]:
            known = ", ".join(ESTIMATORS[self.task])
            problems.append(
                ("model.name", f"{self.model.name!r} is not a {self.task} model (one of: {known})")
            )
        self.gate.metric = self.gate.metric or DEFAULT_METRIC[self.task]
        for key, metric in [
            ("gate.metric", self.gate.metric),
            *((f"gate.floors.{m}", m) for m in self.gate.floors),
        ]:
            problem = metric_problem(self.task, metric)
            if problem:
                problems.append(
                    (key, problem + ("" if self.task == "regression" else "; or set task: regression"))
                )
        for metric, floor in self.gate.floors.items():
            if metric in METRICS and not METRICS[metric].higher_is_better and floor < 0:
                problems.append(
                    (f"gate.floors.{metric}", f"{floor:g} is below 0: an error is never negative")
                )
            elif metric in METRICS and METRICS[metric].task == "classification" and not 0 <= floor <= 1:
                problems.append((f"gate.floors.{metric}", f"{floor:g} is outside [0, 1]"))
        if self.task == "regression" and self.data.classes is not None:
            problems.append(("data.classes", "a regression target has no classes; remove data.classes"))
        if problems:
            raise _KeyProblems(problems)
        return self

    def notebook_parameters(self) -> dict[str, Any]:
        """Flatten to `section_key` names, as declared in the notebooks' parameters cells (the
        legacy floor keys reach them as `gate_floors`)."""
        flat: dict[str, Any] = {}
        for section, value in self.model_dump(mode="json").items():
            if section == "run":
                continue
            if isinstance(value, dict):
                for key, inner in value.items():
                    if section == "gate" and key in LEGACY_FLOOR_KEYS:
                        continue
                    flat[f"{section}_{key}"] = inner
            else:
                flat[section] = value
        return flat


def params_json_schema() -> dict[str, Any]:
    """The JSON schema of a params file, from `Params`: what `params/params.schema.json` holds,
    so editors check params files as they are typed. Checks across keys (a column listed twice, a
    range for an undeclared column) run only when a file is loaded."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **Params.model_json_schema()}


def params_schema_text() -> str:
    """`params_json_schema()` as the text committed in `params/params.schema.json`."""
    return json.dumps(params_json_schema(), indent=2, ensure_ascii=False) + "\n"


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


def _describe(error: ErrorDetails, source: str) -> list[str]:
    key = shorten(_dotted(error["loc"]))
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
    where = f"key '{key}'" if key else "params"
    msg = shorten(error["msg"].removeprefix("Value error, "), 200)
    return [f"{source}: {where}: {msg} (got {quoted(error.get('input'))})"]


def _at_most(lines: list[str], source: str) -> list[str]:
    if len(lines) <= MAX_PROBLEMS:
        return lines
    return [*lines[:MAX_PROBLEMS], f"{source}: … and {len(lines) - MAX_PROBLEMS} more problems"]


def parse_params(raw: Any, source: str = "<params>") -> Params:
    """Validate an already-loaded mapping; raise ParamsError with one line per problem."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [line for e in exc.errors(include_url=False) for line in _describe(e, source)]
        raise ParamsError(_at_most(lines, source)) from None


def load_params(path: str | Path, shown: str | None = None) -> Params:
    """Read a params YAML file (`read_yaml`: bounded, no aliases, no duplicate keys) and
    validate it; messages name the file as `shown` (default: the path as given)."""
    label = shown or str(path)
    try:
        raw = read_yaml(path, label)
    except FileNotFoundError:
        raise ParamsError(f"{label}: params file not found") from None
    return parse_params(raw, label)
