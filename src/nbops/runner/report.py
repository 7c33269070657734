"""reports/<name>/: sanitised HTML of every executed notebook (a reviewer view without code and
a full view), index.html linking them, metrics.json, summary.md made for a PR comment, and
run.json, this folder's line in reports/index.html (nbops.runner.reports_index).

Everything that came from data (labels, values, error text) is escaped: it is shown as text,
never as markup, in HTML and in Markdown alike.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbops.layout import (
    EVALUATE,
    EVALUATION,
    INDEX_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RUN_RECORD,
    SUMMARY_FILE,
    TITLES,
    TRAIN,
    executed_notebook,
    reports_root,
)
from nbops.runner.folders import shown_path
from nbops.runner.notebook_html import render_notebook_html
from nbops.runner.summary import fmt_delta, fmt_value, metric_rows, summary_markdown

if TYPE_CHECKING:
    from nbops.runner.plan import Plan, RunResult


def _fresh(html_file: Path, source: Path) -> bool:
    return html_file.exists() and html_file.stat().st_mtime >= source.stat().st_mtime


def run_facts(plan: Plan, statuses: dict[str, str], evaluation: dict | None) -> dict:
    """What this run trained, on what, at which commit, from the plan and the build products:
    the model and hyperparameters, the registered version (when 02_train ran or was current),
    the data file, its row count and whether it is synthetic, and the other reports."""
    from nbops.products import read_json

    model = plan.params.model
    root = plan.root
    data_path = plan.data_path
    facts: dict[str, Any] = {
        "model": {"name": model.name, "params": dict(model.params), "cv_folds": model.cv_folds},
        "registered": None,
        "data": {
            "path": shown_path(data_path, root),
            "synthetic": bool(plan.synthetic),
            "hash": plan.data_hash,
            "rows": None,
            "train_rows": None,
            "holdout_rows": None,
        },
        "params": shown_path(plan.params_file, root),
        "commit": getattr(plan, "git_commit", "unknown"),
        "links": other_reports(plan.reports, plan.root),
    }
    train = plan.build / TRAIN
    if statuses.get(TRAIN) in ("ran", "skipped") and (train / MODEL_FILE).is_file():
        registered = read_json(train / MODEL_FILE)
        facts["registered"] = {
            "name": registered["model_name"],
            "version": str(registered["version"]),
            "run_id": registered.get("run_id"),
        }
        train_rows = registered.get("schema", {}).get("rows")
        if evaluation:
            holdout_rows = evaluation["data"]["holdout_rows"]
        elif (train / "holdout.json").is_file():
            holdout_rows = len(read_json(train / "holdout.json")["holdout_ids"])
        else:
            holdout_rows = None
        if train_rows is not None and holdout_rows is not None:
            facts["data"].update(
                rows=train_rows + holdout_rows, train_rows=train_rows, holdout_rows=holdout_rows
            )
    return facts


def other_reports(reports: Path, root: Path) -> list[tuple[str, str]]:
    """(text, relative link) of the drift report (`make drift`) beside this index, and of the
    listing of every params file's latest run (reports/index.html, which lists the sweeps)
    when this folder is one of reports/<name>/."""
    links = [("drift report", "drift.html")] if (reports / "drift.html").is_file() else []
    if reports.parent == reports_root(root):
        links.append(("the latest run of every params file, and the sweeps", f"../{INDEX_FILE}"))
    return links


def _facts_html(facts: dict) -> str:
    esc = html.escape
    model = facts["model"]
    params = ", ".join(f"{k}={v}" for k, v in model["params"].items()) or "default hyperparameters"
    rows = [
        (
            "model",
            f"<code>{esc(model['name'])}</code> ({esc(params)}), {esc(str(model['cv_folds']))}-fold CV",
        )
    ]
    reg = facts["registered"]
    rows.append(
        (
            "registered",
            f"{esc(reg['name'])} v{esc(reg['version'])}"
            + (f" (run <code>{esc(str(reg['run_id']))}</code>)" if reg.get("run_id") else "")
            if reg
            else "nothing registered by this run",
        )
    )
    data = facts["data"]
    kind = "<strong class='synthetic'>SYNTHETIC</strong>" if data["synthetic"] else "real"
    rows_text = (
        f"{data['rows']} rows ({data['train_rows']} train, {data['holdout_rows']} held out)"
        if data["rows"] is not None
        else "rows not counted (no training in this run)"
    )
    rows.append(
        (
            "data",
            f"<code>{esc(data['path'])}</code> · {kind} · {esc(rows_text)} · "
            f"sha256 <code>{esc(str(data['hash'])[:12])}</code>",
        )
    )
    rows.append(("params", f"<code>{esc(str(facts['params']))}</code>"))
    rows.append(("commit", f"<code>{esc(str(facts['commit']))}</code>"))
    return (
        "<table class='facts'>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    )


def _metrics_html(evaluation: dict) -> str:
    esc = html.escape
    chal = evaluation["challenger"]
    champ = evaluation.get("champion") or {}
    champ_col = f"champion v{champ['version']}" if champ.get("version") else "champion (none)"
    head = (
        f"<tr><th>metric</th><th>challenger v{esc(str(chal['version']))}</th>"
        f"<th>{esc(champ_col)}</th><th>Δ</th></tr>"
    )
    body = []
    for label, c, p in metric_rows(evaluation):
        body.append(
            f"<tr><td>{esc(label)}</td><td class='num'>{fmt_value(c)}</td>"
            f"<td class='num'>{fmt_value(p)}</td>"
            f"<td class='num'>{fmt_delta(None if p is None else c - p)}</td></tr>"
        )
    note = f"<p>Champion not scored: {esc(str(champ['error']))}</p>" if champ.get("error") else ""
    return f"<table class='metrics'>{head}{''.join(body)}</table>{note}"


def index_html(statuses: dict[str, str], evaluation: dict | None, failure, facts: dict | None = None) -> str:
    """The reports' front page: the verdict, what was trained (run_facts), the headline metrics
    of challenger and champion, and links to every report."""
    esc = html.escape
    rows = []
    for step, title in TITLES.items():
        status = statuses.get(step, "not run")
        if status in ("ran", "skipped", "failed"):
            links = (
                f'<a href="{step}.html">report</a> · <a href="{step}.full.html">with code</a> · '
                f'<a href="notebooks/{step}.ipynb">notebook</a>'
            )
        else:
            links = "–"
        rows.append(
            f"<tr><td>{esc(title)}</td><td class='{esc(status.split()[0])}'>{esc(status)}</td>"
            f"<td>{links}</td></tr>"
        )
    if failure is not None:
        verdict = f"Failed: {esc(str(failure))}"
    elif evaluation:
        d = evaluation["decision"]
        verdict = f"Gate: {esc(d['verdict'])} (challenger v{esc(str(d['challenger_version']))})"
        verdict += "<ul>" + "".join(f"<li>{esc(r)}</li>" for r in d["reasons"]) + "</ul>"
    else:
        verdict = "No evaluation in this run."
    sections = ""
    if facts:
        sections += f"<h2>What was trained</h2>{_facts_html(facts)}"
    if evaluation:
        sections += f"<h2>Held-out metrics</h2>{_metrics_html(evaluation)}"
    more = [f'<a href="{esc(href)}">{esc(text)}</a>' for text, href in (facts or {}).get("links", [])]
    more += ['<a href="summary.md">summary.md</a>']
    more += ['<a href="metrics.json">metrics.json</a>'] if evaluation else []
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nbops reports</title>
<style>body{{font-family:system-ui,sans-serif;max-width:54rem;margin:2rem auto;padding:0 1rem;color:#222}}
table{{border-collapse:collapse;width:100%;margin-bottom:1rem}}
td,th{{border-bottom:1px solid #ddd;padding:.4rem;text-align:left}}
.facts th{{width:8rem}}.num{{text-align:right;font-variant-numeric:tabular-nums}}
.synthetic{{color:#b06000}}
.failed{{color:#b00020;font-weight:600}}.ran{{color:#137333}}.skipped{{color:#555}}</style></head>
<body><h1>nbops reports</h1><div class="verdict">{verdict}</div>
{sections}
<h2>Steps</h2>
<table><tr><th>step</th><th>status</th><th>views</th></tr>{"".join(rows)}</table>
<p>{" · ".join(more)}</p></body></html>
"""


# ------------------------------------------------------------------ all of it


def step_targets(reports: Path, step: str) -> list[Path]:
    return [reports / f"{step}.html", reports / f"{step}.full.html", reports / "notebooks" / f"{step}.ipynb"]


def render_step(build: Path, reports: Path, step: str) -> None:
    """HTML views and a copy of one step's executed notebook, unless already newer than it.
    The runner calls this as each step ends, so rendering overlaps the steps still running."""
    executed = executed_notebook(build, step)
    targets = step_targets(reports, step)
    if not executed.exists():
        for t in targets:
            t.unlink(missing_ok=True)
        return
    if not _fresh(targets[0], executed):
        render_notebook_html(executed, targets[0], with_code=False)
    if not _fresh(targets[1], executed):
        render_notebook_html(executed, targets[1], with_code=True)
    if not _fresh(targets[2], executed):
        targets[2].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(executed, targets[2])


def render_reports(plan: Plan, result: RunResult, rerender: bool = False) -> Path:
    """Write the reports folder from the build folder; a failed step's notebook is rendered too.
    `rerender` (`nbops report`): no run, so run.json keeps the time of the run it describes."""
    from nbops.products import read_json, write_json
    from nbops.runner.reports_index import run_record, write_run_record

    reports = plan.reports
    (reports / "notebooks").mkdir(parents=True, exist_ok=True)
    statuses = {}
    for step in TITLES:
        if result.failure is not None and step == result.failure.step:
            statuses[step] = "failed"
        elif step in result.not_run:
            statuses[step] = "not run"
        elif step in result.ran:
            statuses[step] = "ran"
        elif step in result.skipped:
            statuses[step] = "skipped"
        else:
            statuses[step] = "not run"
        if statuses[step] == "not run":
            for t in step_targets(reports, step):
                t.unlink(missing_ok=True)
            continue
        render_step(plan.build, reports, step)

    evaluation = None
    metrics = plan.build / EVALUATION
    if result.failure is None and statuses[EVALUATE] in ("ran", "skipped") and metrics.exists():
        evaluation = read_json(metrics)
        write_json(reports / METRICS_FILE, evaluation)
    else:
        (reports / METRICS_FILE).unlink(missing_ok=True)
    commit = getattr(plan, "git_commit", "unknown")  # Plan.git_commit: the runner's provenance
    (reports / SUMMARY_FILE).write_text(
        summary_markdown(evaluation, result.failure, statuses, commit=commit), encoding="utf-8"
    )
    facts = run_facts(plan, statuses, evaluation)
    (reports / INDEX_FILE).write_text(
        index_html(statuses, evaluation, result.failure, facts), encoding="utf-8"
    )
    if rerender and _has_run_record(reports):
        return reports  # the listing keeps what the run itself recorded (its verdict or failure)
    shown = shown_path(plan.params_file, plan.root)
    write_run_record(reports, run_record(reports.name, shown, evaluation, result.failure))
    return reports


def _has_run_record(reports: Path) -> bool:
    from nbops.products import read_json

    try:
        return "when" in read_json(reports / RUN_RECORD)
    except (OSError, ValueError, TypeError):
        return False
