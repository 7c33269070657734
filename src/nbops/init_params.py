"""`nbops init CSV --target COLUMN`: a commented params file for a table, that validates and runs.

Reads the CSV (delimiter sniffed), sorts its columns into numeric and categorical features and
the ones left out (an identifier, free text, a single value, the target in disguise), each with
a comment saying why; infers the task from the target; sets the gate's floors a margin above
what a majority-class predictor scores in cross-validation (for a numeric target, ceilings a
margin below a mean predictor's RMSE and MAE); and names the registry model after the file.
Runs in the CLI process: pandas and scikit-learn are imported when it runs.
"""

from __future__ import annotations

import csv
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nbops.exceptions import NbopsError

if TYPE_CHECKING:
    import pandas as pd

SNIFF_BYTES = 64 * 1024
INFER_ROWS = 200_000  # rows read to infer the columns (the run itself reads the whole file)
MAX_CLASSES = 30  # an integer target with at most this many values is a class label
FLOOR_MARGIN = 0.10  # floors sit this far above the majority-class baseline
FREE_TEXT_MEAN_CHARS = 30
CATEGORICAL_MAX_VALUES = 50
SEED = 42
REGRESSION_OTHER_MODELS = (
    "linear_regression {}, ridge {alpha}, decision_tree {max_depth, min_samples_leaf},",
    "random_forest {n_estimators, max_depth}; this one's: {learning_rate, max_iter, max_leaf_nodes}",
)
OTHER_MODELS = (
    "decision_tree {max_depth, min_samples_leaf}, random_forest {n_estimators, max_depth},",
    "logistic_regression {C, max_iter}; this one's: {learning_rate, max_iter, max_leaf_nodes}",
)


class InitError(NbopsError):
    """A table or target `nbops init` cannot write a params file for."""


@dataclass
class Column:
    name: str
    role: str  # numeric, categorical or left out
    why: str = ""


@dataclass
class Draft:
    csv: Path
    target: str
    delimiter: str
    rows: int
    classes: list[str]
    columns: list[Column] = field(default_factory=list)
    baseline: dict[str, float] = field(default_factory=dict)
    task: str = "classification"

    @property
    def numeric(self) -> list[str]:
        return [c.name for c in self.columns if c.role == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [c.name for c in self.columns if c.role == "categorical"]

    @property
    def left_out(self) -> list[Column]:
        return [c for c in self.columns if c.role == "left out"]


def _plain(value):
    """A numpy scalar as the Python value a message quotes (1, not np.int64(1))."""
    return value.item() if hasattr(value, "item") else value


def sniff_delimiter(path: Path) -> str:
    sample = path.read_bytes()[:SNIFF_BYTES].decode("utf-8", errors="replace")
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def read_sample(path: Path, delimiter: str) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise InitError(f"{path}: no such file")
    try:
        return pd.read_csv(path, sep=delimiter, nrows=INFER_ROWS, skipinitialspace=True)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InitError(f"{path}: not a readable CSV with delimiter {delimiter!r}: {first}") from None


def check_target(table: pd.DataFrame, path: Path, target: str) -> None:
    if target not in table.columns:
        close = difflib.get_close_matches(target, [str(c) for c in table.columns], n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise InitError(f"{path}: no column {target!r}{hint} (columns: {', '.join(map(str, table.columns))})")
    missing = table.index[table[target].isna()]
    if len(missing):
        lines = ", ".join(str(i + 2) for i in missing[:5])  # line 1 is the header
        raise InitError(
            f"{path}: column {target!r} has {len(missing)} missing value(s) (lines {lines}"
            f"{', …' if len(missing) > 5 else ''}): the target must be set on every row"
        )
    values = table[target].nunique()
    if values < 2:
        only = _plain(table[target].iloc[0]) if len(table) else None
        raise InitError(f"{path}: column {target!r} has one value only ({only!r}): nothing to predict")


def infer_task(target: pd.Series) -> str:
    """Strings, booleans and integers with few values are class labels; other numbers regression."""
    from pandas.api import types

    if types.is_bool_dtype(target) or not types.is_numeric_dtype(target):
        return "classification"
    if types.is_integer_dtype(target) or (target.dropna() % 1 == 0).all():
        if target.nunique() <= MAX_CLASSES:
            return "classification"
    return "regression"


def classify_column(table: pd.DataFrame, name: str, target: str) -> Column:
    from pandas.api import types

    col = table[name]
    present = col.dropna()
    rows = len(table)
    if present.empty:
        return Column(name, "left out", "every value is missing")
    distinct = present.nunique()
    if distinct == 1:
        return Column(name, "left out", f"one value only ({_plain(present.iloc[0])!r})")
    pairs = table[[name, target]].dropna()
    if (
        len(pairs) == rows
        and pairs.groupby(name)[target].nunique().max() == 1
        and pairs.groupby(target)[name].nunique().max() == 1
    ):
        return Column(name, "left out", f"maps one-to-one onto {target!r}: the target in disguise")
    is_text = types.is_object_dtype(col) or types.is_string_dtype(col)
    if is_text and present.astype(str).str.len().mean() > FREE_TEXT_MEAN_CHARS:
        return Column(name, "left out", "free text: not a category a model can learn from")
    if distinct == rows and (is_text or types.is_integer_dtype(col)):
        return Column(name, "left out", "every value is different: an identifier")
    if types.is_bool_dtype(col):
        return Column(name, "categorical")
    if types.is_numeric_dtype(col):
        return Column(name, "numeric")
    if distinct > CATEGORICAL_MAX_VALUES:
        return Column(name, "left out", f"{distinct} distinct values: too many for a category")
    return Column(name, "categorical")


def baseline_scores(target: pd.Series, folds: int = 5) -> dict[str, float]:
    """Cross-validated macro-F1 and accuracy of always predicting the most frequent class."""
    import numpy as np
    from sklearn.dummy import DummyClassifier
    from sklearn.model_selection import StratifiedKFold, cross_validate

    y = target.astype(str)
    folds = max(2, min(folds, int(y.value_counts().min()))) if y.value_counts().min() >= 2 else 2
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    X = np.zeros((len(y), 1))
    scores = cross_validate(
        DummyClassifier(strategy="most_frequent"), X, y, cv=cv, scoring=["f1_macro", "accuracy"]
    )
    return {
        "macro_f1": float(scores["test_f1_macro"].mean()),
        "accuracy": float(scores["test_accuracy"].mean()),
    }


def regression_baseline(target: pd.Series, folds: int = 5) -> dict[str, float]:
    """Cross-validated RMSE, MAE and R² of always predicting the training part's mean."""
    from sklearn.dummy import DummyRegressor
    from sklearn.model_selection import KFold, cross_validate

    y = target.astype(float)
    cv = KFold(n_splits=max(2, min(folds, len(y))), shuffle=True, random_state=SEED)
    scoring = ["neg_root_mean_squared_error", "neg_mean_absolute_error", "r2"]
    scores = cross_validate(DummyRegressor(strategy="mean"), y.to_frame(), y, cv=cv, scoring=scoring)
    return {
        "rmse": float(-scores["test_neg_root_mean_squared_error"].mean()),
        "mae": float(-scores["test_neg_mean_absolute_error"].mean()),
        "r2": float(scores["test_r2"].mean()),
    }


def draft_params(path: Path, target: str, delimiter: str | None = None) -> Draft:
    delimiter = delimiter or sniff_delimiter(path)
    table = read_sample(path, delimiter)
    check_target(table, path, target)
    task = infer_task(table[target])
    labels = sorted(table[target].astype(str).unique()) if task == "classification" else []
    draft = Draft(path, target, delimiter, len(table), labels, task=task)
    draft.columns = [classify_column(table, str(c), target) for c in table.columns if c != target]
    if not draft.numeric and not draft.categorical:
        raise InitError(f"{path}: no column is left to learn from (each is an identifier, text or constant)")
    if task == "regression":
        draft.baseline = regression_baseline(table[target])
    else:
        draft.baseline = baseline_scores(table[target])
    return draft


def registry_name(path: Path, task: str = "classification") -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-") or "table"
    return f"{stem}-{'regressor' if task == 'regression' else 'classifier'}"


def _floor(baseline: float) -> float:
    return round(min(0.95, baseline + FLOOR_MARGIN), 2)


def _flow(values: list[str]) -> str:
    import yaml

    return yaml.safe_dump(values, default_flow_style=True, width=10_000, allow_unicode=True).strip()


def _ceiling(baseline: float) -> float:
    """An error's ceiling FLOOR_MARGIN below the mean predictor's, to three significant digits."""
    value = baseline * (1 - FLOOR_MARGIN)
    return float(f"{value:.3g}") if value > 0 else 0.0


def _model_and_gate_lines(draft: Draft) -> list[str]:
    """model: and gate: of the params file, by task."""
    if draft.task == "regression":
        rmse, mae, r2 = (draft.baseline[k] for k in ("rmse", "mae", "r2"))
        others, gate = (
            REGRESSION_OTHER_MODELS,
            [
                "gate:",
                "  metric: rmse   # or mae, r2; lower is better for rmse and mae",
                f"  # a mean predictor scores RMSE {rmse:.4g}, MAE {mae:.4g}, R² {r2:.3f} in 5-fold CV;",
                f"  # an error's floor is a ceiling: a model must err {FLOOR_MARGIN:.0%} less than it",
                "  floors:",
                f"    rmse: {_ceiling(rmse):g}",
                f"    mae: {_ceiling(mae):g}",
                "  tolerance: 0.0   # how far behind the champion's rmse and mae, in the target's units",
            ],
        )
    else:
        mf1, acc = draft.baseline["macro_f1"], draft.baseline["accuracy"]
        binary = ", roc_auc" if len(draft.classes) == 2 else ""
        others, gate = (
            OTHER_MODELS,
            [
                "gate:",
                f"  metric: macro_f1   # or accuracy, weighted_f1{binary}",
                f"  # a majority-class predictor scores macro-F1 {mf1:.3f}, accuracy {acc:.3f} in 5-fold CV;",
                f"  # the floors sit {FLOOR_MARGIN} above: a model must beat guessing the commonest label",
                "  floors:",
                f"    macro_f1: {_floor(mf1)}",
                f"    accuracy: {_floor(acc)}",
                "  tolerance: 0.01   # how far a challenger may fall behind the champion on a floored metric",
            ],
        )
    return [
        "model:",
        "  name: hist_gradient_boosting   # strong on tabular data, handles what the others need tuning for",
        f"  # or: {others[0]}",
        f"  #     {others[1]}",
        "  params:",
        f"    random_state: {SEED}",
        "  cv_folds: 5",
        *gate,
    ]


def render_params(draft: Draft, csv_in_project: str) -> str:
    """The params file's text, with a comment on every choice."""
    name = registry_name(draft.csv, draft.task)
    lines = [
        "# yaml-language-server: $schema=./params.schema.json",
        f"# Written by `nbops init {csv_in_project} --target {draft.target}` from {draft.rows} rows.",
        "# Every key: docs/params.md. Check the columns below, then `make pipeline PARAMS=<this file>`.",
        *(["task: regression   # the target is a number"] if draft.task == "regression" else []),
        "data:",
        f"  path: {csv_in_project}",
        f"  target: {_flow([draft.target])[1:-1]}",
    ]
    if draft.delimiter != ",":
        lines.append(f"  delimiter: {_flow([draft.delimiter])[1:-1]}")
    lines.append(f"  numeric: {_flow(draft.numeric)}")
    lines.append(f"  categorical: {_flow(draft.categorical)}")
    if draft.task == "classification" and len(draft.classes) <= MAX_CLASSES:
        lines.append(f"  classes: {_flow(draft.classes)}   # a row with another label is refused")
    for col in draft.left_out:
        lines.append(f"  # left out: {col.name!r}: {col.why}")
    lines += [
        "split:",
        "  test_size: 0.2",
        f"  seed: {SEED}",
        *_model_and_gate_lines(draft),
        "registry:",
        f"  model_name: {name}   # its own registry model: never compared with another table's",
        f"  experiment: {name}",
        "promote: true",
    ]
    return "\n".join(lines) + "\n"


def write_params_file(
    csv_path: Path,
    target: str,
    *,
    root: Path,
    out: Path | None = None,
    delimiter: str | None = None,
    force=False,
) -> Path:
    """Draft, render, check with the params schema, and write `out` (params/<csv stem>.yaml)."""
    from nbops.params import load_params

    csv_path = csv_path if csv_path.is_absolute() else root / csv_path
    out = out or Path("params") / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', csv_path.stem)}.yaml"
    out = out if out.is_absolute() else root / out
    if out.exists() and not force:
        raise InitError(f"{out}: exists; --force to overwrite it")
    draft = draft_params(csv_path, target, delimiter)
    try:
        shown = str(csv_path.resolve().relative_to(root.resolve()))
    except ValueError:
        shown = str(csv_path.resolve())
    text = render_params(draft, shown)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        load_params(tmp)  # what it writes validates as it is
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return out
