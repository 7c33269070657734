"""reports/index.html: the latest run of each params file (its name, when, the gate's verdict
line, a link to its own index.html) and the sweep reports.

Each run leaves reports/<name>/run.json (`run_record`); the listing is made from those files
alone, so it never imports pandas or mlflow and costs the no-op rerun next to nothing.
"""

from __future__ import annotations

import html
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nbops.layout import INDEX_FILE, RUN_RECORD, SWEEPS_REPORTS_DIR, reports_index, reports_root
from nbops.products import read_json, write_json

RECORD_KEYS = ("params", "when", "verdict")


def gate_line(decision: dict) -> str:
    """The gate's verdict line: `promote (challenger v2, champion before: v1)`."""
    before = f"v{decision['champion_version']}" if decision.get("champion_version") else "none"
    return f"{decision['verdict']} (challenger v{decision['challenger_version']}, champion before: {before})"


def verdict_line(evaluation: dict | None, failure) -> str:
    """What the run decided, in one line: the gate's, a failure's, or that there was no gate."""
    if failure is not None:
        return str(failure)  # "failed at 02_train, cell 3: ..."
    if evaluation:
        return gate_line(evaluation["decision"])
    return "no evaluation in this run"


def run_record(name: str, params: str, evaluation: dict | None, failure, when: str | None = None) -> dict:
    return {
        "name": name,
        "params": params,
        "when": when or datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "verdict": verdict_line(evaluation, failure),
        "ok": failure is None,
    }


def write_run_record(reports: Path, record: dict) -> None:
    write_json(reports / RUN_RECORD, record)


def read_run_records(root: Path) -> list[dict[str, Any]]:
    """Every reports/<name>/run.json, the newest run first; an unreadable one is left out."""
    records = []
    for file in sorted(reports_root(root).glob(f"*/{RUN_RECORD}")):
        try:
            record = read_json(file)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and all(isinstance(record.get(k), str) for k in RECORD_KEYS):
            records.append({**record, "folder": file.parent.name})
    return sorted(records, key=lambda r: str(r["when"]), reverse=True)


def sweep_reports(root: Path) -> list[str]:
    """The sweeps with a report (reports/sweep/<sweep>/index.html), by name."""
    folder = reports_root(root) / SWEEPS_REPORTS_DIR
    return [index.parent.name for index in sorted(folder.glob(f"*/{INDEX_FILE}"))]


def listing_html(records: list[dict], sweeps: list[str]) -> str:
    esc = html.escape
    rows = "".join(
        f'<tr><td><a href="{quote(r["folder"])}/{INDEX_FILE}">{esc(r["folder"])}</a></td>'
        f"<td><code>{esc(str(r['params']))}</code></td><td>{esc(str(r['when']))}</td>"
        f"<td class='{'ok' if r.get('ok') else 'failed'}'>{esc(str(r['verdict']))}</td></tr>"
        for r in records
    )
    runs = (
        "<table><tr><th>name</th><th>params file</th><th>last run</th><th>gate</th></tr>" + rows + "</table>"
        if records
        else "<p>No run yet: <code>make pipeline PARAMS=params/&lt;name&gt;.yaml</code>.</p>"
    )
    sweep_items = "".join(
        f'<li><a href="{SWEEPS_REPORTS_DIR}/{quote(s)}/{INDEX_FILE}">sweep {esc(s)}</a></li>' for s in sweeps
    )
    sweep_section = f"<h2>Sweeps</h2><ul>{sweep_items}</ul>" if sweeps else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nbops reports</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse;width:100%;margin-bottom:1rem}}
td,th{{border-bottom:1px solid #ddd;padding:.4rem;text-align:left}}
.failed{{color:#b00020;font-weight:600}}</style></head>
<body><h1>nbops reports</h1>
<h2>Params files, the latest run of each</h2>{runs}
{sweep_section}</body></html>
"""


def render_reports_index(root: Path) -> Path:
    """Write reports/index.html from the run records (only when its text changes). Runs of two
    params files may end together: the read and the write hold one lock, so the later writer
    has read the earlier one's record."""
    import fcntl

    index = reports_index(root)
    index.parent.mkdir(parents=True, exist_ok=True)
    with open(index.with_name(f".{INDEX_FILE}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        text = listing_html(read_run_records(root), sweep_reports(root))
        try:
            if index.read_text(encoding="utf-8") == text:
                return index
        except OSError:
            pass
        tmp = index.with_name(f".{INDEX_FILE}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(index)
    return index
