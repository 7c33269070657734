"""Raw CSV -> validated table -> schema -> holdout split.

Validation is pandera (lazy): every problem becomes one line naming the file, the column, the
check, the offending values and the file lines they are on (line 1 is the header). Row ids used
everywhere downstream are those file line numbers, so a reviewer can find a row in the CSV.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbops.exceptions import DataError, ParamsError

# Heavy libraries imported inside the functions below; warm kernels load them early (nbops.preload).
PRELOAD = ("pandas", "sklearn.model_selection")

if TYPE_CHECKING:
    import pandas as pd

    from nbops.params import DataParams, Params

MAX_COLUMNS = 10_000
WIDE_TABLE = 256
_SHOWN_VALUES = 5
_SHOWN_LINES = 8


# ---------------------------------------------------------------- locating and reading


def resolve_data_path(params: Params, root: Path, source: str = "params") -> Path:
    """The CSV to use: `data.path` if present, else the synthetic table (generated once)."""
    data = params.data
    path = root / data.path
    if path.is_file():
        return path
    if path.exists():
        raise ParamsError(f"{source}: key 'data.path': {data.path} is not a file")
    if data.synthetic is None:
        raise ParamsError(f"{source}: key 'data.path': data file not found: {data.path}")
    from nbops.synthetic import write_synthetic_table

    syn = data.synthetic
    return write_synthetic_table(root / syn.path, syn.rows, syn.seed, syn.label_noise)


def is_synthetic(params: Params, root: Path) -> bool:
    return not (root / params.data.path).is_file() and params.data.synthetic is not None


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes (streamed, so a 1e6-row CSV costs ~0.1 s)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_header(path: Path, delimiter: str, shown) -> list[str]:
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            first = fh.readline(1 << 20)
            if not first.strip():
                rest = fh.read(1 << 16)
                raise DataError(
                    f"{shown}: file is empty"
                    if not rest.strip()
                    else f"{shown}: line 1 (the header) is blank"
                )
            has_rows = bool(fh.readline().strip())
    except UnicodeDecodeError:
        raise DataError(f"{shown}: not a UTF-8 text CSV file") from None
    if "\x00" in first:
        raise DataError(f"{shown}: not a text CSV file (binary content)")
    header = next(csv.reader([first], delimiter=delimiter))
    header = [h.strip() for h in header]
    if len(header) > MAX_COLUMNS:
        raise DataError(f"{shown}: header has {len(header)} columns, more than the {MAX_COLUMNS} supported")
    seen: dict[str, int] = {}
    for pos, name in enumerate(header, start=1):
        if name in seen:
            raise DataError(
                f"{shown}: duplicate column name {name!r} in the header (columns {seen[name]} and {pos})"
            )
        seen[name] = pos
    if not has_rows:
        raise DataError(f"{shown}: has a header but no data rows")
    return header


def _close_column(col: str, header: list[str]) -> str | None:
    """The header name `col` was probably meant to be (case-insensitive: 'Age' -> 'age')."""
    lowered = {}
    for name in header:
        lowered.setdefault(name.lower(), name)
    close = difflib.get_close_matches(col.lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[close[0]] if close else None


def _missing_columns_problem(path: Path, missing: list[str], header: list[str], delimiter: str) -> str:
    hints = []
    for col in missing:
        close = _close_column(col, header)
        hints.append(f"{col!r} (did you mean {close!r}?)" if close else repr(col))
    line = f"{path}: missing column{'s' if len(missing) > 1 else ''} " + ", ".join(hints)
    if len(header) == 1:
        for other in (";", "\t", "|", ","):
            if other != delimiter and other in header[0]:
                shown = "\\t" if other == "\t" else other
                return line + f"; the file looks {shown!r}-delimited: set data.delimiter: {shown!r}"
        return line + f"; the header has a single column (delimiter is {delimiter!r})"
    return line


def _field_counts(path: Path, delimiter: str, shown):
    """(line numbers, field counts) of every data line as numpy arrays, blank lines left out.

    Unquoted files (the common, large case) are counted with numpy: delimiters between newlines,
    ~0.2 s for 1e6 rows. A file with a quote character goes through the csv module, which knows
    that a delimiter inside quotes splits nothing."""
    import numpy as np

    sep = delimiter.encode()
    raw = np.fromfile(path, dtype=np.uint8)
    if len(sep) > 1 or b'"' == sep or (raw == ord('"')).any():
        return _field_counts_csv(path, delimiter, shown)
    ends = np.flatnonzero(raw == ord("\n"))
    if len(raw) and raw[-1] != ord("\n"):
        ends = np.append(ends, len(raw))  # the last line has no newline
    fields = np.diff(np.searchsorted(np.flatnonzero(raw == sep[0]), ends), prepend=0) + 1
    starts = np.concatenate(([0], ends[:-1] + 1))
    lines = np.arange(1, len(ends) + 1)
    # a line without a delimiter may be blank (or spaces, or a CRLF's lone '\r')
    one = np.flatnonzero(fields[1:] == 1) + 1
    blank = [i for i in one.tolist() if not raw[starts[i] : ends[i]].tobytes().strip()]
    keep = np.ones(len(ends), dtype=bool)
    keep[0] = False  # the header
    keep[blank] = False
    return lines[keep], fields[keep]


def _field_counts_csv(path: Path, delimiter: str, shown):
    import numpy as np

    lines, fields = [], []
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter, skipinitialspace=True)
            next(reader, None)
            start = reader.line_num + 1
            for row in reader:
                if len(row) > 1 or (row and row[0].strip()):
                    lines.append(start)
                    fields.append(len(row))
                start = reader.line_num + 1
    except UnicodeDecodeError:
        raise DataError(f"{shown}: not a UTF-8 text CSV file") from None
    except csv.Error as exc:
        raise DataError(f"{shown}: malformed CSV at line {reader.line_num}: {exc}") from None
    return np.array(lines, dtype=int), np.array(fields, dtype=int)


def _ragged_rows_problems(path: Path, delimiter: str, expected: int, shown) -> list[str]:
    """One line per field count that differs from the header's, with the file lines that have it.
    pandas would take a row's extra first field as the index (shifting every column by one) or
    fill a short row with NaN, silently either way."""
    lines, fields = _field_counts(path, delimiter, shown)
    bad = fields != expected
    by_count: dict[int, list[int]] = {}
    for line, found in zip(lines[bad].tolist(), fields[bad].tolist(), strict=True):
        by_count.setdefault(found, []).append(line)
    problems = []
    for found, at in sorted(by_count.items(), key=lambda item: item[1][0]):
        hint = ""
        if found == expected + 1 and delimiter == ",":
            hint = " (a decimal comma such as 14,5? write 14.5, or quote the value)"
        problems.append(f"{shown}: {_lines(at)}: expected {expected} fields, found {found}{hint}")
    return problems


def read_table(path: Path, data: DataParams, shown: Path | str | None = None) -> pd.DataFrame:
    """Read the declared columns of a CSV; index = file line number (header is line 1).
    `shown` is how messages name the file (relative to the project when it is inside it)."""
    import pandas as pd

    shown = shown or path
    header = _read_header(path, data.delimiter, shown)
    wanted = [*data.numeric, *data.categorical, data.target]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(_missing_columns_problem(shown, missing, header, data.delimiter))
    # Checked here for both read paths below: pandas accepts short rows silently on either,
    # and with usecols long ones too.
    ragged = _ragged_rows_problems(path, data.delimiter, len(header), shown)
    if ragged:
        raise DataError(ragged)
    text_cols = {c: "str" for c in [*data.categorical, data.target]}
    try:
        df = pd.read_csv(
            path,
            sep=data.delimiter,
            # wide tables: read only the declared columns
            usecols=(lambda c: c.strip() in wanted) if len(header) > WIDE_TABLE else None,
            index_col=False,  # never take a first column as the index
            dtype=text_cols,
            skip_blank_lines=False,
            skipinitialspace=True,
            engine="c",
        )
    except pd.errors.ParserError as exc:
        # pandas says e.g. "Error tokenizing data. C error: Expected 6 fields in line 12, saw 7"
        detail = str(exc).split("C error: ")[-1].strip()
        raise DataError(f"{shown}: malformed CSV: {detail}") from None
    except UnicodeDecodeError:
        raise DataError(f"{shown}: not a UTF-8 text CSV file") from None
    df.columns = [c.strip() for c in df.columns]
    df.index = pd.RangeIndex(2, len(df) + 2, name="line")
    df = df.dropna(how="all")
    if df.empty:
        raise DataError(f"{shown}: has a header but no data rows")
    return df[wanted]


# ---------------------------------------------------------------- validating


def _canonical(series: pd.Series, allowed: list[str] | None) -> pd.Series:
    """Strip and match labels case-insensitively: 'DrugY' -> 'drugY'."""
    s = series.str.strip()
    if allowed:
        lookup = {a.lower(): a for a in allowed}
    else:  # unify case variants on the most frequent spelling
        counts = s.value_counts()
        lookup = {}
        for spelling in counts.index:
            lookup.setdefault(spelling.lower(), spelling)
    lowered = s.str.lower()
    return lowered.map(lookup).where(lowered.isin(list(lookup)), s)


def build_pandera_schema(data: DataParams, classes=None, categories=None, ranges=None):
    """pandera schema from params plus, when given, what a training table showed."""
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
    target_checks = [pa.Check.isin(classes)] if classes else []
    columns[data.target] = pa.Column("str", target_checks, nullable=False, coerce=True)
    return pa.DataFrameSchema(columns, strict=False, ordered=False)


def _lines(index_values) -> str:
    lines = sorted({int(i) for i in index_values if i == i})  # drop NaN
    shown = ", ".join(str(i) for i in lines[:_SHOWN_LINES])
    more = f" (+{len(lines) - _SHOWN_LINES} more)" if len(lines) > _SHOWN_LINES else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{more}"


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


def validate_table(df: pd.DataFrame, data: DataParams, path: Path | str, schema=None) -> pd.DataFrame:
    """Normalise labels and validate; raise DataError listing every problem found."""
    import pandera.errors

    df = df.copy()
    for col in data.categorical:
        df[col] = _canonical(df[col].astype("str").where(df[col].notna()), data.categories.get(col))
    df[data.target] = _canonical(df[data.target].astype("str").where(df[data.target].notna()), data.classes)
    problems = _empty_columns_problems(df, data, path)
    stale = _stale_classes_problem(df, data, path)
    if stale:  # one line for it, not pandera's isin failure on every row as well
        problems.append(stale)
        data = data.model_copy(update={"classes": None})
    schema = schema or build_pandera_schema(data)
    try:
        df = schema.validate(df, lazy=True)
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


def check_splittable(df: pd.DataFrame, data: DataParams, test_size: float, path) -> None:
    """Two classes at least; a stratified split needs two rows of every class and room for each
    class in the holdout."""
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


def load_table(params: Params, root: Path, source: str = "params") -> tuple[pd.DataFrame, Path]:
    """Locate, read and validate the table; returns (validated table, CSV path)."""
    path = resolve_data_path(params, root, source)
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    df = read_table(path, params.data, shown)
    df = validate_table(df, params.data, shown)
    check_splittable(df, params.data, params.split.test_size, shown)
    return df, path


# ---------------------------------------------------------------- schema and split


def infer_schema(df: pd.DataFrame, target: str, numeric: list[str], categorical: list[str]) -> dict[str, Any]:
    """What the training table shows: ranges, categories, classes. Stored with the model and
    used by the dashboard (widget bounds, dropdowns) and the drift check."""
    numeric_info = {}
    for col in numeric:
        s = df[col].dropna()
        numeric_info[col] = {
            "min": float(s.min()) if len(s) else 0.0,
            "max": float(s.max()) if len(s) else 0.0,
            "median": float(s.median()) if len(s) else 0.0,
            "integer": bool(len(s) and (s % 1 == 0).all()),
        }
    return {
        "target": target,
        "classes": sorted(df[target].unique().tolist()),
        "numeric": numeric_info,
        "categorical": {col: sorted(df[col].dropna().unique().tolist()) for col in categorical},
        "rows": int(len(df)),
    }


def split_holdout(df: pd.DataFrame, target: str, test_size: float, seed: int):
    """Stratified split of row ids (file lines); returns (train_ids, holdout_ids), sorted."""
    from sklearn.model_selection import train_test_split

    train_ids, holdout_ids = train_test_split(
        df.index.to_numpy(), test_size=test_size, random_state=seed, stratify=df[target]
    )
    return sorted(train_ids.tolist()), sorted(holdout_ids.tolist())
