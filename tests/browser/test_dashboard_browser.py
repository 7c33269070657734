"""The dashboard in a real browser: `make dashboard` (tracking store) and `make space-serve`
(exported champion, the Space's own Dockerfile CMD) must show the champion's predictions."""

from __future__ import annotations

import csv
import io
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.processes import KERNEL_PARENT, kernel_processes
from nbops.layout import SPACE_VENV_DIR, build_root
from tests.browser.conftest import REPO, base_env, copy_space, own_page, start
from tests.conftest import copy_project

pytestmark = pytest.mark.browser

WIDGETS = ".nbops-predict"


def open_dashboard(page, url: str) -> float:
    """Load the page and wait for the inputs; returns seconds from navigation to usable widgets."""
    start_s = time.perf_counter()
    page.goto(url + "/")
    page.wait_for_selector(WIDGETS, state="visible", timeout=120_000)
    return time.perf_counter() - start_s


def update_count(page, panel: str) -> int:
    node = page.query_selector(f".nbops-{panel} .nbops-update")
    return int(node.get_attribute("data-update")) if node else 0


def wait_update(page, panel: str, before: int) -> None:
    page.wait_for_function(
        """([panel, before]) => {
            const n = document.querySelector(`.nbops-${panel} .nbops-update`);
            return n && Number(n.dataset.update) > before;
        }""",
        arg=[panel, before],
        timeout=60_000,
    )


def set_inputs(page, row: dict, schema: dict) -> None:
    for col in schema["numeric"]:
        box = page.locator(f".nbops-input-{col} input")
        box.fill(str(row[col]))
        box.press("Tab")  # number boxes send their value on blur
    for col in schema["categorical"]:
        page.locator(f".nbops-input-{col} select").select_option(str(row[col]))


def predict(page) -> str:
    before = update_count(page, "result-box")
    page.click(WIDGETS)
    wait_update(page, "result-box", before)
    return page.inner_text(".nbops-result-box .nbops-label").strip()


def upload(page, name: str, content: bytes, mime: str = "text/csv") -> str:
    before = update_count(page, "batch")
    # FileUpload keeps its <input type=file> out of the DOM: go through the chooser, as a user does
    with page.expect_file_chooser() as chooser:
        page.click(".nbops-upload")
    chooser.value.set_files(files=[{"name": name, "mimeType": mime, "buffer": content}])
    wait_update(page, "batch", before)
    return page.inner_text(".nbops-batch")


def schema_of(space_dir) -> dict:
    return json.loads((space_dir / "champion" / "schema.json").read_text())


def sample_rows(champion_project, schema, model, n=4) -> list[dict]:
    """Rows of the training data inside the schema's ranges, covering several predicted labels."""
    df = pd.read_csv(champion_project / "data" / "raw" / "drug-smoke-synthetic.csv")
    for col, info in schema["numeric"].items():
        df = df[df[col].between(info["min"], info["max"])]
    features = [*schema["numeric"], *schema["categorical"]]
    df = df.assign(expected=model.predict(df[features]))
    picked = df.groupby("expected").head(1).head(n)
    assert picked["expected"].nunique() >= 3, "the smoke champion should predict several labels"
    return picked.to_dict("records")


def test_predict_shows_the_champions_label(
    server, page, space_dir, champion_project, exported_model, screenshots, record_property
):
    schema = schema_of(space_dir)
    to_widgets = open_dashboard(page, server.url)
    record_property("page_to_widgets_s", round(to_widgets, 2))
    assert page.locator(".nbops-input").count() == len(schema["numeric"]) + len(schema["categorical"])
    latencies = []
    for row in sample_rows(champion_project, schema, exported_model):
        set_inputs(page, row, schema)
        start_s = time.perf_counter()
        shown = predict(page)
        latencies.append(time.perf_counter() - start_s)
        assert shown == row["expected"], f"row {row}: page shows {shown!r}"
        bars = page.inner_text(".nbops-result-box .nbops-bars")
        for label in schema["classes"]:
            assert label in bars
    card = page.inner_text(".nbops-card")
    model_card = json.loads((space_dir / "champion" / "model_card.json").read_text())
    assert f"{model_card['name']} v{model_card['version']}" in card
    assert "accuracy" in card and "Confusion matrix" in card
    timings = {
        "server": server.name,
        "page_to_widgets_s": round(to_widgets, 2),
        "predict_round_trip_s": [round(x, 3) for x in latencies],
    }
    (screenshots / f"timings-{server.name}.json").write_text(json.dumps(timings, indent=2))
    print(timings)
    page.screenshot(path=str(screenshots / f"{server.name}.png"), full_page=True)


def test_the_space_runs_in_its_slim_environment(space_server, page):
    """`make space-serve` serves from build/space-venv, which holds the Space's requirements.txt
    and nothing else: the page works there, and Voila and its kernels are that venv's Python."""
    open_dashboard(page, space_server.url)  # a kernel has run the notebook
    slim = (build_root(REPO) / SPACE_VENV_DIR).resolve()
    commands = live_commands(space_server.proc.pid)
    pythons = {pid: Path(cmd[0]) for pid, cmd in commands.items() if "python" in Path(cmd[0]).name}
    kernels = {k.pid: k.cmdline() for k in kernel_processes(space_server.proc.pid)}
    # forked from the server's kernel parent (deploy/voila/voila.json), in the slim environment too
    assert kernels and all(KERNEL_PARENT in cmd for cmd in kernels.values()), kernels
    for pid, exe in pythons.items():
        assert exe.is_relative_to(slim), f"pid {pid} runs {exe}, not the Space's own environment"
    installed = {d.metadata["Name"].lower() for d in _distributions(slim)}
    assert "mlflow" not in installed and "pytest" not in installed


def live_commands(pid: int) -> dict[int, list[str]]:
    """Command lines of the processes under `pid`, leaving out any that exit while they are read
    (a kernel whose tab was just closed is shut down, and a zombie for a moment)."""
    import psutil

    commands = {}
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            cmd = proc.cmdline()
        except psutil.Error:
            continue
        if cmd:
            commands[proc.pid] = cmd
    return commands


def _distributions(venv: Path):
    from importlib import metadata

    return metadata.distributions(path=[str(p) for p in venv.glob("lib/python*/site-packages")])


def test_batch_upload_lists_the_bad_row_and_scores_the_rest(
    server, page, space_dir, exported_model, screenshots
):
    schema = schema_of(space_dir)
    open_dashboard(page, server.url)
    rows = [
        {"Age": 30, "Sex": "F", "BP": "HIGH", "Cholesterol": "NORMAL", "Na_to_K": 25.0},
        {"Age": 61, "Sex": "M", "BP": "LOW", "Cholesterol": "HIGH", "Na_to_K": 9.5},
        {"Age": "forty", "Sex": "F", "BP": "NORMAL", "Cholesterol": "HIGH", "Na_to_K": 11.0},  # row 4
        {"Age": 45, "Sex": "m", "BP": "normal", "Cholesterol": "NORMAL", "Na_to_K": 12.0},
        {"Age": 500, "Sex": "F", "BP": "NORMAL", "Cholesterol": "HIGH", "Na_to_K": 11.0},  # row 6
    ]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    text = upload(page, "patients.csv", buf.getvalue().encode())
    assert "4 of 5 rows scored (1 with warnings, listed below); 1 row with problems not scored" in text
    problems = page.inner_text(".nbops-problems tbody")
    assert problems.split("\t") == ["4", "Age", "'forty'", "is not a number"], problems
    warnings = page.inner_text(".nbops-warnings tbody")
    low, high = schema["numeric"]["Age"]["min"], schema["numeric"]["Age"]["max"]
    assert warnings.split("\t") == ["6", "Age", "'500'", f"is outside the training range {low:g} to {high:g}"]
    with page.expect_download() as info:
        page.click(".nbops-download")
    scored = pd.read_csv(info.value.path(), keep_default_na=False)
    assert scored["row"].tolist() == [2, 3, 5, 6]
    assert scored["warnings"].tolist() == [
        "",
        "",
        "",
        f"Age '500' is outside the training range {low:g} to {high:g}",
    ]
    good = pd.DataFrame([rows[0], rows[1], {**rows[3], "Sex": "M", "BP": "NORMAL"}, rows[4]])
    features = [*schema["numeric"], *schema["categorical"]]
    assert scored["prediction"].tolist() == exported_model.predict(good[features]).tolist()
    page.screenshot(path=str(screenshots / f"{server.name}-batch.png"), full_page=True)


HEADER = b"Age,Sex,BP,Cholesterol,Na_to_K\n"
BAD_UPLOADS = [  # (file name, content, what the page must say)
    # what the model takes (it imputes, the encoder ignores an unseen category) is scored and flagged
    ("nan.csv", HEADER + b"40,F,HIGH,HIGH,NaN\n", ["1 of 1 row scored", "2\tNa_to_K\t(empty)\tis missing"]),
    ("range.csv", HEADER + b"40,F,HIGH,HIGH,1000\n", ["2\tNa_to_K\t'1000'\tis outside the training range"]),
    ("category.csv", HEADER + b"40,F,MEDIUM,HIGH,20\n", ["2\tBP\t'MEDIUM'\tis not one of HIGH, LOW, NORMAL"]),
    # what it cannot take is refused
    ("text.csv", HEADER + b"forty,F,HIGH,HIGH,20\n", ["2\tAge\t'forty'\tis not a number"]),
    ("short.csv", HEADER + b"40,F,HIGH,20\n", ["0 of 1 row scored", "2\t\t\thas 4 fields; the header has 5"]),
    ("empty.csv", b"", ["This file cannot be scored", "empty.csv: the file is empty"]),
    ("header.csv", HEADER, ["header.csv: has a header but no data rows"]),
    (
        "photo.csv",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        ["photo.csv: not a CSV text file (binary content)"],
    ),
    (  # binary after a valid header and rows: still not a CSV
        "tail.csv",
        HEADER + b"40,F,HIGH,HIGH,20\n" * 300 + bytes(range(32)) * 200,
        ["tail.csv: not a CSV text file (binary content)"],
    ),
    (
        "latin1.csv",
        HEADER + "40,F,HIGH,HIGH,20 \xb5\n".encode("latin-1"),
        ["latin1.csv: not a CSV text file (not UTF-8"],
    ),
    ("notes.txt", b"just some notes\nnot a table\n", ["notes.txt: missing columns 'Age', 'Na_to_K'"]),
]


def test_bad_uploads_get_a_clear_message_and_the_kernel_survives(dashboard_server, page):
    open_dashboard(page, dashboard_server.url)
    for name, content, messages in BAD_UPLOADS:
        text = upload(page, name, content)
        for message in messages:
            assert message in text, f"{name}: {text!r}"
        assert "Traceback" not in text and "Exception" not in text
    # the kernel is alive: a prediction still answers
    assert predict(page)


def test_an_upload_over_the_limit_is_refused_on_the_page_and_the_websocket_stays_up(server, page):
    """A 12 MB file passed tornado's default 10 MiB websocket message limit: the websocket was
    closed, the page said nothing and the 5 MB check never ran. The server now takes messages up
    to 16 MiB (voila.json), so the dashboard answers with the size and the limit, on the page."""
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws))
    open_dashboard(page, server.url)
    assert "Files up to 5 MB." in page.inner_text(".nbops-batch-panel")
    row = b"40,F,HIGH,HIGH,20\n"
    content = HEADER + row * ((12 * 2**20 - len(HEADER)) // len(row))
    content += b" " * (12 * 2**20 - len(content))
    text = upload(page, "big.csv", content)
    assert "big.csv: the file is 12.0 MB; the limit is 5 MB" in text, text
    channels = [ws for ws in sockets if "/channels" in ws.url]
    assert channels and not [ws.url for ws in channels if ws.is_closed()]
    assert predict(page)  # the same kernel, still connected, still answers


def test_closing_the_tab_frees_its_kernel(dashboard_server, browser):
    """Voila's page asks for its kernel's shutdown when it unloads; with the preheated pool
    that request lacked its XSRF cookie and got 403, so a closed tab held its kernel (and a
    place under the caps) until the 15-minute idle cull."""
    from tests.browser.conftest import KERNEL_ID_JS, close_tab, kernel_status

    with own_page(browser) as tab:
        open_dashboard(tab, dashboard_server.url)
        kernel_id = tab.evaluate(KERNEL_ID_JS)
        assert kernel_status(dashboard_server.url, kernel_id) == 200
        assert close_tab(tab, timeout=15) == kernel_id  # gone: GET /api/kernels/<id> is 404


# The page views a script makes here come from a visitor of their own behind the proxy (a
# documentation address, RFC 5737): their kernels, never connected, hold that address's places
# for 60 s, not those of the browser pages the next tests open from 127.0.0.1.
SCRIPT_VISITOR = {"X-Forwarded-For": "203.0.113.21"}


def get(url: str) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=SCRIPT_VISITOR)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


SECRET_PATHS = [
    "/dashboard.ipynb",
    "/notebooks/dashboard.ipynb",
    "/voila/files/dashboard.ipynb",
    "/voila/render/dashboard.ipynb",
    "/files/dashboard.ipynb",
    "/tree",
    "/voila/tree",
    "/src/nbops/serve/dashboard.py",
    "/voila/files/src/nbops/serve/dashboard.py",
    "/voila/files/../src/nbops/serve/dashboard.py",
    "/voila/files/%2e%2e/src/nbops/serve/space.py",
    "/voila/static/../../src/nbops/serve/dashboard.py",
    "/static/../notebooks/dashboard.ipynb",
    "/static/..%2f..%2fsrc/nbops/serve/dashboard.py",
    "/voila/templates/lab/static/../../../../../../etc/passwd",
    "/mlflow/mlflow.db",
    "/voila/files/mlflow/mlflow.db",
    "/voila/files/../mlflow/mlflow.db",
    "/voila/files/champion/model/model.skops",
    "/voila/files/champion/model_card.json",
    "/api/kernels",
    "/api/contents",
    "/api/contents/dashboard.ipynb",
    "/voila/api/contents",
    "/api/sessions",
    "/api/kernelspecs",
    "/voila.json",
    "/voila/files/voila.json",
]
# Bytes that only appear when a file's content leaks.
LEAK_MARKERS = [
    b"build_app",
    b"def ",
    b"import ",
    b"SQLite format 3",
    b"root:x:",
    b'"execution_state"',
    b'"type": "directory"',
    b'"last_modified"',
    b"skops",
    b"file_allowlist",
    b"Traceback",
]


def test_no_source_store_or_api_is_served(server):
    status, headers, body = get(server.url + "/")
    assert status == 200
    csp = headers.get("Content-Security-Policy", "")
    assert "frame-ancestors" in csp and "https://huggingface.co" in csp and "https://*.hf.space" in csp
    for marker in (b"build_app", b"Traceback"):
        assert marker not in body
    for path in SECRET_PATHS:
        # urllib normalises nothing and follows redirects (to the page itself, at worst)
        status, _, body = get(server.url + path)
        leaked = [m.decode() for m in LEAK_MARKERS if m in body]
        assert not leaked, f"GET {path} -> {status} leaks {leaked}"


def test_page_has_no_code_or_stray_output(dashboard_server, page):
    open_dashboard(page, dashboard_server.url)
    assert page.locator(".jp-InputArea, .jp-CodeMirrorEditor, .cm-editor").count() == 0
    assert page.locator("[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
    assert page.locator(".jp-RenderedText").count() == 0
    body = page.inner_text("body")
    assert "build_app" not in body and "Traceback" not in body
    assert page.locator(".nbops-header h1").inner_text().strip()


def test_broken_model_shows_a_friendly_page(champion_project, space_dir, browser, tmp_path):
    broken = copy_space(space_dir, tmp_path / "space")
    (broken / "champion" / "model" / "model.skops").write_bytes(b"this is not a skops file")
    env = base_env(champion_project)
    env["NBOPS_MODEL_DIR"] = str(broken / "champion")
    server = start("broken", ["dashboard", "PORT={port}"], env, tmp_path)
    try:
        with own_page(browser) as page:
            page.goto(server.url + "/")
            page.wait_for_selector(".nbops-status", timeout=120_000)
            text = page.inner_text("body")
            assert "The model could not be loaded" in text
            assert "Traceback" not in text and 'File "' not in text and "BadZipFile" not in text.split("(")[0]
            assert page.locator(WIDGETS).count() == 0
    finally:
        server.stop()
    assert "Traceback" in server.log.read_text()  # the details went to the server log instead


def test_no_champion_says_what_to_run(champion_project, browser, tmp_path):
    project = copy_project(champion_project, tmp_path / "project")  # the session's one stays as it is
    params = project / "params" / "nochamp.yaml"
    params.write_text(
        (project / "params" / "smoke.yaml")
        .read_text()
        .replace("model_name: drug-classifier", "model_name: never-trained")
    )
    server = start("nochamp", ["dashboard", "PORT={port}", f"PARAMS={params}"], base_env(project), tmp_path)
    try:
        with own_page(browser) as page:
            page.goto(server.url + "/")
            page.wait_for_selector(".nbops-status", timeout=120_000)
            text = page.inner_text("body")
            assert "No champion model yet for 'never-trained'" in text and "make pipeline" in text
            assert "Traceback" not in text
    finally:
        server.stop()


def test_space_folder_carries_the_license_its_readme_names(space_dir):
    front = (space_dir / "README.md").read_text().split("---")[1]
    assert "license: mit" in front.splitlines()
    assert (space_dir / "LICENSE").read_text() == (REPO / "LICENSE").read_text()
    assert (space_dir / "LICENSE").read_text().startswith("MIT License")


def test_docs_screenshot_is_committed():
    assert (REPO / "docs" / "dashboard.png").stat().st_size > 10_000


# ---------------------------------------------------------------- nothing from other origins


def use_the_page(page, url: str) -> None:
    """A visit: the page, a prediction, a batch upload and its download."""
    open_dashboard(page, url)
    predict(page)
    upload(page, "one.csv", HEADER + b"40,F,HIGH,HIGH,20\n")
    with page.expect_download():
        page.click(".nbops-download")
    page.wait_for_timeout(500)  # fonts and late styles


@pytest.mark.parametrize(
    "which",
    ["dashboard", "space"],
)
def test_the_page_loads_nothing_from_another_origin(which, request, page):
    """Voila's lab template links fontawesome from cdn.jsdelivr.net on every page (not only
    for icons); the nbops template leaves those links out. Every request of a visit goes to
    the server that served the page (data: URLs, such as the CSV download, go nowhere)."""
    server = request.getfixturevalue(f"{which}_server")
    requests, sockets = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("websocket", lambda ws: sockets.append(ws.url))
    use_the_page(page, server.url)
    origin = server.url + "/"
    elsewhere = [u for u in requests if not u.startswith((origin, "data:", "blob:"))]
    assert not elsewhere, f"the page fetched {elsewhere}"
    assert len(requests) > 20 and sockets  # the page's own scripts and its kernel were seen
    assert all(u.startswith(f"ws://127.0.0.1:{server.port}/") for u in sockets), sockets
    assert "cdn.jsdelivr.net" not in page.content()


# ---------------------------------------------------------------- the Voila server's log and kernels


def test_voila_logs_no_unencrypted_kernel_or_ping_setting_warning(server, page):
    """Kernels get CurveZMQ keys (transport_encryption 'auto'): none logs `Kernel is running
    over TCP without encryption`, and each one's connection file holds a curve key pair. Nor
    does the log carry tornado's ping-timeout clamp warning once a websocket is open."""
    open_dashboard(page, server.url)
    predict(page)  # a websocket is open and has carried messages
    page.wait_for_timeout(500)
    log = server.log.read_text()
    assert "Connecting to kernel" in log and "Kernel started" in log
    assert "without encryption" not in log, log
    assert "websocket_ping_timeout" not in log and "ping timeout" not in log, log
    # a forked kernel's command line is its kernel parent's: the server log names its connection file
    forked = dict(re.findall(r"nbops: kernel (\d+) forked for (\S+)", log))
    kernels = [k.pid for k in kernel_processes(server.proc.pid)]
    assert kernels and all(str(pid) in forked for pid in kernels), (kernels, forked)
    files = [Path(forked[str(pid)]) for pid in kernels]
    files = [f for f in files if f.exists()]  # a kernel shutting down (a closed tab's) has removed its own
    assert files, "no kernel under the server"
    for connection_file in files:
        info = json.loads(connection_file.read_text())
        assert (
            info["transport"] == "tcp" and len(info["curve_publickey"]) == len(info["curve_secretkey"]) == 40
        )


# ---------------------------------------------------------------- a penguins-like model


def test_long_labels_fit_and_the_form_starts_at_the_most_frequent_values(penguins_server, penguins, page):
    table, _, folder = penguins
    schema = json.loads((folder / "schema.json").read_text())
    open_dashboard(page, penguins_server.url)
    labels = page.evaluate(
        """() => [...document.querySelectorAll('.nbops-input .widget-label')].map(l => ({
            text: l.textContent, scroll: l.scrollWidth, width: l.clientWidth}))"""
    )
    assert [lab["text"] for lab in labels] == [*schema["numeric"], *schema["categorical"]]
    cut = [lab for lab in labels if lab["scroll"] > lab["width"]]
    assert not cut, f"labels cut off: {cut}"  # flipper_length_mm was shown as flipper_length_…
    # the most frequent values of the training table, not the alphabetically first (Biscoe, Female)
    assert page.locator(".nbops-input-island select").input_value() == table["island"].mode()[0] == "Dream"
    assert page.locator(".nbops-input-sex select").input_value() == table["sex"].mode()[0] == "Male"


PENGUIN_ROWS = (
    b"bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,island,sex\n"
    b"39.1,18.7,181,3750,Torgersen,Male\n"  # row 2
    b"45.2,16.1,NaN,4100,Dream,\n"  # row 3: a missing number, an empty category
    b"32.1,17.0,190,3600,Biscoe,Female\n"  # row 4: below the training range (33.1)
    b"46.0,deep,200,4200,Dream,Male\n"  # row 5: not a number
)


def test_batch_scores_missing_and_out_of_range_rows_and_flags_them(
    penguins_server, penguins, page, screenshots
):
    """Rows the model's pipeline takes (it imputes missing values, any number is a number) are
    scored with a `warnings` column, on the page and in the CSV; only a non-number is refused."""
    _, model, _ = penguins
    open_dashboard(page, penguins_server.url)
    text = upload(page, "penguins.csv", PENGUIN_ROWS)
    assert "3 of 4 rows scored (2 with warnings, listed below); 1 row with problems not scored" in text
    assert page.inner_text(".nbops-problems tbody").split("\t") == [
        "5",
        "bill_depth_mm",
        "'deep'",
        "is not a number",
    ]
    warned = [r.split("\t") for r in page.inner_text(".nbops-warnings tbody").splitlines()]
    assert [w[:3] for w in warned] == [
        ["3", "flipper_length_mm", "(empty)"],
        ["3", "sex", "(empty)"],
        ["4", "bill_length_mm", "'32.1'"],
    ]
    assert warned[2][3] == "is outside the training range 33.1 to 59.6"
    with page.expect_download() as info:
        page.click(".nbops-download")
    scored = pd.read_csv(info.value.path(), keep_default_na=False).set_index("row")
    assert scored.index.tolist() == [2, 3, 4]
    assert scored.loc[3, "warnings"].startswith("flipper_length_mm (empty) is missing; the model fills in ")
    assert "sex (empty) is missing; the model fills in 'Male'" in scored.loc[3, "warnings"]
    assert scored.loc[4, "warnings"] == "bill_length_mm '32.1' is outside the training range 33.1 to 59.6"
    rows = pd.read_csv(io.BytesIO(PENGUIN_ROWS)).loc[[0, 1, 2]].astype({"bill_depth_mm": float})
    assert scored["prediction"].tolist() == model.predict(rows[model.feature_names_in_]).tolist()
    look = page.evaluate(
        """() => {
            const a = getComputedStyle(document.querySelector('.nbops-download'));
            const up = document.querySelector('.nbops-upload');
            return {background: a.backgroundColor, padding: a.paddingLeft, radius: a.borderTopLeftRadius,
                    underline: a.textDecorationLine, display: a.display,
                    upload: getComputedStyle(up, '::after').content, own: getComputedStyle(up).fontSize};
        }"""
    )
    # the download link looks like a button
    assert look["background"] not in ("rgba(0, 0, 0, 0)", "transparent") and look["underline"] == "none"
    assert float(look["padding"].removesuffix("px")) >= 6 and float(look["radius"].removesuffix("px")) > 0
    assert look["display"] == "inline-block"
    # the upload button says what it does, not FileUpload's "Upload CSV (0)"
    assert look["upload"] == '"Upload another CSV"' and look["own"] == "0px", look
    page.screenshot(path=str(screenshots / "penguins-batch.png"), full_page=True)
