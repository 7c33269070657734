"""reports/: sanitised HTML of every executed notebook (a reviewer view without code and a full
view), index.html linking them, metrics.json, and summary.md made for a PR comment.

Everything that came from data (labels, values, error text) is escaped: it is shown as text,
never as markup, in HTML and in Markdown alike.
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbops.runner import Plan, RunResult

SUMMARY_LIMIT = 60_000
SUMMARY_MARKER = "<!-- nbops-summary -->"
TITLES = {"01_eda": "Exploratory data analysis", "02_train": "Train", "03_evaluate": "Evaluate and gate"}
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~!])")


def md_escape(value) -> str:
    """Text for a Markdown table cell: no markup, no HTML, one line."""
    text = html.escape(str(value), quote=True)
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return " ".join(text.split())


def cap_markdown(body: str, limit: int = SUMMARY_LIMIT, link: str | None = None) -> str:
    """Cut a Markdown body to `limit` characters at a line break, saying so."""
    if len(body) <= limit:
        return body
    note = "\n\n…cut: the full summary is too long for a comment"
    note += f"; read it in the [reports artifact]({link})." if link else "; read it in the reports."
    cut = body[: limit - len(note)]
    cut = cut[: cut.rfind("\n")] if "\n" in cut else cut
    return cut + note


# ------------------------------------------------------------------ HTML of notebooks


# What notebook HTML (markdown cells, DataFrame tables, rich outputs) may keep. nbconvert's own
# `clean_html` filter allows so few tags that headings, paragraphs and table headers end up as
# escaped text; this list keeps formatting and tables, and still no script, style, iframe,
# form, image or event attribute: anything else is shown as text.
SAFE_TAGS = frozenset(
    {
        "a",
        "abbr",
        "b",
        "blockquote",
        "br",
        "caption",
        "code",
        "col",
        "colgroup",
        "dd",
        "del",
        "details",
        "div",
        "dl",
        "dt",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "kbd",
        "li",
        "ol",
        "p",
        "pre",
        "s",
        "samp",
        "small",
        "span",
        "strong",
        "sub",
        "summary",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "u",
        "ul",
    }
)
SAFE_ATTRIBUTES = {
    "*": ["class", "id", "title"],
    "a": ["href", "title", "class"],
    "td": ["colspan", "rowspan", "class"],
    "th": ["colspan", "rowspan", "class"],
}
SAFE_URL_SCHEMES = frozenset({"http", "https", "mailto"})
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>.*?</style>", re.IGNORECASE | re.DOTALL)
_TAG_START = re.compile(r"<(?=/?([A-Za-z][A-Za-z0-9:-]*))")


def _escape_unsafe_tags(text: str) -> str:
    """`<` of every tag not in SAFE_TAGS as `&lt;`: a `<script>` in a label is read as text."""
    return _TAG_START.sub(lambda m: "<" if m.group(1).lower() in SAFE_TAGS else "&lt;", text)


def clean_html(element) -> str:
    """Sanitise HTML with nh3 (ammonia) and SAFE_TAGS: nbconvert's `clean_html` filter.

    Before nh3, pandas' `<style scoped>` blocks are dropped and tags outside SAFE_TAGS escaped,
    so they show as text rather than vanish; both are cosmetic. nh3, after them, is what keeps
    markup from running: it drops every attribute not in SAFE_ATTRIBUTES and links whose scheme
    is not in SAFE_URL_SCHEMES, whatever the escaping step missed."""
    import nh3

    text = element.decode() if isinstance(element, bytes) else str(element)
    return nh3.clean(
        _escape_unsafe_tags(_STYLE_BLOCK.sub("", text)),
        tags=set(SAFE_TAGS),
        attributes={tag: set(names) for tag, names in SAFE_ATTRIBUTES.items()},
        url_schemes=set(SAFE_URL_SCHEMES),
        strip_comments=True,
    )


def render_notebook_html(notebook: Path, out: Path, with_code: bool) -> Path:
    """nbconvert HTML with sanitize_html on: no <script>, no on*= from outputs or markdown."""
    from nbops.preload import skip_unused_imports

    skip_unused_imports()
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="lab",
        filters={"clean_html": clean_html},
        sanitize_html=True,
        embed_images=False,
        exclude_input=not with_code,
        exclude_input_prompt=not with_code,
        exclude_output_prompt=not with_code,
    )
    nb = nbformat.read(notebook, as_version=4)
    body, _ = exporter.from_notebook_node(nb)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(out)
    return out


def _fresh(html_file: Path, source: Path) -> bool:
    return html_file.exists() and html_file.stat().st_mtime >= source.stat().st_mtime


# ------------------------------------------------------------------ summary.md


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _delta(value) -> str:
    return "–" if value is None else f"{value:+.4f}"


VERDICT_ICON = {"promote": "✅", "keep champion": "⏸️", "reject": "❌", "not promoted (promote: false)": "🔎"}


def summary_markdown(
    evaluation: dict | None,
    failure=None,
    statuses: dict | None = None,
    link_prefix: str = "",
    commit: str | None = None,
) -> str:
    """The PR-comment body: verdict first, then metrics, per-class F1, confusion, params diff,
    data and commit."""
    lines = [SUMMARY_MARKER]
    at = f"Commit: {md_escape(commit)}" if commit else ""
    links = " · ".join(
        f"[{TITLES[s]}]({link_prefix}{s}.html)"
        for s in TITLES
        if (statuses or {}).get(s) in ("ran", "skipped", "failed")
    )
    if failure is not None:
        lines += [
            f"## ❌ Pipeline failed at {md_escape(failure.step)}"
            + (f", cell {failure.cell_index}" if failure.cell_index is not None else ""),
            "",
            f"{md_escape(failure.ename)}: {md_escape(failure.evalue)}"
            if failure.ename
            else md_escape(failure.evalue),
            "",
            "No alias was moved. The executed notebook, with the failing cell, is in the reports.",
            "",
            *([at, ""] if at else []),
            f"Reports: {links}" if links else "",
        ]
        return cap_markdown("\n".join(lines).rstrip() + "\n")
    if evaluation is None:
        lines += [
            "## Pipeline ran without an evaluation step",
            "",
            *([at, ""] if at else []),
            f"Reports: {links}",
        ]
        return cap_markdown("\n".join(lines) + "\n")

    name = md_escape(evaluation["model_name"])
    decision = evaluation["decision"]
    chal = evaluation["challenger"]
    champ = evaluation.get("champion") or {}
    cm, pm = chal["metrics"], champ.get("metrics")
    verdict = decision["verdict"]
    head = f"## {VERDICT_ICON.get(verdict, '')} Gate: {md_escape(verdict)}"
    if decision["promote"]:
        head += f": {name} v{chal['version']} is the new champion"
    lines += [head, ""]
    lines += [f"- {md_escape(r)}" for r in decision["reasons"]]
    champ_col = f"champion v{champ['version']}" if champ.get("version") else "champion (none)"
    lines += ["", f"| metric | challenger v{chal['version']} | {champ_col} | Δ |", "|---|---:|---:|---:|"]
    for metric in ("accuracy", "macro_f1", "weighted_f1"):
        p = pm[metric] if pm else None
        lines.append(
            f"| {metric} | {_fmt(cm[metric])} | {_fmt(p)} | {_delta(None if p is None else cm[metric] - p)} |"
        )
    if champ.get("error"):
        lines += ["", f"Champion not scored: {md_escape(champ['error'])}"]

    lines += [
        "",
        "### Per-class F1",
        "",
        "| class | support | challenger | champion | Δ |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, v in cm["per_class"].items():
        p = pm["per_class"].get(label, {}).get("f1") if pm else None
        lines.append(
            f"| {md_escape(label)} | {v['support']} | {_fmt(v['f1'])} | {_fmt(p)} | "
            f"{_delta(None if p is None else v['f1'] - p)} |"
        )

    labels = cm["labels"]
    lines += [
        "",
        f"### Confusion matrix, challenger v{chal['version']} (rows: actual, columns: predicted)",
        "",
        "| actual \\\\ predicted | " + " | ".join(md_escape(x) for x in labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for label, row in zip(labels, cm["confusion_matrix"], strict=True):
        lines.append(f"| **{md_escape(label)}** | " + " | ".join(str(n) for n in row) + " |")

    diff = evaluation.get("params_diff") or {}
    if diff:
        lines += [
            "",
            "### Params that differ from the champion's",
            "",
            "| param | champion | challenger |",
            "|---|---|---|",
        ]
        lines += [f"| {md_escape(k)} | {md_escape(a)} | {md_escape(b)} |" for k, (a, b) in diff.items()]
    data = evaluation["data"]
    kind = " (SYNTHETIC)" if data.get("synthetic") else ""
    lines += [
        "",
        f"Data: {md_escape(data['source'])}{kind} · sha256 {md_escape(str(data['hash'])[:12])} · "
        f"{data['holdout_rows']} held-out rows",
    ]
    if at:
        lines += ["", at]
    if links:
        lines += ["", f"Reports: {links} · [index]({link_prefix}index.html)"]
    return cap_markdown("\n".join(lines) + "\n")


# ------------------------------------------------------------------ index.html

METRICS = ("accuracy", "macro_f1", "weighted_f1")


def run_facts(plan: Plan, statuses: dict[str, str], evaluation: dict | None) -> dict:
    """What this run trained, on what, at which commit, from the plan and the build products:
    the model and hyperparameters, the registered version (when 02_train ran or was current),
    the data file, its row count and whether it is synthetic, and the other reports."""
    from nbops.products import read_json

    model = plan.params.model
    root = plan.root
    data_path = plan.data_path
    facts = {
        "model": {"name": model.name, "params": dict(model.params), "cv_folds": model.cv_folds},
        "registered": None,
        "data": {
            "path": str(data_path.relative_to(root) if data_path.is_relative_to(root) else data_path),
            "synthetic": bool(plan.synthetic),
            "hash": plan.data_hash,
            "rows": None,
            "train_rows": None,
            "holdout_rows": None,
        },
        "commit": getattr(plan, "git_commit", "unknown"),
        "links": other_reports(plan.reports),
    }
    train = plan.build / "02_train"
    if statuses.get("02_train") in ("ran", "skipped") and (train / "model.json").is_file():
        registered = read_json(train / "model.json")
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


def other_reports(reports: Path) -> list[tuple[str, str]]:
    """(text, relative link) of the drift report (`make drift`) and every sweep report
    (`make sweep`) that exist beside this index."""
    from urllib.parse import quote

    links = [("drift report", "drift.html")] if (reports / "drift.html").is_file() else []
    links += [
        (f"sweep {index.parent.name}", f"sweep/{quote(index.parent.name)}/index.html")
        for index in sorted((reports / "sweep").glob("*/index.html"))
    ]
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
    rows.append(("commit", f"<code>{esc(str(facts['commit']))}</code>"))
    return (
        "<table class='facts'>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    )


def _metrics_html(evaluation: dict) -> str:
    esc = html.escape
    chal = evaluation["challenger"]
    champ = evaluation.get("champion") or {}
    cm, pm = chal["metrics"], champ.get("metrics")
    champ_col = f"champion v{champ['version']}" if champ.get("version") else "champion (none)"
    head = (
        f"<tr><th>metric</th><th>challenger v{esc(str(chal['version']))}</th>"
        f"<th>{esc(champ_col)}</th><th>Δ</th></tr>"
    )
    body = []
    for metric in METRICS:
        p = pm[metric] if pm else None
        body.append(
            f"<tr><td>{metric}</td><td class='num'>{_fmt(cm[metric])}</td><td class='num'>{_fmt(p)}</td>"
            f"<td class='num'>{_delta(None if p is None else cm[metric] - p)}</td></tr>"
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
    executed = build / step / f"{step}.ipynb"
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


def render_reports(plan: Plan, result: RunResult) -> Path:
    """Write reports/ from the build folder; a failed step's notebook is rendered too."""
    from nbops.products import write_json

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
    metrics = plan.build / "03_evaluate" / "metrics.json"
    if result.failure is None and statuses["03_evaluate"] in ("ran", "skipped") and metrics.exists():
        from nbops.products import read_json

        evaluation = read_json(metrics)
        write_json(reports / "metrics.json", evaluation)
    else:
        (reports / "metrics.json").unlink(missing_ok=True)
    commit = getattr(plan, "git_commit", "unknown")  # Plan.git_commit: the runner's provenance
    (reports / "summary.md").write_text(
        summary_markdown(evaluation, result.failure, statuses, commit=commit), encoding="utf-8"
    )
    facts = run_facts(plan, statuses, evaluation)
    (reports / "index.html").write_text(
        index_html(statuses, evaluation, result.failure, facts), encoding="utf-8"
    )
    return reports
