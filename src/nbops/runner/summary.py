"""summary.md: the run in a few Markdown lines, made for a PR comment."""

from __future__ import annotations

from nbops.layout import TITLES
from nbops.markdown import SUMMARY_MARKER, cap_markdown, md_escape
from nbops.ml.metrics import METRICS, direction_text, shown_metrics


def fmt_value(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def fmt_delta(value) -> str:
    return "–" if value is None else f"{value:+.4f}"


def metric_rows(evaluation: dict) -> list[tuple[str, float, float | None]]:
    """(row label, challenger, champion or None) for the task's metrics; the gate's metric is
    labelled with its direction: `rmse (gate, lower is better)`."""
    cm = evaluation["challenger"]["metrics"]
    pm = (evaluation.get("champion") or {}).get("metrics")
    gated = evaluation["decision"].get("metric", "macro_f1")
    rows = []
    for metric in shown_metrics(cm):
        label = (
            f"{metric} (gate, {direction_text(metric)})" if metric == gated and metric in METRICS else metric
        )
        rows.append((label, cm[metric], pm.get(metric) if pm else None))
    return rows


VERDICT_ICON = {"promote": "✅", "keep champion": "⏸️", "reject": "❌", "not promoted (promote: false)": "🔎"}


def summary_markdown(
    evaluation: dict | None,
    failure=None,
    statuses: dict | None = None,
    link_prefix: str = "",
    commit: str | None = None,
) -> str:
    """The PR-comment body: verdict first, then the task's metrics (classification: per-class F1
    and the confusion matrix too), params diff, data and commit."""
    lines = [SUMMARY_MARKER]
    at = f"Commit: {md_escape(commit)}" if commit else ""
    links = " · ".join(
        f"[{TITLES[s]}]({link_prefix}{s}.html)"
        for s in TITLES
        if (statuses or {}).get(s) in ("ran", "skipped", "failed")
    )
    if failure is not None:
        lines += _failure_lines(failure, at, links)
        return cap_markdown("\n".join(lines).rstrip() + "\n")
    if evaluation is None:
        lines += [
            "## Pipeline ran without an evaluation step",
            "",
            *([at, ""] if at else []),
            f"Reports: {links}",
        ]
        return cap_markdown("\n".join(lines) + "\n")
    lines += _gate_lines(evaluation)
    if "per_class" in evaluation["challenger"]["metrics"]:
        lines += _per_class_lines(evaluation)
        lines += _confusion_lines(evaluation)
    lines += _params_diff_lines(evaluation.get("params_diff") or {})
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


def _failure_lines(failure, at: str, links: str) -> list[str]:
    return [
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


def _gate_lines(evaluation: dict) -> list[str]:
    """The verdict, its reasons, and the metrics of challenger and champion."""
    name = md_escape(evaluation["model_name"])
    decision, chal = evaluation["decision"], evaluation["challenger"]
    champ = evaluation.get("champion") or {}
    verdict = decision["verdict"]
    head = f"## {VERDICT_ICON.get(verdict, '')} Gate: {md_escape(verdict)}"
    if decision["promote"]:
        head += f": {name} v{chal['version']} is the new champion"
    lines = [head, ""]
    lines += [f"- {md_escape(r)}" for r in decision["reasons"]]
    champ_col = f"champion v{champ['version']}" if champ.get("version") else "champion (none)"
    lines += ["", f"| metric | challenger v{chal['version']} | {champ_col} | Δ |", "|---|---:|---:|---:|"]
    for label, c, p in metric_rows(evaluation):
        lines.append(
            f"| {label} | {fmt_value(c)} | {fmt_value(p)} | {fmt_delta(None if p is None else c - p)} |"
        )
    if champ.get("error"):
        lines += ["", f"Champion not scored: {md_escape(champ['error'])}"]
    return lines


def _per_class_lines(evaluation: dict) -> list[str]:
    cm = evaluation["challenger"]["metrics"]
    pm = (evaluation.get("champion") or {}).get("metrics")
    lines = [
        "",
        "### Per-class F1",
        "",
        "| class | support | challenger | champion | Δ |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, v in cm["per_class"].items():
        p = pm["per_class"].get(label, {}).get("f1") if pm else None
        lines.append(
            f"| {md_escape(label)} | {v['support']} | {fmt_value(v['f1'])} | {fmt_value(p)} | "
            f"{fmt_delta(None if p is None else v['f1'] - p)} |"
        )
    return lines


def _confusion_lines(evaluation: dict) -> list[str]:
    chal = evaluation["challenger"]
    labels = chal["metrics"]["labels"]
    lines = [
        "",
        f"### Confusion matrix, challenger v{chal['version']} (rows: actual, columns: predicted)",
        "",
        "| actual \\\\ predicted | " + " | ".join(md_escape(x) for x in labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for label, row in zip(labels, chal["metrics"]["confusion_matrix"], strict=True):
        lines.append(f"| **{md_escape(label)}** | " + " | ".join(str(n) for n in row) + " |")
    return lines


def _params_diff_lines(diff: dict) -> list[str]:
    if not diff:
        return []
    lines = [
        "",
        "### Params that differ from the champion's",
        "",
        "| param | champion | challenger |",
        "|---|---|---|",
    ]
    return lines + [f"| {md_escape(k)} | {md_escape(a)} | {md_escape(b)} |" for k, (a, b) in diff.items()]
