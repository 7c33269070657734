"""Batch scoring of an uploaded CSV: read as text, checked against the training schema, every
row the model can take scored, and a download safe to open in a spreadsheet."""

from __future__ import annotations

import io
import numbers
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbops.exceptions import DataError
from nbops.serve.champion import Champion, ModelTolerance
from nbops.serve.predict import _range_text

if TYPE_CHECKING:
    import pandas as pd

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_BATCH_ROWS = 50_000
MAX_EXTRA_COLUMNS = 1_000  # columns a file may have besides the model's (read, then ignored)
SHOWN_CHARS = 80  # of a cell's value in a message or table on the page


class BatchError(DataError):
    """An uploaded file cannot be scored at all (empty, not a CSV, no rows, missing columns)."""


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

    text = _decoded(content, name)
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
    ragged = _ragged_rows(records, header)
    df = df.drop(index=[p.row for p in ragged])[wanted].dropna(how="all")
    if df.empty and not ragged:
        raise BatchError(f"{name}: has a header but no data rows")
    if len(df) + len(ragged) > MAX_BATCH_ROWS:
        raise BatchError(
            f"{name}: {len(df) + len(ragged)} rows, more than the {MAX_BATCH_ROWS} scored at once"
        )
    return df, ragged


def _decoded(content: bytes, name: str) -> str:
    """The upload as text, refused when too large, empty, binary or not UTF-8."""
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
    return text


def _ragged_rows(records: list[list[str]], header: list[str]) -> list[RowProblem]:
    """A row is cut short if it lacks a named column's field, too long if it has values beyond
    the header (empty trailing fields, as some exports write them, are no problem)."""
    named = len(header) - next((i for i, h in enumerate(reversed(header)) if h), 0)
    ragged = []
    for row, record in enumerate(records[1:], start=2):
        if not record or (len(record) == 1 and not record[0].strip()):
            continue  # a blank line
        if len(record) < named:
            ragged.append(RowProblem(row, "", "", f"has {len(record)} fields; the header has {named}"))
        elif any(v.strip() for v in record[len(header) :]):
            ragged.append(RowProblem(row, "", "", f"has {len(record)} fields; the header has {len(header)}"))
    return ragged


def _read_records(text: str, name: str, most_columns: int) -> list[list[str]]:
    """The file's records as the csv module splits them (pandas fills a short row with NaN,
    which would pass for missing values, and takes a long row's first field as the index, so
    fields are counted here). A header or row wider than `most_columns` fields is refused before
    anything else is parsed; a field may be as long as the upload limit allows."""
    import csv

    reader = csv.reader(io.StringIO(text), skipinitialspace=True)
    limit = csv.field_size_limit(max(MAX_UPLOAD_BYTES, csv.field_size_limit()))
    records: list[list[str]] = []
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
