"""Markup in the data and in a notebook: labels and category values that are HTML, and a
markdown cell with a script. Nothing of it may become live markup in the HTML reports, the PR
summary or the dashboard. Each check first shows the payload did reach the rendering path.

And tables that would quietly train a wrong model (a decimal comma shifting every column, one
class, an empty feature column, labels from another table): refused by the CLI before any kernel
starts, with one line, and nothing registered."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nbops.layout import build_dir, reports_dir, reports_index
from tests.browser.conftest import base_env, own_page, start
from tests.conftest import make_project, nbops, write_params
from tests.faults.helpers import script_tags

pytestmark = pytest.mark.e2e

SCRIPT_LABEL = "<script>alert(1)</script>"
IMG_LABEL = "<img src=x onerror=alert(1)>"
SCRIPT_CATEGORY = "<script>alert(2)</script>"
IMG_CATEGORY = "<img src=x onerror=alert(2)>"
MARKDOWN = (
    'Look here: <script>alert(3)</script> <img src=x onerror="alert(3)"> <a href="#" onclick=alert(3)>x</a>'
)
PAYLOADS = (SCRIPT_LABEL, IMG_LABEL, SCRIPT_CATEGORY, IMG_CATEGORY, "<script>alert(3)", 'onerror="alert(3)')
LIVE = re.compile(r"<script[^>]*>\s*alert\(|<[a-z][^>]*\bon[a-z]+\s*=\s*[\"']?alert\(", re.IGNORECASE)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """A project whose CSV has markup as two drug labels and as both Sex values, and whose EDA
    notebook has a markdown cell with a script; the smoke pipeline run on it once."""
    import pandas as pd

    from nbops.ml.synthetic import write_synthetic_table

    root = make_project(tmp_path_factory.mktemp("hostile-data") / "project")
    df = pd.read_csv(write_synthetic_table(root / "data" / "raw" / "base.csv", 120, 42, 0.0))
    df["Drug"] = df["Drug"].replace({"drugC": SCRIPT_LABEL, "drugX": IMG_LABEL})
    df["Sex"] = df["Sex"].replace({"F": IMG_CATEGORY, "M": SCRIPT_CATEGORY})
    df.to_csv(root / "data" / "raw" / "hostile.csv", index=False)

    def edit(p):
        p["data"]["path"] = "data/raw/hostile.csv"
        del p["data"]["synthetic"]
        p["data"]["classes"] = ["drugA", "drugB", SCRIPT_LABEL, IMG_LABEL, "drugY"]
        p["data"]["categories"]["Sex"] = [IMG_CATEGORY, SCRIPT_CATEGORY]

    write_params(root, "hostile", edit)
    nb_path = root / "notebooks" / "01_eda.ipynb"
    nb = json.loads(nb_path.read_text())
    nb["cells"].insert(1, {"cell_type": "markdown", "metadata": {}, "source": [MARKDOWN]})
    nb_path.write_text(json.dumps(nb, indent=1))
    res = nbops(root, "run", "--params", "params/hostile.yaml")
    assert res.returncode == 0, res.stderr + res.stdout
    return root


SCRIPT_BLOCK = re.compile(r"<\s*script\b[^>]*>(.*?)<\s*/\s*script", re.IGNORECASE | re.DOTALL)
HANDLER = re.compile(
    r"<[a-z][^>]*?\s(on[a-z]+)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+)", re.IGNORECASE | re.DOTALL
)


def data_scripts(text: str) -> list[str]:
    """Script blocks that carry the payload (the template's own scripts and widget state don't)."""
    return [body[:80] for body in SCRIPT_BLOCK.findall(text) if "alert(" in body]


def data_handlers(text: str) -> list[str]:
    return [f"{name}={value}"[:80] for name, value in HANDLER.findall(text) if "alert" in value]


def test_payload_reaches_the_rendering_path(hostile, tmp_path):
    """Unsanitised nbconvert would let the markup through: this is what the reports must stop."""
    from nbconvert import HTMLExporter

    executed = build_dir(hostile, "hostile") / "01_eda" / "01_eda.ipynb"
    assert "<script>alert(3)</script>" in executed.read_text()
    raw, _ = HTMLExporter(template_name="lab", sanitize_html=False).from_filename(str(executed))
    assert LIVE.search(raw), "without sanitize_html the markdown script would be live"
    assert data_scripts(raw) and data_handlers(raw), "the checks below see unsanitised markup"
    assert f"classes: ['{IMG_LABEL}', '{SCRIPT_LABEL}'," in executed.read_text()  # labels in outputs


def test_no_live_markup_in_any_html_report(hostile, tmp_path):
    reports = sorted(reports_dir(hostile, "hostile").glob("*.html"))
    assert {p.name for p in reports} >= {"01_eda.html", "01_eda.full.html", "03_evaluate.html", "index.html"}
    reports.append(reports_index(hostile))  # the listing of every params file's latest run
    for path in reports:
        text = path.read_text()
        assert not LIVE.search(text), f"{path.name}: {LIVE.search(text).group(0)}"
        assert not data_scripts(text), f"{path.name}: {data_scripts(text)}"
        assert not data_handlers(text), f"{path.name}: {data_handlers(text)}"
    # the labels are shown, as text
    eda = (reports_dir(hostile, "hostile") / "01_eda.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in eda
    assert "Look here: &lt;script&gt;alert(3)" in eda


def test_summary_markdown_shows_the_labels_as_text(hostile):
    summary = (reports_dir(hostile, "hostile") / "summary.md").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in summary  # reached the per-class table
    assert not script_tags(summary)
    assert not re.search(r"<[a-z][^>]*\bon[a-z]+\s*=", summary, re.IGNORECASE)
    assert "<img" not in summary.lower()


LIVE_PAYLOADS_JS = """() => ({
        scripts: [...document.querySelectorAll('script')].filter(
            s => /alert\\(/.test(s.textContent)).length,
        handlers: [...document.querySelectorAll('*')].filter(
            e => [...e.attributes].some(a => /^on/i.test(a.name) && /alert/.test(a.value))).length,
        imgs: [...document.querySelectorAll('img')].filter(i => i.getAttribute('src') === 'x').length,
    })"""


@pytest.mark.browser
def test_dashboard_shows_markup_as_text_and_runs_none(hostile, browser, tmp_path):
    server = start(
        "hostile-dashboard",
        ["dashboard", "PORT={port}", f"PARAMS={hostile / 'params' / 'hostile.yaml'}"],
        base_env(hostile),
        tmp_path,
    )
    dialogs = []
    try:
        with own_page(browser) as page:
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(server.url + "/")
            page.wait_for_selector(".nbops-predict", state="visible", timeout=120_000)
            page.locator(".nbops-input-Sex select").select_option(SCRIPT_CATEGORY)
            page.click(".nbops-predict")
            page.wait_for_selector(".nbops-result-box .nbops-bars", timeout=60_000)
            text = page.inner_text("body")
            # the payload is on the page, as text: in the bars, the confusion matrix and the dropdown
            assert SCRIPT_LABEL in page.inner_text(".nbops-result-box")
            assert IMG_LABEL in page.inner_text(".nbops-card")
            assert SCRIPT_CATEGORY in page.inner_text(".nbops-input-Sex")
            assert "Traceback" not in text
            live = page.evaluate(LIVE_PAYLOADS_JS)
            page.wait_for_timeout(500)
    finally:
        server.stop()
    assert live == {"scripts": 0, "handlers": 0, "imgs": 0}, live
    assert dialogs == []


# ------------------------------------------------------------------ tables refused before any kernel


def _decimal_comma(df):
    lines = df.to_csv(index=False).splitlines()
    lines[1] = lines[1].replace(".", ",")  # Na_to_K 14.904 -> 14,904, unquoted: one field too many
    return "\n".join(lines) + "\n"


def _one_class(df):
    return df.assign(Drug="drugY").to_csv(index=False)


def _empty_feature(df):
    return df.assign(Age=None).to_csv(index=False)


def _other_tables_labels(df):
    return df.assign(Drug=["yes" if i % 3 else "no" for i in range(len(df))]).to_csv(index=False)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            _decimal_comma,
            "data/raw/bad.csv: line 2: expected 6 fields, found 7 (a decimal comma such as 14,5? "
            "write 14.5, or quote the value)",
        ),
        (
            _one_class,
            "data/raw/bad.csv: column 'Drug' has the single value 'drugY' in every row (120 rows); "
            "a classifier needs at least two classes",
        ),
        (
            _empty_feature,
            "data/raw/bad.csv: column 'Age' is empty in every row (120 rows); "
            "fill it or remove it from data.numeric",
        ),
        (
            _other_tables_labels,
            "data/raw/bad.csv: column 'Drug': no row has a label from data.classes "
            "['drugA', 'drugB', 'drugC', 'drugX', 'drugY'] (found 'no', 'yes'); "
            "delete data.classes or list this table's labels",
        ),
    ],
    ids=["decimal-comma", "one-class", "empty-feature", "other-tables-labels"],
)
def test_table_that_would_train_a_wrong_model_is_refused_before_any_kernel(tmp_path, make, expected):
    import pandas as pd

    from nbops.ml.synthetic import write_synthetic_table

    root = make_project(tmp_path / "project")
    base = pd.read_csv(write_synthetic_table(root / "data" / "raw" / "base.csv", 120, 42, 0.0))
    (root / "data" / "raw" / "bad.csv").write_text(make(base))

    def edit(p):
        p["data"]["path"] = "data/raw/bad.csv"
        del p["data"]["synthetic"]

    write_params(root, "bad", edit)
    res = nbops(root, "run", "--params", "params/bad.yaml", timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.splitlines() == [f"error: {expected}"]
    assert "started" not in res.stdout, "no step may start on such a table"
    assert not (root / "mlflow").exists(), "nothing may reach the registry"
    assert not (build_dir(root, "bad") / "02_train").exists()


# ------------------------------------------------------------------ bounded reading


def _nul_past_the_first_mb(df):
    text = df.to_csv(index=False)
    rows = text.splitlines()
    body = "\n".join(rows[1:])
    lines = [rows[0]] + [body] * (1 + (1 << 20) // len(body))  # well past the header's first MB
    lines.append("23,F,HIGH,HIGH,2\x005.355,drugY")
    return "\n".join(lines) + "\n", len("\n".join(lines).splitlines())


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda df: ("Age," * (1 << 19), None), "data/raw/bad.csv: line 1 (the header) is longer than 1 MB"),
        (_nul_past_the_first_mb, "data/raw/bad.csv: not a text CSV file (binary content at line {line})"),
    ],
    ids=["header-without-end", "nul-past-the-first-mb"],
)
def test_unbounded_lines_and_late_nuls_are_one_line_in_bounded_memory(tmp_path, make, expected):
    import pandas as pd

    from nbops.ml.synthetic import write_synthetic_table
    from tests.faults.test_bounds import nbops_bounded, nothing_registered

    root = make_project(tmp_path / "project")
    base = pd.read_csv(write_synthetic_table(root / "data" / "raw" / "base.csv", 120, 42, 0.0))
    text, line = make(base)
    (root / "data" / "raw" / "bad.csv").write_text(text)

    def edit(p):
        p["data"]["path"] = "data/raw/bad.csv"
        del p["data"]["synthetic"]

    write_params(root, "bad", edit)
    res = nbops_bounded(root, "run", "--params", "params/bad.yaml", mem_mb=2048, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stderr.splitlines() == [f"error: {expected.format(line=line)}"]
    assert "started" not in res.stdout and nothing_registered(root)
