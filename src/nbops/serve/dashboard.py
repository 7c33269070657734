"""The Voila dashboard of the champion model, as plain Python and ipywidgets.

Inputs are built from the schema recorded with the model (ranges and categories of its training
data), so nothing here knows about drugs. The model comes from an exported champion folder when
`NBOPS_MODEL_DIR` is set (the Space image), else from `models:/<name>@champion` in the tracking
store, with the name read from the params file `NBOPS_PARAMS` (default `params/default.yaml`).
`notebooks/dashboard.ipynb` only calls `build_app()`; everything else is unit-tested without Voila.
"""

from __future__ import annotations

import base64
import html
import io
import json
import numbers
import os
import re
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbops.exceptions import DataError, ModelError, NbopsError

if TYPE_CHECKING:
    import pandas as pd

ENV_MODEL_DIR = "NBOPS_MODEL_DIR"
ENV_PARAMS = "NBOPS_PARAMS"
ENV_ROOT = "NBOPS_ROOT"
DEFAULT_PARAMS = "params/default.yaml"
MODEL_CARD_FILE = "model_card.json"
SCHEMA_FILE = "schema.json"
MODEL_SUBDIR = "model"

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_BATCH_ROWS = 50_000
MAX_EXTRA_COLUMNS = 1_000  # columns a file may have besides the model's (read, then ignored)
SHOWN_CHARS = 80  # of a cell's value in a message or table on the page
SHOWN_RESULT_ROWS = 200
SHOWN_PROBLEMS = 100

TITLE = "Model dashboard"  # the page with a model says what it predicts instead


class NoChampionError(ModelError):
    """The registry has no `champion` yet: the page says what to run."""


class BatchError(DataError):
    """An uploaded file cannot be scored at all (empty, not a CSV, no rows, missing columns)."""


# ---------------------------------------------------------------- where the model comes from


@dataclass
class ModelSource:
    """Either an exported champion folder or a registered model's `champion` alias."""

    kind: str  # "folder" | "registry"
    folder: Path | None = None
    model_name: str = ""
    root: Path | None = None

    @property
    def label(self) -> str:
        return str(self.folder) if self.kind == "folder" else f"models:/{self.model_name}@champion"


def find_project_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding `params/` (Voila runs kernels in notebooks/)."""
    for folder in (start, *start.parents):
        if (folder / "params").is_dir():
            return folder
    return start


def resolve_model_source(env: dict[str, str] | None = None, cwd: Path | None = None) -> ModelSource:
    """`NBOPS_MODEL_DIR` wins; else the champion of the model named in the params file."""
    env = os.environ if env is None else env
    cwd = cwd or Path.cwd()
    folder = env.get(ENV_MODEL_DIR, "").strip()
    if folder:
        path = Path(folder) if Path(folder).is_absolute() else cwd / folder
        return ModelSource("folder", folder=path)
    from nbops.params import load_params  # not needed (nor installed) in the Space image

    root = Path(env[ENV_ROOT]) if env.get(ENV_ROOT) else find_project_root(cwd)
    params_path = Path(env.get(ENV_PARAMS) or DEFAULT_PARAMS)
    if not params_path.is_absolute():
        params_path = root / params_path
    params = load_params(params_path)
    return ModelSource("registry", model_name=params.registry.model_name, root=root)


@dataclass
class Champion:
    """A loaded model with the schema it was trained on and its model card."""

    model: Any
    schema: dict[str, Any]
    card: dict[str, Any]

    @property
    def features(self) -> list[str]:
        return [*self.schema["numeric"], *self.schema["categorical"]]

    @cached_property
    def tolerance(self) -> ModelTolerance:
        return read_tolerance(self.model, self.schema)


def model_card(model_version, run, holdout: dict[str, Any]) -> dict[str, Any]:
    """What answered: registry name and version, when and from which commit, held-out scores."""
    tags = model_version.tags or {}
    started = datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC)
    return {
        "name": model_version.name,
        "version": str(model_version.version),
        "alias": "champion",
        "run_id": run.info.run_id,
        "trained_at": started.strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": tags.get("nbops.git_commit", "unknown"),
        "params_hash": tags.get("nbops.params_hash", ""),
        "data_hash": tags.get("nbops.data_hash", ""),
        "gate_verdict": tags.get("nbops.gate.verdict", ""),
        "metrics": {k: holdout[k] for k in ("accuracy", "macro_f1", "weighted_f1") if k in holdout},
        "holdout_rows": holdout.get("rows"),
        "labels": holdout.get("labels", []),
        "confusion_matrix": holdout.get("confusion_matrix", []),
    }


def _mlflow():
    # Imported alone: ruff sorts `mlflow` differently when a local mlflow/ store folder exists.
    import mlflow

    return mlflow


def registry_champion_info(model_name: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(model version, schema, model card) of the current champion; NoChampionError if none."""
    from nbops.ml import tracking

    version = tracking.get_alias_version(model_name, tracking.CHAMPION)
    if version is None:
        raise NoChampionError(
            f"No champion model yet for {model_name!r}. Train one with `make pipeline` "
            "(it registers a model and promotes it when it passes the gate), then reload this page."
        )
    mlflow = _mlflow()
    where = f"{model_name} v{version.version} (run {version.run_id})"
    docs = {}
    for name in (SCHEMA_FILE, "holdout_metrics.json"):
        try:
            docs[name] = tracking.run_artifact_json(version.run_id, name)
        except mlflow.exceptions.MlflowException:
            raise ModelError(
                f"{where}: the champion's run has no readable {name}, which the evaluate step logs; "
                "train and promote a new champion with `make pipeline`"
            ) from None
    run = mlflow.MlflowClient().get_run(version.run_id)
    return version, docs[SCHEMA_FILE], model_card(version, run, docs["holdout_metrics.json"])


def _quiet_mlflow() -> None:
    # Progress bars and warnings would land on the page as stray output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def load_champion(source: ModelSource) -> Champion:
    """Load the model (skops, trusted types fixed in code), its schema and its model card."""
    from nbops.ml import tracking

    if source.kind == "folder":
        return load_exported_champion(source.folder)
    _quiet_mlflow()
    tracking.configure_tracking(source.root or Path.cwd())
    version, schema, card = registry_champion_info(source.model_name)
    model = tracking.load_model(f"models:/{source.model_name}/{version.version}")
    card["source"] = source.label
    return Champion(model, schema, card)


def load_exported_champion(folder: Path) -> Champion:
    """An exported champion: `model/` (MLflow model folder), `schema.json`, `model_card.json`."""
    from nbops.ml import tracking

    if not folder.is_dir():
        raise NoChampionError(
            f"No exported champion at {folder}: build the Space folder with `make space` "
            f"or unset {ENV_MODEL_DIR} to use the tracking store."
        )
    docs = {}
    for name in (SCHEMA_FILE, MODEL_CARD_FILE):
        try:
            docs[name] = json.loads((folder / name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{folder}: {name} is missing from the exported champion") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise ModelError(f"{folder}: {name} is not valid JSON") from None
    check_schema(docs[SCHEMA_FILE], folder / SCHEMA_FILE)
    model = tracking.load_model_dir(folder / MODEL_SUBDIR, f"{folder / MODEL_SUBDIR}")
    card = {**docs[MODEL_CARD_FILE], "source": "exported champion"}
    return Champion(model, docs[SCHEMA_FILE], card)


def check_schema(schema: Any, where: Any) -> None:
    """The schema the widgets are built from must name its columns, ranges and categories."""
    ok = (
        isinstance(schema, dict)
        and isinstance(schema.get("numeric"), dict)
        and isinstance(schema.get("categorical"), dict)
        and all(isinstance(v, dict) and {"min", "max"} <= set(v) for v in schema["numeric"].values())
        and all(isinstance(v, list) and v for v in schema["categorical"].values())
        and (schema["numeric"] or schema["categorical"])
    )
    if not ok:
        raise ModelError(f"{where}: schema must list numeric columns with min/max and categorical values")


# ---------------------------------------------------------------- one prediction


def build_inputs(schema: dict[str, Any], most_frequent: dict[str, Any] | None = None) -> dict[str, Any]:
    """One bounded number box per numeric column (training range, starting at the median), one
    dropdown per categorical (starting at its most frequent value when `most_frequent` names it,
    else at the first). Each label sits above its input (STYLE), so a long column name fits."""
    import ipywidgets as w

    most_frequent = most_frequent or {}
    inputs: dict[str, Any] = {}
    style = {"description_width": "initial"}  # the label's own width: nothing cut off
    for col, info in schema["numeric"].items():
        low, high = float(info["min"]), float(info["max"])
        median = round(float(info.get("median", low)), 2)
        if info.get("integer"):
            box = w.BoundedIntText(
                value=round(median), min=int(low), max=int(high), step=1, description=col, style=style
            )
        else:
            # step=None: any decimal is accepted (the arrows move by 1)
            box = w.BoundedFloatText(value=median, min=low, max=high, step=None, description=col, style=style)
        inputs[col] = box
    for col, values in schema["categorical"].items():
        options = [str(v) for v in values]
        start = str(most_frequent.get(col, options[0]))
        inputs[col] = w.Dropdown(
            options=options, value=start if start in options else options[0], description=col, style=style
        )
    for col, widget in inputs.items():
        widget.layout.width = "16em"
        widget.add_class("nbops-input")
        widget.add_class(f"nbops-input-{_css_name(col)}")
    return inputs


def _range_text(info: dict[str, Any]) -> str:
    return f"{float(info['min']):g} to {float(info['max']):g}"


def _css_name(column: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in column)


def read_inputs(inputs: dict[str, Any]) -> pd.DataFrame:
    """The widgets' values as a one-row table with the model's feature columns."""
    import pandas as pd

    return pd.DataFrame([{col: widget.value for col, widget in inputs.items()}])


@dataclass
class Prediction:
    label: str
    probabilities: dict[str, float]  # highest first
    seconds: float = 0.0


def predict_one(champion: Champion, row: pd.DataFrame) -> Prediction:
    from nbops.ml.models import predict_table

    start = time.perf_counter()
    table = predict_table(champion.model, row[champion.features])
    elapsed = time.perf_counter() - start
    first = table.iloc[0]
    probs = {c.removeprefix("p_"): float(first[c]) for c in table.columns if c.startswith("p_")}
    probs = dict(sorted(probs.items(), key=lambda kv: -kv[1]))
    return Prediction(str(first["prediction"]), probs, elapsed)


def _top(name: str, label: str) -> str:
    return " nbops-bar-top" if name == label else ""


def prediction_html(pred: Prediction) -> str:
    """The label in large type and the class probabilities as a horizontal bar chart."""
    e = html.escape
    top = pred.probabilities.get(pred.label, 0.0)
    bars = "".join(
        f'<div class="nbops-bar-row"><span class="nbops-bar-name">{e(name)}</span>'
        f'<span class="nbops-bar"><span class="nbops-bar-fill{_top(name, pred.label)}"'
        f' style="width:{p * 100:.1f}%"></span></span>'
        f'<span class="nbops-bar-value">{p:.0%}</span></div>'
        for name, p in pred.probabilities.items()
    )
    return (
        '<div class="nbops-result">'
        f'<div class="nbops-label">{e(pred.label)}</div>'
        f'<div class="nbops-confidence">probability {top:.0%} · '
        f"answered in {pred.seconds * 1000:.0f} ms</div>"
        f'<div class="nbops-bars" role="img" aria-label="class probabilities">{bars}</div></div>'
    )


def model_card_html(card: dict[str, Any]) -> str:
    """Name, version, when and from which commit; held-out metrics and confusion matrix."""
    e = html.escape
    metrics = card.get("metrics", {})
    metric_cells = "".join(
        f'<div class="nbops-metric"><div class="nbops-metric-value">{float(v):.3f}</div>'
        f'<div class="nbops-metric-name">{e(k.replace("_", " "))}</div></div>'
        for k, v in metrics.items()
    )
    commit = str(card.get("git_commit", "unknown"))
    facts = [
        ("model", f"{card.get('name', '?')} v{card.get('version', '?')} (alias champion)"),
        ("trained", str(card.get("trained_at", "unknown"))),
        ("commit", commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")),
        ("run", str(card.get("run_id", ""))),
        ("loaded from", str(card.get("source", ""))),
    ]
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts)
    return (
        '<div class="nbops-card"><h3>Model card</h3>'
        f'<table class="nbops-facts">{rows}</table>'
        f'<div class="nbops-metrics">{metric_cells}</div>'
        f'<div class="nbops-metrics-note">held-out rows: {e(str(card.get("holdout_rows", "?")))}</div>'
        f"{confusion_html(card.get('labels', []), card.get('confusion_matrix', []))}</div>"
    )


def confusion_html(labels: list[str], matrix: list[list[int]]) -> str:
    if not labels or not matrix:
        return ""
    e = html.escape
    peak = max((max(r) for r in matrix if r), default=1) or 1
    head = "".join(f"<th>{e(str(c))}</th>" for c in labels)
    body = ""
    for label, row in zip(labels, matrix, strict=False):
        cells = "".join(
            f'<td style="background:rgba(37,99,235,{0.08 + 0.7 * v / peak:.2f})">{int(v)}</td>' for v in row
        )
        body += f"<tr><th>{e(str(label))}</th>{cells}</tr>"
    return (
        '<table class="nbops-confusion"><caption>Confusion matrix on the holdout '
        "(rows: true, columns: predicted)</caption>"
        f"<thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


# ---------------------------------------------------------------- batch scoring

# C0 control characters other than tab, newline, vertical tab, form feed, carriage return: a
# text CSV has none of them, a binary file (image, zip, Excel) has them within a few bytes.
_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1f]")


@dataclass
class RowProblem:
    row: int  # spreadsheet row: the header is row 1
    column: str
    value: str
    problem: str

    def text(self) -> str:
        """One line: `sex (empty) is missing`, `Age '500' is outside the training range 15 to 74`."""
        if not self.column:
            return self.problem
        return f"{clip(self.column)} {_quoted(self.value)} {self.problem}"


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """At most `limit` characters of `text`, with … where it was cut (a 4 MB cell is shown as
    its first 80 characters)."""
    return text if len(text) <= limit else text[:limit] + "…"


def _quoted(value: str) -> str:
    return repr(clip(value)) if value else "(empty)"


@dataclass
class BatchResult:
    """`scored`: input columns + prediction + p_<class> + warnings, index = spreadsheet row.
    `problems`: cells the model cannot take (their rows are not scored); `warnings`: cells it
    takes though they are outside its training data (their rows are scored, and say so)."""

    scored: pd.DataFrame
    problems: list[RowProblem] = field(default_factory=list)
    rows: int = 0
    warnings: list[RowProblem] = field(default_factory=list)

    def summary(self) -> str:
        bad = len({p.row for p in self.problems})
        warned = len({w.row for w in self.warnings})
        text = f"{len(self.scored)} of {self.rows} row{'s' if self.rows != 1 else ''} scored"
        if warned:
            text += f" ({warned} with warnings, listed below)"
        if bad:
            text += f"; {bad} row{'s' if bad != 1 else ''} with problems not scored (listed below)"
        return text

    def to_csv(self) -> str:
        """The scored rows as CSV for a spreadsheet, text cells made safe to open (`neutralise_formulas`)."""
        return neutralise_formulas(self.scored.rename_axis("row")).to_csv(float_format="%.4f")


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(value: Any) -> Any:
    """`=cmd|' /C calc'!A0` -> `'=cmd|' /C calc'!A0`: a text cell a spreadsheet would run as a
    formula gets a leading single quote, so it shows as text. Anything else is returned as is."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def neutralise_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` for a CSV people open: every text cell, column name and the index name
    through `neutralise_formula`. Number columns stay numbers (-1.5 is data, not a formula)."""
    import pandas as pd

    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_object_dtype(out[col]) or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(neutralise_formula, na_action="ignore")
    out.columns = [neutralise_formula(str(c)) for c in out.columns]
    if out.index.name is not None:
        out.index.name = neutralise_formula(str(out.index.name))
    return out


@dataclass
class ModelTolerance:
    """What the champion's own pipeline does with a cell unlike its training data, read from its
    fitted steps. Empty (nothing tolerated) for a model whose steps are not recognised."""

    fills: dict[str, Any] = field(default_factory=dict)  # column -> the value its imputer fills in
    imputed: set[str] = field(default_factory=set)  # columns whose missing cells are filled in
    unknown_ok: set[str] = field(default_factory=set)  # categorical columns ignoring unseen values
    modes: dict[str, Any] = field(default_factory=dict)  # column -> most frequent training value


# An unseen category is encoded as "none of the known ones" by these settings (scikit-learn's own).
_UNKNOWN_OK = {
    "OneHotEncoder": {"ignore", "infrequent_if_exist", "warn"},
    "OrdinalEncoder": {"use_encoded_value"},
}


def _column_steps(model) -> dict[str, list[tuple[Any, int]]]:
    """Input column -> the fitted steps applied to it, each with the column's position among the
    columns of its branch, for a Pipeline with a ColumnTransformer step (as nbops.ml.models makes)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    steps: dict[str, list[tuple[Any, int]]] = {}
    for _, step in getattr(model, "steps", []):
        if not isinstance(step, ColumnTransformer):
            continue
        for _, branch, columns in getattr(step, "transformers_", []):
            if isinstance(branch, str):  # "drop" / "passthrough"
                continue
            parts = [s for _, s in branch.steps] if isinstance(branch, Pipeline) else [branch]
            for pos, column in enumerate([columns] if isinstance(columns, str) else list(columns)):
                steps.setdefault(str(column), []).extend((part, pos) for part in parts)
    return steps


def read_tolerance(model, schema: dict[str, Any]) -> ModelTolerance:
    """Which columns the pipeline imputes (with what: a most-frequent imputer's fill is the
    column's most frequent training value), and where an unseen category is ignored."""
    tolerance = ModelTolerance()
    for column, steps in _column_steps(model).items():
        for step, pos in steps:
            kind = type(step).__name__
            if type(step).__module__.startswith("sklearn.impute"):
                tolerance.imputed.add(column)
                stats = getattr(step, "statistics_", None)
                if stats is not None and pos < len(stats):
                    tolerance.fills[column] = stats[pos]
                if getattr(step, "strategy", "") == "most_frequent" and column in tolerance.fills:
                    tolerance.modes[column] = tolerance.fills[column]
            elif kind in _UNKNOWN_OK and column in schema["categorical"]:
                if getattr(step, "handle_unknown", "error") in _UNKNOWN_OK[kind]:
                    tolerance.unknown_ok.add(column)
    return tolerance


def _shown(value: Any) -> str:
    """A fill value as a message shows it: 198, 'Male'."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{float(value):g}"
    return repr(str(value))


def read_batch(content: bytes, name: str, schema: dict[str, Any]) -> tuple[pd.DataFrame, list[RowProblem]]:
    """Read an uploaded CSV as text: (the rows, index = spreadsheet row with the header as row 1;
    one problem per row whose number of fields differs from the header's, those rows left out).

    nbops.ml.data's reader is not reused: it reads a file path and requires the target column."""
    import pandas as pd

    if len(content) > MAX_UPLOAD_BYTES:
        raise BatchError(
            f"{name}: the file is {len(content) / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB"
        )
    if not content.strip():
        raise BatchError(f"{name}: the file is empty")
    if _BINARY.search(content):
        raise BatchError(f"{name}: not a CSV text file (binary content)")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        raise BatchError(
            f"{name}: not a CSV text file (not UTF-8 text: byte 0x{content[exc.start]:02x} on line {line}; "
            "save it as CSV UTF-8)"
        ) from None
    wanted = [*schema["numeric"], *schema["categorical"]]
    most_columns = len(wanted) + MAX_EXTRA_COLUMNS
    records = _read_records(text, name, most_columns)
    header = [h.strip() for h in records[0]] if records else []
    if not any(header):
        raise BatchError(f"{name}: line 1 (the header) is blank")
    counts = Counter(h for h in header if h)
    duplicated = sorted(h for h, n in counts.items() if n > 1)
    if duplicated:
        named = ", ".join(repr(clip(h)) for h in duplicated[:10]) + (", …" if len(duplicated) > 10 else "")
        raise BatchError(f"{name}: the header names {named} more than once")
    try:
        df = pd.read_csv(
            io.StringIO(text),
            header=None,
            names=list(range(max(len(r) for r in records))),  # no row is ever taken as an index
            usecols=list(range(len(header))),
            dtype=str,
            skip_blank_lines=False,
            skipinitialspace=True,
            keep_default_na=True,
            engine="c",
        )
    except pd.errors.ParserError as exc:
        detail = str(exc).split("C error: ")[-1].strip()
        raise BatchError(f"{name}: not a well-formed CSV: {detail}") from None
    if len(df) != len(records):  # both readers must agree on the records, or row numbers lie
        raise BatchError(f"{name}: not a well-formed CSV (quotes that do not pair up?)")
    df.columns = header
    df.index = pd.RangeIndex(1, len(df) + 1, name="row")
    df = df.iloc[1:]
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        listed = ", ".join(repr(c) for c in missing)
        raise BatchError(
            f"{name}: missing column{'s' if len(missing) > 1 else ''} {listed}; "
            f"the header must name {', '.join(wanted)}"
        )
    # A row is cut short if it lacks a named column's field, too long if it has values beyond
    # the header (empty trailing fields, as some exports write them, are no problem).
    named = len(header) - next((i for i, h in enumerate(reversed(header)) if h), 0)
    ragged = []
    for row, record in enumerate(records[1:], start=2):
        if not record or (len(record) == 1 and not record[0].strip()):
            continue  # a blank line
        if len(record) < named:
            ragged.append(RowProblem(row, "", "", f"has {len(record)} fields; the header has {named}"))
        elif any(v.strip() for v in record[len(header) :]):
            ragged.append(RowProblem(row, "", "", f"has {len(record)} fields; the header has {len(header)}"))
    df = df.drop(index=[p.row for p in ragged])[wanted].dropna(how="all")
    if df.empty and not ragged:
        raise BatchError(f"{name}: has a header but no data rows")
    if len(df) + len(ragged) > MAX_BATCH_ROWS:
        raise BatchError(
            f"{name}: {len(df) + len(ragged)} rows, more than the {MAX_BATCH_ROWS} scored at once"
        )
    return df, ragged


def _read_records(text: str, name: str, most_columns: int) -> list[list[str]]:
    """The file's records as the csv module splits them (pandas fills a short row with NaN,
    which would pass for missing values, and takes a long row's first field as the index, so
    fields are counted here). A header or row wider than `most_columns` fields is refused before
    anything else is parsed; a field may be as long as the upload limit allows."""
    import csv

    reader = csv.reader(io.StringIO(text), skipinitialspace=True)
    limit = csv.field_size_limit(max(MAX_UPLOAD_BYTES, csv.field_size_limit()))
    records = []
    try:
        for record in reader:
            if len(record) > most_columns:
                if records:
                    what = f"row {len(records) + 1} has {len(record)} fields"
                else:
                    what = f"the header has {len(record)} columns"
                raise BatchError(
                    f"{name}: {what}; at most {most_columns} are read (the model's "
                    f"{most_columns - MAX_EXTRA_COLUMNS} and {MAX_EXTRA_COLUMNS} others)"
                )
            records.append(record)
    except csv.Error as exc:
        raise BatchError(f"{name}: not a well-formed CSV: {exc}") from None
    finally:
        csv.field_size_limit(limit)
    return records


def _batch_schema(schema: dict[str, Any]):
    """pandera schema of the training data: finite numbers in its range, known categories."""
    import numpy as np
    import pandera.pandas as pa

    finite = pa.Check(lambda s: np.isfinite(s), element_wise=False, name="finite")
    columns = {}
    for col, info in schema["numeric"].items():
        columns[col] = pa.Column(
            "float64", [finite, pa.Check.in_range(float(info["min"]), float(info["max"]))], nullable=False
        )
    for col, values in schema["categorical"].items():
        columns[col] = pa.Column("str", [pa.Check.isin([str(v) for v in values])], nullable=False)
    return pa.DataFrameSchema(columns, strict=False)


def _judge(check: str, column: str, schema: dict[str, Any], tolerance: ModelTolerance) -> tuple[bool, str]:
    """(scored anyway?, what to say) for a cell failing `check` of the training data's schema."""
    if check == "not_nullable":
        if column in tolerance.imputed:
            fill = tolerance.fills.get(column)
            return True, "is missing" + (f"; the model fills in {_shown(fill)}" if fill is not None else "")
        return False, "is missing"
    if check == "finite":
        return False, "is not a finite number"
    if check.startswith("in_range"):
        return True, f"is outside the training range {_range_text(schema['numeric'][column])}"
    if check.startswith("isin"):
        known = ", ".join(str(v) for v in schema["categorical"][column])
        if column in tolerance.unknown_ok:
            return True, f"is not one of {known}; the model scores it as none of them"
        return False, f"is not one of {known}"
    return False, f"fails {check}"


def validate_batch(
    df: pd.DataFrame, schema: dict[str, Any], tolerance: ModelTolerance | None = None
) -> tuple[pd.DataFrame, list[RowProblem], list[RowProblem]]:
    """Type a read batch and check it against the training data's schema. Returns (rows to
    score, problems, warnings): a problem is a cell the model cannot take (a non-number, an
    infinite number; a missing value or an unseen category unless `tolerance` says the pipeline
    takes it), and its row is not scored; a warning is a cell the model takes though its
    training data had nothing like it (missing, out of range, unseen), and its row is scored."""
    import pandas as pd
    import pandera.errors

    tolerance = tolerance or ModelTolerance()
    problems: dict[tuple[int, str], RowProblem] = {}
    warnings: dict[tuple[int, str], RowProblem] = {}
    raw_text = df
    df = df.copy()
    for col in schema["numeric"]:
        raw = df[col].str.strip()
        numbers = pd.to_numeric(raw, errors="coerce")
        for row, value in raw[numbers.isna() & raw.notna() & (raw != "")].items():
            problems[(int(row), col)] = RowProblem(int(row), col, value, "is not a number")
        df[col] = numbers.astype("float64")
    for col, values in schema["categorical"].items():
        lookup = {str(v).lower(): str(v) for v in values}
        text = df[col].str.strip()
        df[col] = text.str.lower().map(lookup).where(text.str.lower().isin(list(lookup)), text)
        df[col] = df[col].where(df[col].notna() & (df[col] != ""), None)
    try:
        _batch_schema(schema).validate(df, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        for case in exc.failure_cases.itertuples(index=False):
            if case.index is None or case.index != case.index:  # a column-level failure
                continue
            key = (int(case.index), str(case.column))
            if key in problems or key in warnings:
                continue
            value = raw_text.at[key[0], key[1]]
            value = "" if value != value else str(value).strip()  # NaN: the cell was empty
            scored, text = _judge(str(case.check), key[1], schema, tolerance)
            (warnings if scored else problems)[key] = RowProblem(key[0], key[1], value, text)
    order = list(df.columns)
    bad_rows = {row for row, _ in problems}
    good = df.loc[[i for i in df.index if i not in bad_rows]]
    kept = [w for (row, _), w in warnings.items() if row not in bad_rows]
    return (
        good,
        sorted(problems.values(), key=lambda p: (p.row, order.index(p.column))),
        sorted(kept, key=lambda w: (w.row, order.index(w.column))),
    )


def score_batch(champion: Champion, content: bytes, name: str) -> BatchResult:
    """Check an uploaded CSV against the model's schema; score every row the model can take,
    with a `warnings` column naming what in it is unlike the training data."""
    from nbops.ml.models import predict_table

    df, ragged = read_batch(content, name, champion.schema)
    good, problems, warnings = validate_batch(df, champion.schema, champion.tolerance)
    if len(good):
        scored = good.join(predict_table(champion.model, good[champion.features]))
    else:
        scored = good.assign(prediction=[])
    notes: dict[int, list[str]] = {}
    for w in warnings:
        notes.setdefault(w.row, []).append(w.text())
    scored["warnings"] = [("; ".join(notes[row]) if row in notes else "") for row in scored.index]
    problems = sorted([*ragged, *problems], key=lambda p: p.row)  # stable: a row's cells stay in order
    return BatchResult(scored, problems, rows=len(df) + len(ragged), warnings=warnings)


def _value_text(p: RowProblem) -> str:
    if not p.column:  # a whole row (its number of fields)
        return ""
    return _quoted(p.value)


def _cells_table(items: list[RowProblem], css: str, caption: str, what: str) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{p.row}</td><td>{e(clip(p.column))}</td><td>{e(_value_text(p))}</td>"
        f"<td>{e(p.problem)}</td></tr>"
        for p in items[:SHOWN_PROBLEMS]
    )
    more = f"<div>… and {len(items) - SHOWN_PROBLEMS} more</div>" if len(items) > SHOWN_PROBLEMS else ""
    return (
        f'<table class="{css}"><caption>{e(caption)}</caption>'
        f"<thead><tr><th>row</th><th>column</th><th>value</th><th>{e(what)}</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{more}"
    )


def batch_html(result: BatchResult, name: str) -> str:
    """Summary, the problems and the warnings (row, column, value, what), the first scored rows."""
    from pandas.api.types import is_numeric_dtype

    e = html.escape
    parts = [f'<div class="nbops-batch-summary">{e(name)}: {e(result.summary())}</div>']
    if result.problems:
        parts.append(
            _cells_table(
                result.problems, "nbops-problems", "Rows not scored (row 1 is the header)", "problem"
            )
        )
    if result.warnings:
        parts.append(
            _cells_table(
                result.warnings,
                "nbops-warnings",
                "Scored, but unlike the training data: read these predictions with care",
                "warning",
            )
        )
    if len(result.scored):
        shown = result.scored.head(SHOWN_RESULT_ROWS).rename_axis("row").reset_index()
        for col in shown.columns:  # long text cut on the page; the download has it whole
            if not is_numeric_dtype(shown[col]):
                shown[col] = shown[col].map(lambda v: clip(v) if isinstance(v, str) else v)
        shown.columns = [clip(str(c)) for c in shown.columns]
        table = shown.to_html(
            index=False,
            float_format=lambda v: f"{v:.3f}",
            na_rep="",
            classes="nbops-scored",
            border=0,
            escape=True,
        )
        payload = base64.b64encode(result.to_csv().encode()).decode()
        parts.append(
            f'<a class="nbops-download" download="predictions.csv" '
            f'href="data:text/csv;base64,{payload}">Download all {len(result.scored)} predictions (CSV)</a>'
        )
        if len(result.scored) > SHOWN_RESULT_ROWS:
            parts.append(f"<div>first {SHOWN_RESULT_ROWS} rows shown</div>")
        parts.append(f'<div class="nbops-scroll">{table}</div>')
    return "".join(parts)


# ---------------------------------------------------------------- the page

STYLE = """<style>
.nbops-app { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
  margin: 0 auto; }
.nbops-header h1 { font-size: 1.9em; margin: 0.2em 0; }
.nbops-header p { color: #475569; margin: 0 0 0.8em 0; font-size: 1.05em; }
.nbops-panel { border: 1px solid #e2e8f0; border-radius: 10px; padding: 14px 18px; margin: 0 12px 12px 0;
  background: #fff; }
.nbops-panel h3, .nbops-card h3 { margin: 0 0 8px 0; font-size: 1.1em; color: #0f172a; }
.nbops-group { color: #64748b; font-size: 0.85em; text-transform: uppercase; letter-spacing: .05em;
  margin: 8px 0 2px 0; }
.nbops-label { font-size: 2.6em; font-weight: 700; color: #1d4ed8; line-height: 1.1; }
.nbops-result-caption { color: #64748b; font-size: 0.9em; }
.nbops-confidence { color: #475569; margin-bottom: 10px; }
.nbops-bar-row { display: flex; align-items: center; gap: 8px; margin: 3px 0; }
.nbops-bar-name { width: 7em; text-align: right; color: #334155; }
.nbops-bar { flex: 1; background: #f1f5f9; height: 14px; border-radius: 7px; overflow: hidden;
  min-width: 160px; }
.nbops-bar-fill { display: block; height: 100%; background: #94a3b8; }
.nbops-bar-top { background: #2563eb; }
.nbops-bar-value { width: 3.5em; color: #334155; }
.nbops-facts th { text-align: left; color: #64748b; font-weight: normal; padding-right: 12px; }
.nbops-metrics { display: flex; gap: 18px; margin: 10px 0 4px 0; }
.nbops-metric-value { font-size: 1.4em; font-weight: 600; }
.nbops-metric-name, .nbops-metrics-note { color: #64748b; font-size: 0.85em; }
.nbops-confusion { border-collapse: collapse; margin-top: 8px; }
.nbops-confusion td, .nbops-confusion th { padding: 3px 8px; text-align: center; border: 1px solid #e2e8f0; }
.nbops-confusion caption { color: #64748b; font-size: 0.85em; text-align: left; }
.nbops-problems, .nbops-warnings, .nbops-scored { border-collapse: collapse; margin: 8px 0;
  font-size: 0.9em; }
.nbops-scroll { overflow-x: auto; max-width: 100%; }
.nbops-scored td:last-child { min-width: 24em; }
.nbops-problems td, .nbops-problems th, .nbops-warnings td, .nbops-warnings th, .nbops-scored td,
.nbops-scored th { padding: 3px 8px; border: 1px solid #e2e8f0; }
.nbops-problems caption { text-align: left; color: #b91c1c; font-weight: 600; }
.nbops-message { padding: 12px 16px; border-radius: 8px; margin: 6px 0; }
.nbops-error { background: #fef2f2; color: #991b1b; border: 1px solid #fecaca; }
.nbops-info { background: #eff6ff; color: #1e3a8a; border: 1px solid #bfdbfe; }
.nbops-warnings caption { text-align: left; color: #92400e; font-weight: 600; }
.nbops-download { display: inline-block; margin: 8px 0; padding: 7px 16px; border-radius: 6px;
  background: #2563eb; color: #fff !important; font-weight: 600; text-decoration: none; }
.nbops-download:hover, .nbops-download:focus { background: #1d4ed8; }
.nbops-hint { color: #94a3b8; font-size: 0.85em; margin: 0 0 15px 6px; }
/* each input's label above it, at its full width */
.nbops-input.widget-inline-hbox { flex-direction: column; align-items: stretch; height: auto;
  margin-bottom: 8px; }
.nbops-input .widget-label { width: auto; max-width: none; height: auto; text-align: left;
  overflow: visible; white-space: normal; overflow-wrap: anywhere; line-height: 1.4; margin: 0 0 2px 0; }
.nbops-input > input, .nbops-input > select { flex: 0 0 auto; height: var(--jp-widgets-inline-height, 28px); }
/* FileUpload's own text, "Upload CSV (0)", hidden; the button says what it does */
.nbops-upload.widget-upload { font-size: 0; }
.nbops-upload.widget-upload::after { content: "Upload CSV"; font-size: var(--jp-widgets-font-size, 13px); }
.nbops-upload.nbops-upload-again::after { content: "Upload another CSV"; }
.nbops-predict button, button.nbops-predict { font-size: 1.05em; }
</style>"""


def message_html(text: str, kind: str = "error", title: str = "") -> str:
    head = f"<strong>{html.escape(title)}</strong><br>" if title else ""
    lines = "<br>".join(html.escape(line) for line in text.splitlines())
    return f'<div class="nbops-message nbops-{kind}">{head}{lines}</div>'


def _log_to_server(exc: BaseException) -> None:
    """Tracebacks go to the server's log (the kernel's real stderr), never to the page."""
    print("nbops.serve.dashboard:", "".join(traceback.format_exception(exc)), file=sys.__stderr__, flush=True)


def _header(ipywidgets, subtitle: str, title: str = TITLE):
    return ipywidgets.HTML(
        STYLE + f'<div class="nbops-header"><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></div>'
    )


class Dashboard:
    """The page for one loaded champion: inputs, Predict, result, model card, batch upload."""

    def __init__(self, champion: Champion):
        import ipywidgets as w

        self.champion = champion
        self.inputs = build_inputs(champion.schema, champion.tolerance.modes)
        # the icon's font is fontawesome's, bundled with Voila and served by it (voila-style.js)
        self.predict_button = w.Button(description="Predict", button_style="primary", icon="play")
        self.predict_button.add_class("nbops-predict")
        self.predict_button.on_click(self._on_predict)
        self.result = w.HTML(message_html("Describe a case and press Predict.", "info"))
        self.result.add_class("nbops-result-box")
        # Its label is drawn by STYLE: FileUpload writes "<description> (<files held>)", and it holds
        # none again once a file is read (see _on_upload), so it would always say "(0)".
        self.upload = w.FileUpload(
            accept=".csv,text/csv",
            multiple=False,
            description="Upload CSV",
            icon="",
            tooltip="Choose a CSV file",
        )
        self.upload.add_class("nbops-upload")
        self.upload.observe(self._on_upload, names="value")
        self.batch = w.HTML("")
        self.batch.add_class("nbops-batch")
        self.last_batch: BatchResult | None = None
        self.updates = {"result": 0, "batch": 0}
        self.widget = self._layout(w)

    def _repr_mimebundle_(self, **kwargs):
        """Shown as the widget; the plain-text part names the model, so the served page's HTML
        says which version answers (what `make deploy` polls for) without running JavaScript."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        card = self.champion.card
        data["text/plain"] = f"{card.get('name', '?')} v{card.get('version', '?')} dashboard"
        return bundle

    def _layout(self, w):
        schema = self.champion.schema
        target = schema.get("target", "label")
        numeric = [
            w.HBox(
                [self.inputs[c], w.HTML(f'<span class="nbops-hint">{_range_text(info)}</span>')],
                layout=w.Layout(align_items="flex-end"),  # the hint beside the box, below the label
            )
            for c, info in schema["numeric"].items()
        ]
        categorical = [self.inputs[c] for c in schema["categorical"]]
        groups = []
        if numeric:
            groups += [w.HTML('<div class="nbops-group">Measurements</div>'), *numeric]
        if categorical:
            groups += [w.HTML('<div class="nbops-group">Categories</div>'), *categorical]
        inputs = w.VBox([w.HTML("<h3>Describe the case</h3>"), *groups, self.predict_button])
        inputs.add_class("nbops-panel")
        result = w.VBox([w.HTML(f"<h3>Predicted {html.escape(str(target))}</h3>"), self.result])
        result.add_class("nbops-panel")
        result.layout.flex = "1"
        card = w.HTML(model_card_html(self.champion.card))
        card.add_class("nbops-panel")
        columns = ", ".join([*schema["numeric"], *schema["categorical"]])
        batch = w.VBox(
            [
                w.HTML(
                    "<h3>Score a CSV file</h3><div>One row per case with the columns "
                    f"<code>{html.escape(columns)}</code>; other columns are ignored. Every row the "
                    "model can take is scored, with a warning where a value is missing or unlike the "
                    "training data; the rows it cannot take are listed. Files up to "
                    f"{MAX_UPLOAD_BYTES // 2**20} MB.</div>"
                ),
                self.upload,
                self.batch,
            ]
        )
        batch.add_class("nbops-panel")
        batch.add_class("nbops-batch-panel")
        subtitle = (
            f"Enter a case to get the {target} predicted by the champion model "
            f"{self.champion.card.get('name', '')} v{self.champion.card.get('version', '?')}, "
            "with how sure it is."
        )
        title = f"Predict the {target}"
        app = w.VBox([_header(w, subtitle, title), w.HBox([inputs, result]), card, batch])
        app.add_class("nbops-app")
        return app

    def _show(self, where: str, content: str) -> None:
        """Replace a panel's content; `data-update` counts replacements so a reader can wait for a new one."""
        self.updates[where] += 1
        widget = self.result if where == "result" else self.batch
        widget.value = f'<div class="nbops-update" data-update="{self.updates[where]}">{content}</div>'

    def predict(self) -> Prediction:
        pred = predict_one(self.champion, read_inputs(self.inputs))
        self._show("result", prediction_html(pred))
        return pred

    def _on_predict(self, _button=None) -> None:
        try:
            self.predict()
        except Exception as exc:  # noqa: BLE001 - UI boundary: the page shows a message, the log the traceback
            _log_to_server(exc)
            self._show("result", message_html(f"The model could not score this case ({type(exc).__name__})."))

    def score_upload(self, content: bytes, name: str) -> BatchResult | None:
        try:
            result = score_batch(self.champion, content, name)
        except NbopsError as exc:
            self.last_batch = None
            self._show("batch", message_html(str(exc), title="This file cannot be scored"))
            return None
        self.last_batch = result
        self._show("batch", batch_html(result, name))
        return result

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0]
        try:
            self.score_upload(bytes(item["content"]), str(item.get("name", "upload.csv")))
        except Exception as exc:  # noqa: BLE001 - UI boundary, as above
            _log_to_server(exc)
            self._show(
                "batch",
                message_html(
                    f"The file could not be scored ({type(exc).__name__}).",
                    title="This file cannot be scored",
                ),
            )
        finally:
            # Clear the selection so the same file can be uploaded again after a fix.
            self.upload.unobserve(self._on_upload, names="value")
            self.upload.value = ()
            self.upload.observe(self._on_upload, names="value")
            self.upload.add_class("nbops-upload-again")


def status_page(text: str, title: str, kind: str = "info"):
    """A page without a model: what happened and what to do."""
    import ipywidgets as w

    page = w.VBox(
        [_header(w, "Predictions from the champion model."), w.HTML(message_html(text, kind, title))]
    )
    page.add_class("nbops-app")
    page.add_class("nbops-status")
    return page


def build_app(env: dict[str, str] | None = None, cwd: Path | None = None):
    """The dashboard widget, or a friendly page saying why there is none. Never raises."""
    try:
        source = resolve_model_source(env, cwd)
        champion = load_champion(source)
        check_schema(champion.schema, source.label)
    except NoChampionError as exc:
        return status_page(str(exc), "No model to show yet")
    except NbopsError as exc:
        return status_page(
            f"{exc}\nThe dashboard cannot load the champion; ask whoever runs it to check the model.",
            "The model could not be loaded",
            "error",
        )
    except Exception as exc:  # noqa: BLE001 - last line: a page, never a traceback
        _log_to_server(exc)
        return status_page(
            f"Loading the champion failed ({type(exc).__name__}). The details are in the server log.",
            "The model could not be loaded",
            "error",
        )
    return Dashboard(champion)
