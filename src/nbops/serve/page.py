"""The page's HTML: the prediction, the model card, the batch result, messages and the CSS."""

from __future__ import annotations

import base64
import html
from typing import Any

from nbops.serve.batch import BatchResult, RowProblem, _quoted, clip
from nbops.serve.predict import Prediction, number_text

SHOWN_RESULT_ROWS = 200
SHOWN_PROBLEMS = 100

TITLE = "Model dashboard"  # the page with a model says what it predicts instead


def _top(name: str, label: str) -> str:
    return " nbops-bar-top" if name == label else ""


def prediction_html(pred: Prediction) -> str:
    """The label in large type and the class probabilities as a horizontal bar chart; a
    predicted number with the model's typical error on the holdout (± RMSE)."""
    e = html.escape
    if not pred.probabilities:
        error = ""
        if pred.typical_error:
            name, value = pred.typical_error
            error = f"± {number_text(value)} (the model's {name.upper()} on its held-out rows) · "
        return (
            '<div class="nbops-result">'
            f'<div class="nbops-label">{e(pred.label)}</div>'
            f'<div class="nbops-confidence">{e(error)}answered in {pred.seconds * 1000:.0f} ms</div></div>'
        )
    top = pred.probabilities.get(pred.label, 0.0)
    bars = "".join(
        f'<div class="nbops-bar-row"><span class="nbops-bar-name">{e(name)}</span>'
        f'<span class="nbops-bar"><span class="nbops-bar-fill{_top(name, pred.label)}"'
        f' style="width:{p * 100:.1f}%"></span></span>'
        f'<span class="nbops-bar-value">{p:.0%}</span></div>'
        for name, p in pred.probabilities.items()
    )
    return (
        '<div class="nbops-result">'
        f'<div class="nbops-label">{e(pred.label)}</div>'
        f'<div class="nbops-confidence">probability {top:.0%} · '
        f"answered in {pred.seconds * 1000:.0f} ms</div>"
        f'<div class="nbops-bars" role="img" aria-label="class probabilities">{bars}</div></div>'
    )


def model_card_html(card: dict[str, Any]) -> str:
    """Name, version, when and from which commit; held-out metrics and confusion matrix."""
    e = html.escape
    metrics = card.get("metrics", {})
    metric_cells = "".join(
        f'<div class="nbops-metric"><div class="nbops-metric-value">{float(v):.3f}</div>'
        f'<div class="nbops-metric-name">{e(k.replace("_", " "))}</div></div>'
        for k, v in metrics.items()
    )
    commit = str(card.get("git_commit", "unknown"))
    facts = [
        ("model", f"{card.get('name', '?')} v{card.get('version', '?')} (alias champion)"),
        ("trained", str(card.get("trained_at", "unknown"))),
        ("commit", commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")),
        ("run", str(card.get("run_id", ""))),
        ("loaded from", str(card.get("source", ""))),
    ]
    if card.get("gate_interval"):  # the paired gate's evidence when it was promoted over a champion
        facts.append(("gate", f"{card.get('gate_verdict', '')}: {card['gate_interval']}"))
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts)
    return (
        '<div class="nbops-card"><h3>Model card</h3>'
        f'<table class="nbops-facts">{rows}</table>'
        f'<div class="nbops-metrics">{metric_cells}</div>'
        f'<div class="nbops-metrics-note">held-out rows: {e(str(card.get("holdout_rows", "?")))}</div>'
        f"{confusion_html(card.get('labels', []), card.get('confusion_matrix', []))}</div>"
    )


def confusion_html(labels: list[str], matrix: list[list[int]]) -> str:
    if not labels or not matrix:
        return ""
    e = html.escape
    peak = max((max(r) for r in matrix if r), default=1) or 1
    head = "".join(f"<th>{e(str(c))}</th>" for c in labels)
    body = ""
    for label, row in zip(labels, matrix, strict=False):
        cells = "".join(
            f'<td style="background:rgba(37,99,235,{0.08 + 0.7 * v / peak:.2f})">{int(v)}</td>' for v in row
        )
        body += f"<tr><th>{e(str(label))}</th>{cells}</tr>"
    return (
        '<table class="nbops-confusion"><caption>Confusion matrix on the holdout '
        "(rows: true, columns: predicted)</caption>"
        f"<thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _value_text(p: RowProblem) -> str:
    if not p.column:  # a whole row (its number of fields)
        return ""
    return _quoted(p.value)


def _cells_table(items: list[RowProblem], css: str, caption: str, what: str) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{p.row}</td><td>{e(clip(p.column))}</td><td>{e(_value_text(p))}</td>"
        f"<td>{e(p.problem)}</td></tr>"
        for p in items[:SHOWN_PROBLEMS]
    )
    more = f"<div>… and {len(items) - SHOWN_PROBLEMS} more</div>" if len(items) > SHOWN_PROBLEMS else ""
    return (
        f'<table class="{css}"><caption>{e(caption)}</caption>'
        f"<thead><tr><th>row</th><th>column</th><th>value</th><th>{e(what)}</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{more}"
    )


def batch_html(result: BatchResult, name: str) -> str:
    """Summary, the problems and the warnings (row, column, value, what), the first scored rows."""
    from pandas.api.types import is_numeric_dtype

    e = html.escape
    parts = [f'<div class="nbops-batch-summary">{e(name)}: {e(result.summary())}</div>']
    if result.problems:
        parts.append(
            _cells_table(
                result.problems, "nbops-problems", "Rows not scored (row 1 is the header)", "problem"
            )
        )
    if result.warnings:
        parts.append(
            _cells_table(
                result.warnings,
                "nbops-warnings",
                "Scored, but unlike the training data: read these predictions with care",
                "warning",
            )
        )
    if len(result.scored):
        shown = result.scored.head(SHOWN_RESULT_ROWS).rename_axis("row").reset_index()
        for col in shown.columns:  # long text cut on the page; the download has it whole
            if not is_numeric_dtype(shown[col]):
                shown[col] = shown[col].map(lambda v: clip(v) if isinstance(v, str) else v)
        shown.columns = [clip(str(c)) for c in shown.columns]
        table = shown.to_html(
            index=False,
            float_format=lambda v: f"{v:.3f}",
            na_rep="",
            classes="nbops-scored",
            border=0,
            escape=True,
        )
        payload = base64.b64encode(result.to_csv().encode()).decode()
        parts.append(
            f'<a class="nbops-download" download="predictions.csv" '
            f'href="data:text/csv;base64,{payload}">Download all {len(result.scored)} predictions (CSV)</a>'
        )
        if len(result.scored) > SHOWN_RESULT_ROWS:
            parts.append(f"<div>first {SHOWN_RESULT_ROWS} rows shown</div>")
        parts.append(f'<div class="nbops-scroll">{table}</div>')
    return "".join(parts)


STYLE = """<style>
.nbops-app { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
  margin: 0 auto; }
.nbops-header h1 { font-size: 1.9em; margin: 0.2em 0; }
.nbops-header p { color: #475569; margin: 0 0 0.8em 0; font-size: 1.05em; }
.nbops-panel { border: 1px solid #e2e8f0; border-radius: 10px; padding: 14px 18px; margin: 0 12px 12px 0;
  background: #fff; }
.nbops-panel h3, .nbops-card h3 { margin: 0 0 8px 0; font-size: 1.1em; color: #0f172a; }
.nbops-group { color: #64748b; font-size: 0.85em; text-transform: uppercase; letter-spacing: .05em;
  margin: 8px 0 2px 0; }
.nbops-label { font-size: 2.6em; font-weight: 700; color: #1d4ed8; line-height: 1.1; }
.nbops-result-caption { color: #64748b; font-size: 0.9em; }
.nbops-confidence { color: #475569; margin-bottom: 10px; }
.nbops-bar-row { display: flex; align-items: center; gap: 8px; margin: 3px 0; }
.nbops-bar-name { width: 7em; text-align: right; color: #334155; }
.nbops-bar { flex: 1; background: #f1f5f9; height: 14px; border-radius: 7px; overflow: hidden;
  min-width: 160px; }
.nbops-bar-fill { display: block; height: 100%; background: #94a3b8; }
.nbops-bar-top { background: #2563eb; }
.nbops-bar-value { width: 3.5em; color: #334155; }
.nbops-facts th { text-align: left; color: #64748b; font-weight: normal; padding-right: 12px; }
.nbops-metrics { display: flex; gap: 18px; margin: 10px 0 4px 0; }
.nbops-metric-value { font-size: 1.4em; font-weight: 600; }
.nbops-metric-name, .nbops-metrics-note { color: #64748b; font-size: 0.85em; }
.nbops-confusion { border-collapse: collapse; margin-top: 8px; }
.nbops-confusion td, .nbops-confusion th { padding: 3px 8px; text-align: center; border: 1px solid #e2e8f0; }
.nbops-confusion caption { color: #64748b; font-size: 0.85em; text-align: left; }
.nbops-problems, .nbops-warnings, .nbops-scored { border-collapse: collapse; margin: 8px 0;
  font-size: 0.9em; }
.nbops-scroll { overflow-x: auto; max-width: 100%; }
.nbops-scored td:last-child { min-width: 24em; }
.nbops-problems td, .nbops-problems th, .nbops-warnings td, .nbops-warnings th, .nbops-scored td,
.nbops-scored th { padding: 3px 8px; border: 1px solid #e2e8f0; }
.nbops-problems caption { text-align: left; color: #b91c1c; font-weight: 600; }
.nbops-message { padding: 12px 16px; border-radius: 8px; margin: 6px 0; }
.nbops-error { background: #fef2f2; color: #991b1b; border: 1px solid #fecaca; }
.nbops-info { background: #eff6ff; color: #1e3a8a; border: 1px solid #bfdbfe; }
.nbops-warnings caption { text-align: left; color: #92400e; font-weight: 600; }
.nbops-download { display: inline-block; margin: 8px 0; padding: 7px 16px; border-radius: 6px;
  background: #2563eb; color: #fff !important; font-weight: 600; text-decoration: none; }
.nbops-download:hover, .nbops-download:focus { background: #1d4ed8; }
.nbops-hint { color: #94a3b8; font-size: 0.85em; margin: 0 0 15px 6px; }
/* each input's label above it, at its full width */
.nbops-input.widget-inline-hbox { flex-direction: column; align-items: stretch; height: auto;
  margin-bottom: 8px; }
.nbops-input .widget-label { width: auto; max-width: none; height: auto; text-align: left;
  overflow: visible; white-space: normal; overflow-wrap: anywhere; line-height: 1.4; margin: 0 0 2px 0; }
.nbops-input > input, .nbops-input > select { flex: 0 0 auto; height: var(--jp-widgets-inline-height, 28px); }
/* FileUpload's own text, "Upload CSV (0)", hidden; the button says what it does */
.nbops-upload.widget-upload { font-size: 0; }
.nbops-upload.widget-upload::after { content: "Upload CSV"; font-size: var(--jp-widgets-font-size, 13px); }
.nbops-upload.nbops-upload-again::after { content: "Upload another CSV"; }
.nbops-predict button, button.nbops-predict { font-size: 1.05em; }
</style>"""


def message_html(text: str, kind: str = "error", title: str = "") -> str:
    head = f"<strong>{html.escape(title)}</strong><br>" if title else ""
    lines = "<br>".join(html.escape(line) for line in text.splitlines())
    return f'<div class="nbops-message nbops-{kind}">{head}{lines}</div>'


def _header(ipywidgets, subtitle: str, title: str = TITLE):
    return ipywidgets.HTML(
        STYLE + f'<div class="nbops-header"><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></div>'
    )
