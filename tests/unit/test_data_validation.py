"""Bad CSV input: one clear line per problem naming file, column, check, value and line."""

import pytest

from nbops.exceptions import DataError, ParamsError
from nbops.ml.data import load_table
from nbops.params import load_params
from tests.conftest import REPO

HEADER = "Age,Sex,BP,Cholesterol,Na_to_K,Drug"
GOOD = [
    "23,F,HIGH,HIGH,25.355,drugY",
    "47,M,LOW,HIGH,13.093,drugC",
    "47,M,LOW,HIGH,10.114,drugC",
    "28,F,NORMAL,HIGH,7.798,drugX",
    "61,F,LOW,HIGH,18.043,drugY",
    "22,F,NORMAL,HIGH,8.607,drugX",
    "49,F,NORMAL,HIGH,16.275,drugY",
    "41,M,LOW,HIGH,11.037,drugC",
    "60,M,NORMAL,HIGH,15.171,drugY",
    "43,M,LOW,NORMAL,19.368,drugY",
]


@pytest.fixture
def params():
    params = load_params(REPO / "params" / "smoke.yaml")
    params.split.test_size = 0.5  # so ten rows of three classes can be split
    return params


def load(tmp_path, params, text, name="t.csv"):
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / name).write_bytes(text.encode() if isinstance(text, str) else text)
    params.data.path = f"data/{name}"
    return load_table(params, tmp_path, "params/smoke.yaml")


def csv(*rows, header=HEADER):
    return "\n".join([header, *rows]) + "\n"


def problems(tmp_path, params, text):
    with pytest.raises(DataError) as exc:
        load(tmp_path, params, text)
    return exc.value.problems


def refused(tmp_path, params, text, match):
    """The table is refused with exactly one problem line, matching `match` from its start."""
    with pytest.raises(DataError, match=match) as exc:
        load(tmp_path, params, text)
    assert len(exc.value.problems) == 1, exc.value.problems
    return exc.value.problems[0]


def test_good_table_loads_with_file_lines_as_row_ids(tmp_path, params):
    df, path = load(tmp_path, params, csv(*GOOD))
    assert list(df.index[:2]) == [2, 3]
    assert df.loc[2, "Drug"] == "drugY"
    assert path == tmp_path / "data" / "t.csv"


def test_labels_match_case_insensitively_and_are_normalised(tmp_path, params):
    rows = [r.replace("drugY", "DrugY") for r in GOOD]
    df, _ = load(tmp_path, params, csv(*rows))
    assert set(df["Drug"]) == {"drugY", "drugC", "drugX"}


def test_missing_column(tmp_path, params):
    text = csv(
        *[r.rsplit(",", 2)[0] + "," + r.rsplit(",", 1)[1] for r in GOOD], header="Age,Sex,BP,Cholesterol,Drug"
    )
    assert problems(tmp_path, params, text) == ["data/t.csv: missing column 'Na_to_K'"]


def test_misspelt_column_is_pointed_out(tmp_path, params):
    text = csv(*GOOD, header="Age,Sex,BP,Cholesterol,Na_to_k,Drug")
    assert problems(tmp_path, params, text) == [
        "data/t.csv: missing column 'Na_to_K' (did you mean 'Na_to_k'?)"
    ]


def test_column_in_another_case_is_offered(tmp_path, params):
    text = csv(*GOOD, header=HEADER.replace("Age", "age"))
    refused(tmp_path, params, text, r"^data/t\.csv: missing column 'Age' \(did you mean 'age'\?\)$")


def test_unknown_category_names_column_value_and_line(tmp_path, params):
    rows = list(GOOD)
    rows[2] = "47,M,MEDIUM,HIGH,10.114,drugC"
    assert problems(tmp_path, params, csv(*rows)) == [
        "data/t.csv: column 'BP' fails isin(['HIGH', 'LOW', 'NORMAL']): 'MEDIUM' at line 4"
    ]


def test_out_of_range_and_non_finite_values_are_each_one_line(tmp_path, params):
    rows = list(GOOD)
    rows[0] = "230,F,HIGH,HIGH,25.355,drugY"
    rows[4] = "61,F,LOW,HIGH,inf,drugY"
    found = problems(tmp_path, params, csv(*rows))
    assert "data/t.csv: column 'Age' is outside the range [0, 120]: 230.0 at line 2" in found
    assert "data/t.csv: column 'Na_to_K' is not finite: inf at line 6" in found
    assert len(found) == 2


def test_text_in_a_numeric_column(tmp_path, params):
    rows = list(GOOD)
    rows[3] = "twenty,F,NORMAL,HIGH,7.798,drugX"
    found = problems(tmp_path, params, csv(*rows))
    assert found == ["data/t.csv: column 'Age' is not a number: 'twenty' at line 5"]


def test_unknown_label_and_missing_label(tmp_path, params):
    rows = list(GOOD)
    rows[1] = "47,M,LOW,HIGH,13.093,drugZ"
    rows[5] = "22,F,NORMAL,HIGH,8.607,"
    found = problems(tmp_path, params, csv(*rows))
    assert any(
        p.startswith("data/t.csv: column 'Drug' fails isin(") and p.endswith("'drugZ' at line 3")
        for p in found
    )
    assert "data/t.csv: column 'Drug' has missing values at line 7" in found


def test_many_bad_rows_are_summarised_not_listed_forever(tmp_path, params):
    rows = [",".join([*r.split(",")[:2], "VERY", *r.split(",")[3:]]) for r in GOOD] * 3
    (line,) = problems(tmp_path, params, csv(*rows))
    assert line.startswith(
        "data/t.csv: column 'BP' fails isin(['HIGH', 'LOW', 'NORMAL']): 'VERY' "
        "at lines 2, 3, 4, 5, 6, 7, 8, 9 (+22 more)"
    )
    assert "more)" in line


def test_empty_file(tmp_path, params):
    assert problems(tmp_path, params, "") == ["data/t.csv: file is empty"]


def test_header_only(tmp_path, params):
    assert problems(tmp_path, params, HEADER + "\n") == ["data/t.csv: has a header but no data rows"]


def test_wrong_delimiter_is_recognised(tmp_path, params):
    text = csv(*[r.replace(",", ";") for r in GOOD], header=HEADER.replace(",", ";"))
    (line,) = problems(tmp_path, params, text)
    assert line.startswith("data/t.csv: missing columns 'Age', 'Na_to_K', 'Sex'")
    assert line.endswith("the file looks ';'-delimited: set data.delimiter: ';'")


def test_duplicate_header(tmp_path, params):
    text = csv(*[r + ",1" for r in GOOD], header=HEADER + ",Age")
    assert problems(tmp_path, params, text) == [
        "data/t.csv: duplicate column name 'Age' in the header (columns 1 and 7)"
    ]


def test_ragged_row(tmp_path, params):
    rows = list(GOOD)
    rows[6] = "49,F,NORMAL,HIGH,16.275,drugY,extra,more"
    refused(tmp_path, params, csv(*rows), r"^data/t\.csv: line 8: expected 6 fields, found 8$")


DECIMAL_COMMA = r" \(a decimal comma such as 14,5\? write 14\.5, or quote the value\)$"


def test_decimal_comma_in_the_first_row_is_refused_not_read_as_an_index(tmp_path, params):
    """pandas takes the first field of a row with one field too many as the index: every column
    shifts by one. Without data.categories nothing else would catch it."""
    params.data.categories = {}
    params.data.ranges = {}
    rows = list(GOOD)
    rows[0] = "23,F,HIGH,HIGH,25,355,drugY"
    refused(tmp_path, params, csv(*rows), r"^data/t\.csv: line 2: expected 6 fields, found 7" + DECIMAL_COMMA)


def test_decimal_commas_in_several_rows_are_one_line_listing_them(tmp_path, params):
    rows = list(GOOD)
    rows[1] = "47,M,LOW,HIGH,13,093,drugC"
    rows[8] = "60,M,NORMAL,HIGH,15,171,drugY"
    expected = r"^data/t\.csv: lines 3, 10: expected 6 fields, found 7" + DECIMAL_COMMA
    refused(tmp_path, params, csv(*rows), expected)


def test_short_row_is_refused_not_filled_with_missing_values(tmp_path, params):
    rows = list(GOOD)
    rows[3] = "28,F,NORMAL,HIGH,drugX"
    refused(tmp_path, params, csv(*rows), r"^data/t\.csv: line 5: expected 6 fields, found 5$")


def test_rows_too_long_and_too_short_are_one_line_each(tmp_path, params):
    rows = list(GOOD)
    rows[2] = "47,M,LOW"
    rows[5] = "22,F,NORMAL,HIGH,8,607,drugX"
    assert problems(tmp_path, params, csv(*rows)) == [
        "data/t.csv: line 4: expected 6 fields, found 3",
        "data/t.csv: line 7: expected 6 fields, found 7 (a decimal comma such as 14,5? write 14.5, "
        "or quote the value)",
    ]


def test_undeclared_columns_refuse_ragged_rows_too(tmp_path, params):
    """Only the declared columns are read (usecols), which accepts ragged rows silently."""
    extra = [f"x{i}" for i in range(300)]
    rows = [r + "," + ",".join("0" for _ in extra) for r in GOOD]
    rows[4] = rows[4].rsplit(",", 2)[0]  # two fields short, in the undeclared part
    text = csv(*rows, header=",".join([HEADER, *extra]))
    expected = r"^data/t\.csv: line 6: expected 306 fields, found 304$"
    refused(tmp_path, params, text, expected)


@pytest.mark.parametrize("quoted", [False, True], ids=["unquoted", "quoted"])
def test_quoted_commas_crlf_and_blank_lines_are_not_ragged(tmp_path, params, quoted):
    """Both ways of counting fields: numpy for unquoted files, the csv module for quoted ones."""
    rows = [f'{r},"a note, with a comma"' if quoted else f"{r},a note" for r in GOOD]
    if quoted:
        rows[2] = rows[2].replace("LOW", '"LOW"')
    text = "\r\n".join([HEADER + ",note", *rows[:5], "", *rows[5:], "  ", ""]) + "\r\n"
    df, _ = load(tmp_path, params, text)
    assert len(df) == 10
    assert df.loc[4, "BP"] == "LOW" and df.loc[9, "Drug"] == "drugY"  # line 7 was blank


def test_one_class_target_is_refused(tmp_path, params):
    """Every row 'drugY': the model would always say drugY, score macro-F1 1.0 and be promoted."""
    rows = [r.rsplit(",", 1)[0] + ",drugY" for r in GOOD]
    refused(
        tmp_path,
        params,
        csv(*rows),
        r"^data/t\.csv: column 'Drug' has the single value 'drugY' in every row \(10 rows\); "
        r"a classifier needs at least two classes$",
    )


def test_one_class_target_is_refused_in_any_spelling(tmp_path, params):
    params.data.classes = None
    rows = [r.rsplit(",", 1)[0] + (",yes" if i == 0 else ",YES") for i, r in enumerate(GOOD)]
    refused(tmp_path, params, csv(*rows), r"^data/t\.csv: column 'Drug' has the single value 'YES' in ")


def test_numeric_feature_empty_in_every_row_is_refused(tmp_path, params):
    rows = [",".join(["", *r.split(",")[1:]]) for r in GOOD]
    refused(
        tmp_path,
        params,
        csv(*rows),
        r"^data/t\.csv: column 'Age' is empty in every row \(10 rows\); "
        r"fill it or remove it from data\.numeric$",
    )


def test_categorical_feature_empty_in_every_row_is_refused(tmp_path, params):
    rows = [",".join([*r.split(",")[:3], "", *r.split(",")[4:]]) for r in GOOD]
    refused(
        tmp_path,
        params,
        csv(*rows),
        r"^data/t\.csv: column 'Cholesterol' is empty in every row \(10 rows\); "
        r"fill it or remove it from data\.categorical$",
    )


def test_leftover_classes_matching_no_label_get_a_hint(tmp_path, params):
    rows = [r.rsplit(",", 1)[0] + (",yes" if i % 2 else ",no") for i, r in enumerate(GOOD)]
    refused(
        tmp_path,
        params,
        csv(*rows),
        r"^data/t\.csv: column 'Drug': no row has a label from data\.classes \['drugA', 'drugB', 'drugC', "
        r"'drugX', 'drugY'\] \(found 'no', 'yes'\); delete data\.classes or list this table's labels$",
    )


def test_binary_file_is_refused_without_echoing_it(tmp_path, params):
    (line,) = problems(tmp_path, params, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    assert line == "data/t.csv: not a UTF-8 text CSV file"


def test_not_a_csv_of_the_expected_shape_does_not_echo_its_content(tmp_path, params):
    text = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    (line,) = problems(tmp_path, params, text)
    assert "root" not in line and "daemon" not in line
    assert line.startswith("data/t.csv: missing columns 'Age', 'Na_to_K', 'Sex', 'BP', 'Cholesterol', 'Drug'")


def test_class_too_small_to_split(tmp_path, params):
    rows = [*GOOD, "70,M,HIGH,HIGH,9.0,drugB"]
    assert problems(tmp_path, params, csv(*rows)) == [
        "data/t.csv: column 'Drug': classes with fewer than 2 rows: 'drugB' (1 row)"
    ]


def test_missing_data_file_names_params_file_and_key(tmp_path, params):
    params.data.path = "data/nothing.csv"
    params.data.synthetic = None
    with pytest.raises(ParamsError) as exc:
        load_table(params, tmp_path, "params/smoke.yaml")
    assert exc.value.problems == ["params/smoke.yaml: key 'data.path': data file not found: data/nothing.csv"]


def test_missing_feature_values_are_allowed(tmp_path, params):
    rows = list(GOOD)
    rows[0] = ",F,HIGH,,25.355,drugY"
    df, _ = load(tmp_path, params, csv(*rows))
    assert df["Age"].isna().sum() == 1 and df["Cholesterol"].isna().sum() == 1


# ------------------------------------------------------------------ bounds


def test_a_file_over_data_max_mb_is_refused_before_it_is_read(tmp_path, params, monkeypatch):
    path = tmp_path / "data" / "big.csv"
    path.parent.mkdir()
    with open(path, "wb") as fh:
        fh.write((csv(*GOOD)).encode())
        fh.truncate(3 << 20)  # sparse: NULs after the rows, no disk
    params.data.path, params.data.max_mb = "data/big.csv", 2
    opened = []
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a) or pytest.fail("read"))
    with pytest.raises(DataError) as exc:
        load_table(params, tmp_path, "params/smoke.yaml")
    assert exc.value.problems == [
        "params/smoke.yaml: key 'data.path': data/big.csv is 3.0 MB, more than data.max_mb=2 "
        "(raise it to read this file)"
    ]


def test_a_nul_after_the_header_is_refused_in_the_first_chunk(tmp_path, params):
    line = refused(tmp_path, params, (csv(*GOOD[:3]) + "\x00" * 5000 + csv(*GOOD[3:])).encode(), "^")
    assert line == "data/t.csv: not a text CSV file (binary content)"


def test_a_nul_far_into_the_file_names_its_line(tmp_path, params, monkeypatch):
    import nbops.ml.csv_reader

    monkeypatch.setattr(nbops.ml.csv_reader, "HEAD_BYTES", 64)  # the streamed pass finds it, not the header's
    monkeypatch.setattr(nbops.ml.csv_reader, "BLOCK_BYTES", 50)
    text = csv(*GOOD).replace("61,F,LOW", "61,F,L\x00W")
    line = refused(tmp_path, params, text, "^")
    assert line == "data/t.csv: not a text CSV file (binary content at line 6)"


def test_a_header_without_a_line_end_in_the_first_mb_is_refused(tmp_path, params):
    line = refused(tmp_path, params, "a" * (2 << 20), "^")
    assert line == "data/t.csv: line 1 (the header) is longer than 1 MB"


def test_an_all_nul_file_is_refused_at_once(tmp_path, params):
    assert (
        refused(tmp_path, params, b"\x00" * (3 << 20), "^")
        == "data/t.csv: not a text CSV file (binary content)"
    )


@pytest.mark.parametrize("block", [7, 64, 1 << 20])
def test_ragged_rows_are_found_across_block_boundaries(tmp_path, params, monkeypatch, block):
    import nbops.ml.csv_reader

    monkeypatch.setattr(nbops.ml.csv_reader, "BLOCK_BYTES", block)
    rows = list(GOOD)
    rows[2] += ",extra"
    rows[6] = rows[6].rsplit(",", 1)[0]
    assert problems(tmp_path, params, csv(*rows[:5], "", "  ", *rows[5:])) == [
        "data/t.csv: line 4: expected 6 fields, found 7 (a decimal comma such as 14,5? write 14.5, "
        "or quote the value)",
        "data/t.csv: line 10: expected 6 fields, found 5",
    ]


def test_many_ragged_rows_are_counted_not_listed(tmp_path, params):
    rows = [*GOOD, *["1,2"] * 5000]
    (line,) = problems(tmp_path, params, csv(*rows))
    assert line == "data/t.csv: lines 12, 13, 14, 15, 16, 17, 18, 19 (+4992 more): expected 6 fields, found 2"


def test_labels_are_normalised_to_the_most_frequent_spelling_without_data_classes(tmp_path, params):
    params.data.classes = None
    rows = [r.replace("drugY", "DrugY") if i == 0 else r for i, r in enumerate(GOOD)]
    rows[1] = rows[1].replace("drugC", " drugc ")
    df, _ = load(tmp_path, params, csv(*rows))
    assert sorted(df["Drug"].unique()) == ["drugC", "drugX", "drugY"]
    assert str(df["Drug"].dtype) == "str" and str(df["Sex"].dtype) == "str"


def test_data_file_hash_refuses_a_fifo_without_waiting(tmp_path):
    import os

    from nbops.ml.data import file_hash

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="not a regular file"):
        file_hash(tmp_path / "fifo")
