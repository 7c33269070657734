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

# Heavy libraries imported inside the functions below; warm kernels load them early (nbops.runner.preload).
PRELOAD = ("pandas", "sklearn.model_selection")

if TYPE_CHECKING:
    import pandas as pd

    from nbops.params import DataParams, Params

MAX_COLUMNS = 10_000
HEAD_BYTES = 1 << 20  # the header (and the first rows) are read from this much of the file
BLOCK_BYTES = 2 << 20  # the field counts stream the file in blocks of this size (~6 of them in memory)
_SHOWN_VALUES = 5
_SHOWN_LINES = 8


# ---------------------------------------------------------------- locating and reading


def resolve_data_path(params: Params, root: Path, source: str = "params") -> Path:
    """The CSV to use: `data.path` if present, else the synthetic table (generated once)."""
    data = params.data
    path = root / data.path
    if path.is_file():
        check_size(path, data.max_mb, f"{source}: key 'data.path': {data.path} is")
        return path
    if path.exists():
        raise ParamsError(f"{source}: key 'data.path': {data.path} is not a file")
    if data.synthetic is None:
        raise ParamsError(f"{source}: key 'data.path': data file not found: {data.path}")
    from nbops.ml.synthetic import write_synthetic_table

    syn = data.synthetic
    return write_synthetic_table(root / syn.path, syn.rows, syn.seed, syn.label_noise)


def check_size(path: Path, max_mb: int, what: str) -> None:
    """`data.max_mb`, before a byte is read (hashing a file reads it all). `what` names the file
    in the message."""
    mb = path.stat().st_size / 2**20
    if mb > max_mb:
        size = f"{mb:,.0f}" if mb >= 10 else f"{mb:.1f}"
        raise DataError(f"{what} {size} MB, more than data.max_mb={max_mb} (raise it to read this file)")


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


def _read_header(path: Path, delimiter: str, shown) -> list[str]:
    """The header's names, from the first HEAD_BYTES of the file (bounded whatever the file is:
    a header with no line end, a file of NULs)."""
    import codecs

    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < HEAD_BYTES)
    except UnicodeDecodeError:
        raise DataError(f"{shown}: not a UTF-8 text CSV file") from None
    if "\x00" in text:
        raise DataError(f"{shown}: not a text CSV file (binary content)")
    end = text.find("\n")
    if end < 0 and len(head) == HEAD_BYTES:
        raise DataError(f"{shown}: line 1 (the header) is longer than {HEAD_BYTES >> 20} MB")
    first, rest = (text, "") if end < 0 else (text[: end + 1], text[end + 1 :])
    if not first.strip():
        raise DataError(
            f"{shown}: file is empty" if not rest.strip() else f"{shown}: line 1 (the header) is blank"
        )
    has_rows = bool(rest.split("\n", 1)[0].strip())
    header = next(csv.reader([first], delimiter=delimiter))
    header = [h.strip() for h in header]
    if len(header) > MAX_COLUMNS:
        raise DataError(f"{shown}: header has {len(header)} columns, more than the {MAX_COLUMNS} supported")
    seen: dict[str, int] = {}
    for pos, name in enumerate(header, start=1):
        if name in seen:
            raise DataError(
                f"{shown}: duplicate column name {_short(name)!r} in the header "
                f"(columns {seen[name]} and {pos})"
            )
        seen[name] = pos
    if not has_rows:
        raise DataError(f"{shown}: has a header but no data rows")
    return header


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


_BLANK = b" \t\r\n\x0b\x0c"  # what a blank line is made of


def _field_counts(path: Path, delimiter: str, expected: int, shown) -> dict[int, tuple[list[int], int]]:
    """The data lines whose field count is not `expected`, blank lines left out, as
    {field count: (its first _SHOWN_LINES line numbers, how many lines have it)}.

    Unquoted files (the common, large case) are counted with numpy in BLOCK_BYTES blocks:
    delimiters and non-blank bytes between newlines, ~0.2 s and a few blocks of memory for 1e6
    rows. A file with a quote character goes through the csv module, which knows that a
    delimiter inside quotes splits nothing."""
    import numpy as np

    sep = delimiter.encode()
    if len(sep) > 1 or sep == b'"':
        return _field_counts_csv(path, delimiter, expected, shown)
    not_blank = np.ones(256, dtype=bool)
    not_blank[list(_BLANK)] = False
    bad: dict[int, tuple[list[int], int]] = {}
    line = 0  # lines finished before this block
    carry_sep, carry_text = 0, False  # delimiters in, and text of, the line the last block cut
    quoted = False  # then the csv module counts, after this pass has looked for NULs
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK_BYTES):
            raw = np.frombuffer(block, dtype=np.uint8)
            ends = np.flatnonzero(raw == ord("\n"))
            nul = np.flatnonzero(raw == 0)
            if len(nul):
                at = line + 1 + int(np.searchsorted(ends, nul[0]))
                raise DataError(f"{shown}: not a text CSV file (binary content at line {at})")
            quoted = quoted or bool((raw == ord('"')).any())
            if quoted:
                line += len(ends)
                continue
            # per segment: each line the block ends, then the part of one it cuts (if any)
            starts = np.concatenate(([0], ends + 1))
            starts = starts[starts < len(raw)]
            fields = np.add.reduceat(raw == sep[0], starts, dtype=np.int32).astype(np.int64) + 1
            filled = np.logical_or.reduceat(not_blank[raw], starts)
            if len(ends) < len(starts):  # the block ends inside a line
                tail_sep, tail_text = int(fields[-1]) - 1, bool(filled[-1])
                fields, filled = fields[:-1], filled[:-1]
            else:
                tail_sep, tail_text = 0, False
            if len(ends):
                fields[0] += carry_sep
                filled[0] |= carry_text
                carry_sep, carry_text = tail_sep, tail_text
            else:
                carry_sep, carry_text = carry_sep + tail_sep, carry_text or tail_text
            numbers = np.arange(line + 1, line + 1 + len(ends))
            _tally(bad, numbers, fields, filled, expected)
            line += len(ends)
    if quoted:
        return _field_counts_csv(path, delimiter, expected, shown)
    if carry_text or carry_sep:  # the last line has no newline
        _tally(bad, np.array([line + 1]), np.array([carry_sep + 1]), np.array([carry_text]), expected)
    return bad


def _tally(bad: dict, numbers, fields, filled, expected: int) -> None:
    """Add the lines (not the header, not blank) whose field count is not `expected` to `bad`."""
    import numpy as np

    wrong = (fields != expected) & ((fields > 1) | (filled > 0)) & (numbers > 1)
    if not wrong.any():
        return
    numbers, fields = numbers[wrong], fields[wrong]
    for found in np.unique(fields).tolist():
        at = numbers[fields == found]
        first, total = bad.get(found, ([], 0))
        bad[found] = (first + at[: _SHOWN_LINES - len(first)].tolist(), total + len(at))


def _field_counts_csv(path: Path, delimiter: str, expected: int, shown) -> dict[int, tuple[list[int], int]]:
    bad: dict[int, tuple[list[int], int]] = {}
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter, skipinitialspace=True)
            next(reader, None)
            start = reader.line_num + 1
            for row in reader:
                if len(row) != expected and (len(row) > 1 or (row and row[0].strip())):
                    first, total = bad.get(len(row), ([], 0))
                    bad[len(row)] = (first + [start] if len(first) < _SHOWN_LINES else first, total + 1)
                start = reader.line_num + 1
    except UnicodeDecodeError:
        raise DataError(f"{shown}: not a UTF-8 text CSV file") from None
    except csv.Error as exc:
        raise DataError(f"{shown}: malformed CSV at line {reader.line_num}: {exc}") from None
    return bad


def _ragged_rows_problems(path: Path, delimiter: str, expected: int, shown) -> list[str]:
    """One line per field count that differs from the header's, with the file lines that have it.
    pandas would take a row's extra first field as the index (shifting every column by one) or
    fill a short row with NaN, silently either way."""
    problems = []
    bad = _field_counts(path, delimiter, expected, shown)
    for found, (first, total) in sorted(bad.items(), key=lambda item: item[1][0][0]):
        hint = ""
        if found == expected + 1 and delimiter == ",":
            hint = " (a decimal comma such as 14,5? write 14.5, or quote the value)"
        problems.append(
            f"{shown}: {_lines_of(first, total)}: expected {expected} fields, found {found}{hint}"
        )
    return problems


def read_table(path: Path, data: DataParams, shown: Path | str | None = None) -> pd.DataFrame:
    """Read the declared columns of a CSV; index = file line number (header is line 1).
    `shown` is how messages name the file (relative to the project when it is inside it)."""
    import pandas as pd

    shown = shown or path
    check_size(path, data.max_mb, f"{shown}:")
    header = _read_header(path, data.delimiter, shown)
    wanted = [*data.numeric, *data.categorical, data.target]
    names = set(header)
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(_missing_columns_problem(shown, missing, header, data.delimiter))
    # Checked here for both read paths below: pandas accepts short rows silently on either,
    # and with usecols long ones too.
    ragged = _ragged_rows_problems(path, data.delimiter, len(header), shown)
    if ragged:
        raise DataError(ragged)
    # Memory in proportion to the data: only the declared columns, and text columns as
    # categories (a code per row, each distinct value once) until validate_table normalises them
    wanted_set = set(wanted)
    text_cols = {c: "category" for c in [*data.categorical, data.target]}
    try:
        df = pd.read_csv(
            path,
            sep=data.delimiter,
            usecols=lambda c: c.strip() in wanted_set,
            index_col=False,  # never take a first column as the index
            dtype=text_cols,
            skip_blank_lines=False,
            skipinitialspace=True,
            engine="c",
        )
    except pd.errors.ParserError as exc:
        # pandas says e.g. "Error tokenizing data. C error: Expected 6 fields in line 12, saw 7"
        detail = _short(str(exc).split("C error: ")[-1].strip(), 200)
        raise DataError(f"{shown}: malformed CSV: {detail}") from None
    except UnicodeDecodeError:
        raise DataError(f"{shown}: not a UTF-8 text CSV file") from None
    df.columns = [c.strip() for c in df.columns]
    df.index = pd.RangeIndex(2, len(df) + 2, name="line")
    blank = df.isna().all(axis=1)
    if blank.any():  # blank lines (a copy of the table only when there are some)
        df = df[~blank]
    if df.empty:
        raise DataError(f"{shown}: has a header but no data rows")
    return df if list(df.columns) == wanted else df[wanted]


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
    return _lines_of(lines[:_SHOWN_LINES], len(lines))


def _lines_of(first: list[int], total: int) -> str:
    """'lines 2, 5, 9 (+4 more)': the first line numbers of `total`."""
    shown = ", ".join(str(i) for i in first[:_SHOWN_LINES])
    more = f" (+{total - _SHOWN_LINES} more)" if total > _SHOWN_LINES else ""
    return f"line{'s' if total > 1 else ''} {shown}{more}"


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

    df = df.copy(deep=False)  # columns are replaced, never written into: the caller's stays as it was
    for col in data.categorical:
        df[col] = _canonical(df[col], data.categories.get(col))
    df[data.target] = _canonical(df[data.target], data.classes)
    problems = _empty_columns_problems(df, data, path)
    stale = _stale_classes_problem(df, data, path)
    if stale:  # one line for it, not pandera's isin failure on every row as well
        problems.append(stale)
        data = data.model_copy(update={"classes": None})
    schema = schema or build_pandera_schema(data)
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
