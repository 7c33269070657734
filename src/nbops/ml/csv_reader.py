"""Reading a CSV file bounded in time and memory: the header from its first HEAD_BYTES, the
field count of every line streamed in blocks (ragged rows named by line), then only the declared
columns through pandas. Row ids are file line numbers (the header is line 1)."""

from __future__ import annotations

import csv
import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from nbops.exceptions import DataError

if TYPE_CHECKING:
    import pandas as pd

    from nbops.params import DataParams

MAX_COLUMNS = 10_000
HEAD_BYTES = 1 << 20  # the header (and the first rows) are read from this much of the file
BLOCK_BYTES = 2 << 20  # the field counts stream the file in blocks of this size (~6 of them in memory)
_SHOWN_LINES = 8


def check_size(path: Path, max_mb: int, what: str) -> None:
    """`data.max_mb`, before a byte is read (hashing a file reads it all). `what` names the file
    in the message."""
    mb = path.stat().st_size / 2**20
    if mb > max_mb:
        size = f"{mb:,.0f}" if mb >= 10 else f"{mb:.1f}"
        raise DataError(f"{what} {size} MB, more than data.max_mb={max_mb} (raise it to read this file)")


def read_text_head(path: Path, shown) -> tuple[str, bool]:
    """The first HEAD_BYTES of the file as text, and whether that is all of it; DataError when
    they are not UTF-8 text. Cheap whatever the file is (a file of NULs, a 2 GB binary), so it
    runs before the file is hashed or read whole."""
    import codecs

    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < HEAD_BYTES)
    except UnicodeDecodeError:
        raise DataError(f"{shown}: not a UTF-8 text CSV file") from None
    if "\x00" in text:
        raise DataError(f"{shown}: not a text CSV file (binary content)")
    return text, len(head) < HEAD_BYTES


def _read_header(path: Path, delimiter: str, shown) -> list[str]:
    """The header's names, from the first HEAD_BYTES of the file (bounded whatever the file is:
    a header with no line end, a file of NULs)."""
    text, whole = read_text_head(path, shown)
    end = text.find("\n")
    if end < 0 and not whole:
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


def _lines_of(first: list[int], total: int) -> str:
    """'lines 2, 5, 9 (+4 more)': the first line numbers of `total`."""
    shown = ", ".join(str(i) for i in first[:_SHOWN_LINES])
    more = f" (+{total - _SHOWN_LINES} more)" if total > _SHOWN_LINES else ""
    return f"line{'s' if total > 1 else ''} {shown}{more}"


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _close_column(col: str, header: list[str]) -> str | None:
    """The header name `col` was probably meant to be (case-insensitive: 'Age' -> 'age')."""
    lowered: dict[str, str] = {}
    for name in header:
        lowered.setdefault(name.lower(), name)
    close = difflib.get_close_matches(col.lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[close[0]] if close else None


def _missing_columns_problem(path: Path | str, missing: list[str], header: list[str], delimiter: str) -> str:
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
