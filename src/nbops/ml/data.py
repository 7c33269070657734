"""Raw CSV -> validated table -> schema -> holdout split.

Validation is pandera (lazy): every problem becomes one line naming the file, the column, the
check, the offending values and the file lines they are on (line 1 is the header). Row ids used
everywhere downstream are those file line numbers, so a reviewer can find a row in the CSV.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbops.exceptions import DataError, ParamsError
from nbops.ml.csv_reader import _SHOWN_LINES, _lines_of, check_size, read_table, read_text_head
from nbops.ml.metrics import CLASSIFICATION, REGRESSION

# Heavy libraries imported inside the functions below; warm kernels load them early (nbops.runner.preload).
PRELOAD = ("pandas", "sklearn.model_selection")

if TYPE_CHECKING:
    import pandas as pd

    from nbops.params import DataParams, Params
_SHOWN_VALUES = 5


# ---------------------------------------------------------------- locating and reading


def resolve_data_path(params: Params, root: Path, source: str = "params") -> Path:
    """The CSV to use: `data.path` if present, else the synthetic table (generated once)."""
    data = params.data
    path = root / data.path
    if path.is_file():
        check_size(path, data.max_mb, f"{source}: key 'data.path': {data.path} is")
        read_text_head(path, data.path)  # a binary file is refused before it is hashed
        return path
    if path.exists():
        raise ParamsError(f"{source}: key 'data.path': {data.path} is not a file")
    if data.synthetic is None:
        raise ParamsError(f"{source}: key 'data.path': data file not found: {data.path}")
    from nbops.ml.synthetic import write_synthetic_table

    syn = data.synthetic
    return write_synthetic_table(root / syn.path, syn.rows, syn.seed, syn.label_noise)


def is_synthetic(params: Params, root: Path) -> bool:
    return not (root / params.data.path).is_file() and params.data.synthetic is not None


def file_hash(path: Path) -> str:
    """sha256 of a regular file's bytes (streamed, so a 1e6-row CSV costs ~0.1 s). Anything else
    (a FIFO, /dev/zero: read forever) raises OSError; opening does not wait for a FIFO's writer."""
    import os
    import stat

    digest = hashlib.sha256()
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(f"{path}: not a regular file")
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- validating


def _canonical(series: pd.Series, allowed: list[str] | None) -> pd.Series:
    """Strip and match labels case-insensitively: 'DrugY' -> 'drugY'. Done on the distinct
    values and mapped back by code, so a column of 1e6 rows costs an integer per row, not a
    string per row per step. Returns a `str` column (missing values stay missing)."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(series)  # a missing value has code -1
    spelled = pd.Series(np.asarray(uniques, dtype=object), dtype="str").str.strip()
    if allowed:
        lookup = {a.lower(): a for a in allowed}
    else:  # unify case variants on the most frequent spelling
        rows = np.bincount(codes[codes >= 0], minlength=len(spelled))
        counts = pd.Series(rows, index=spelled.to_numpy()).groupby(level=0, sort=False).sum()
        lookup = {}
        for spelling in counts.sort_values(ascending=False, kind="stable").index:
            lookup.setdefault(spelling.lower(), spelling)
    lowered = spelled.str.lower()
    canon = lowered.map(lookup).where(lowered.isin(list(lookup)), spelled)
    values = np.append(canon.to_numpy(dtype=object), np.nan)  # code -1 -> the last: missing
    return pd.Series(values[codes], index=series.index, name=series.name, dtype="str")


def build_pandera_schema(data: DataParams, classes=None, categories=None, ranges=None, task=CLASSIFICATION):
    """pandera schema from params plus, when given, what a training table showed; a regression
    target is a finite number on every row."""
    import numpy as np
    import pandas as pd
    import pandera.pandas as pa

    categories = {**(categories or {}), **data.categories}
    ranges = {**(ranges or {}), **{k: tuple(v) for k, v in data.ranges.items()}}
    classes = data.classes or classes

    # Checks see the raw column when coercion failed for some values: coerce again, quietly,
    # so a value that is not a number is reported once (by the coercion), not three times.
    def as_number(s):
        return pd.to_numeric(s, errors="coerce")

    finite = pa.Check(lambda s: as_number(s).isna() | np.isfinite(as_number(s)), name="is not finite")
    columns = {}
    for col in data.numeric:
        checks = [finite]
        if col in ranges:
            low, high = ranges[col]
            checks.append(
                pa.Check(
                    lambda s, lo=low, hi=high: (
                        ~np.isfinite(as_number(s).fillna(0))
                        | as_number(s).isna()
                        | as_number(s).between(lo, hi)
                    ),
                    name=f"is outside the range [{low:g}, {high:g}]",
                )
            )
        columns[col] = pa.Column("float64", checks, nullable=True, coerce=True)
    for col in data.categorical:
        checks = [pa.Check.isin(categories[col])] if col in categories else []
        columns[col] = pa.Column("str", checks, nullable=True, coerce=True)
    if task == REGRESSION:
        columns[data.target] = pa.Column("float64", [finite], nullable=False, coerce=True)
    else:
        target_checks = [pa.Check.isin(classes)] if classes else []
        columns[data.target] = pa.Column("str", target_checks, nullable=False, coerce=True)
    return pa.DataFrameSchema(columns, strict=False, ordered=False)


def _lines(index_values) -> str:
    lines = sorted({int(i) for i in index_values if i == i})  # drop NaN
    return _lines_of(lines[:_SHOWN_LINES], len(lines))


def _values(values) -> str:
    uniq = []
    for v in values:
        text = repr(v) if not isinstance(v, str) else repr(v[:40] + ("…" if len(v) > 40 else ""))
        if text not in uniq:
            uniq.append(text)
    more = f" (+{len(uniq) - _SHOWN_VALUES} more)" if len(uniq) > _SHOWN_VALUES else ""
    return ", ".join(uniq[:_SHOWN_VALUES]) + more


def _check_text(check: str) -> str:
    if check.startswith("is "):
        return check
    if check.startswith("coerce_dtype"):
        return "is not a number" if "float" in check else f"cannot be read ({check})"
    return f"fails {check}"


def describe_schema_errors(exc, path) -> list[str]:
    """One line per (column, check) from a pandera SchemaErrors."""
    cases = exc.failure_cases
    coerce_failed = set(cases.loc[cases["check"].astype(str).str.startswith("coerce_dtype"), "column"])
    cases = cases[
        ~(cases["column"].isin(coerce_failed) & cases["check"].astype(str).str.startswith("dtype("))
    ]
    problems = []
    for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
        if check == "not_nullable":
            problems.append(f"{path}: column {column!r} has missing values at {_lines(group['index'])}")
            continue
        problems.append(
            f"{path}: column {column!r} {_check_text(str(check))}: "
            f"{_values(group['failure_case'])} at {_lines(group['index'])}"
        )
    return problems


def _empty_columns_problems(df: pd.DataFrame, data: DataParams, path) -> list[str]:
    """A feature column with no value in any row trains nothing; the imputer would drop it and
    silently change the model's inputs."""
    problems = []
    for key, cols in (("data.numeric", data.numeric), ("data.categorical", data.categorical)):
        for col in cols:
            if df[col].isna().all():
                problems.append(
                    f"{path}: column {col!r} is empty in every row ({len(df)} rows); "
                    f"fill it or remove it from {key}"
                )
    return problems


def _stale_classes_problem(df: pd.DataFrame, data: DataParams, path) -> str | None:
    """`data.classes` that match none of the table's labels are left over from another table."""
    labels = df[data.target].dropna()
    if not data.classes or labels.empty or labels.isin(data.classes).any():
        return None
    return (
        f"{path}: column {data.target!r}: no row has a label from data.classes {data.classes} "
        f"(found {_values(labels.unique().tolist())}); delete data.classes or list this table's labels"
    )


def validate_table(
    df: pd.DataFrame, data: DataParams, path: Path | str, schema=None, task: str = CLASSIFICATION
) -> pd.DataFrame:
    """Normalise labels and validate; raise DataError listing every problem found."""
    import pandera.errors

    df = df.copy(deep=False)  # columns are replaced, never written into: the caller's stays as it was
    for col in data.categorical:
        df[col] = _canonical(df[col], data.categories.get(col))
    problems = _empty_columns_problems(df, data, path)
    if task == CLASSIFICATION:
        df[data.target] = _canonical(df[data.target], data.classes)
        stale = _stale_classes_problem(df, data, path)
        if stale:  # one line for it, not pandera's isin failure on every row as well
            problems.append(stale)
            data = data.model_copy(update={"classes": None})
    schema = schema or build_pandera_schema(data, task=task)
    try:
        df = schema.validate(df, lazy=True, inplace=True)  # coerces df, our own copy
    except pandera.errors.SchemaErrors as exc:
        problems += describe_schema_errors(exc, path)
    if problems:
        raise DataError(problems)
    return df


def check_single_class(df: pd.DataFrame, data: DataParams, path) -> None:
    """A one-class target trains a constant model that scores a perfect macro-F1 and would
    pass the gate: refuse it."""
    labels = df[data.target].dropna().unique()
    if len(labels) == 1:
        raise DataError(
            f"{path}: column {data.target!r} has the single value {labels[0]!r} in every row "
            f"({len(df)} rows); a classifier needs at least two classes"
        )


def check_splittable(
    df: pd.DataFrame, data: DataParams, test_size: float, path, task: str = CLASSIFICATION
) -> None:
    """Two classes at least; a stratified split needs two rows of every class and room for each
    class in the holdout. A regression target must vary and leave two rows on each side."""
    if task == REGRESSION:
        return _check_regression_splittable(df, data, test_size, path)
    check_single_class(df, data, path)
    counts = df[data.target].value_counts()
    few = counts[counts < 2]
    if len(few):
        listed = ", ".join(f"{k!r} ({v} row)" for k, v in few.items())
        raise DataError(f"{path}: column {data.target!r}: classes with fewer than 2 rows: {listed}")
    n_test = int(round(len(df) * test_size))
    if n_test < len(counts) or len(df) - n_test < len(counts):
        raise DataError(
            f"{path}: {len(df)} rows cannot hold {len(counts)} classes in both parts "
            f"of a split with split.test_size={test_size}"
        )


def _check_regression_splittable(df: pd.DataFrame, data: DataParams, test_size: float, path) -> None:
    values = df[data.target].dropna().unique()
    if len(values) == 1:
        raise DataError(
            f"{path}: column {data.target!r} has the single value {float(values[0]):g} in every row "
            f"({len(df)} rows); a regressor needs a target that varies"
        )
    n_test = int(round(len(df) * test_size))
    if n_test < 2 or len(df) - n_test < 2:
        raise DataError(
            f"{path}: {len(df)} rows leave {n_test} held out and {len(df) - n_test} to train with "
            f"split.test_size={test_size}; each part needs at least 2"
        )


def check_gate_metric(df: pd.DataFrame, params: Params, path) -> None:
    """roc_auc ranks two classes: refused for a target with more (one line, before any step)."""
    if params.task != CLASSIFICATION or params.gate.metric != "roc_auc":
        return
    classes = df[params.data.target].nunique()
    if classes != 2:
        raise DataError(
            f"{path}: key 'gate.metric': roc_auc needs a binary target; column {params.data.target!r} "
            f"has {classes} classes (use macro_f1, accuracy or weighted_f1)"
        )


def load_table(params: Params, root: Path, source: str = "params") -> tuple[pd.DataFrame, Path]:
    """Locate, read and validate the table; returns (validated table, CSV path)."""
    path = resolve_data_path(params, root, source)
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    return check_table(read_table(path, params.data, shown), params, shown), path


def check_table(df: pd.DataFrame, params: Params, shown) -> pd.DataFrame:
    """The read table validated for the params' task, split and gate metric (raises DataError)."""
    df = validate_table(df, params.data, shown, task=params.task)
    check_splittable(df, params.data, params.split.test_size, shown, params.task)
    check_gate_metric(df, params, shown)
    return df


# ---------------------------------------------------------------- schema and split


def infer_schema(
    df: pd.DataFrame, target: str, numeric: list[str], categorical: list[str], task: str = CLASSIFICATION
) -> dict[str, Any]:
    """What the training table shows: ranges, categories, classes (a regression target's range
    instead). Stored with the model and used by the dashboard (widget bounds, dropdowns) and
    the drift check."""
    numeric_info = {}
    for col in numeric:
        s = df[col].dropna()
        numeric_info[col] = {
            "min": float(s.min()) if len(s) else 0.0,
            "max": float(s.max()) if len(s) else 0.0,
            "median": float(s.median()) if len(s) else 0.0,
            "integer": bool(len(s) and (s % 1 == 0).all()),
        }
    if task == REGRESSION:
        y = df[target]
        target_info = {"min": float(y.min()), "max": float(y.max()), "median": float(y.median())}
        return {
            "task": REGRESSION,
            "target": target,
            "classes": [],
            "target_range": target_info,
            "numeric": numeric_info,
            "categorical": {col: sorted(df[col].dropna().unique().tolist()) for col in categorical},
            "rows": int(len(df)),
        }
    return {
        "task": CLASSIFICATION,
        "target": target,
        "classes": sorted(df[target].unique().tolist()),
        "numeric": numeric_info,
        "categorical": {col: sorted(df[col].dropna().unique().tolist()) for col in categorical},
        "rows": int(len(df)),
    }


def split_holdout(df: pd.DataFrame, target: str, test_size: float, seed: int, task: str = CLASSIFICATION):
    """Split of row ids (file lines), stratified by class for classification, plain (seeded)
    for regression; returns (train_ids, holdout_ids), sorted."""
    from sklearn.model_selection import train_test_split

    stratify = df[target] if task == CLASSIFICATION else None
    train_ids, holdout_ids = train_test_split(
        df.index.to_numpy(), test_size=test_size, random_state=seed, stratify=stratify
    )
    return sorted(train_ids.tolist()), sorted(holdout_ids.tolist())
