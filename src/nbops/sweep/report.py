"""The sweep report: reports/sweep/<name>/index.html (+ sweep.json, summary.md, a plot).

Every value that came from a file or a run (overrides, reasons, names) is escaped by Jinja2's
autoescape; links point only at the folders the sweep wrote itself (point ids are hex).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbops.layout import TRAIN
from nbops.markdown import md_escape
from nbops.products import write_json

if TYPE_CHECKING:
    import optuna

    from nbops.sweep.spec import Sweep

METRICS = ("macro_f1", "accuracy", "weighted_f1")
REGRESSION_METRICS = ("rmse", "mae", "r2")
PLOT = "macro_f1_vs_params.png"

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src 'self'; style-src 'unsafe-inline'">
<title>Sweep {{ name }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:80rem}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
tr.best{background:#e8f5e9}tr.failed{background:#fdecea}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:.9em}
</style></head><body>
<h1>Sweep <code>{{ name }}</code></h1>
<p>Sweep file <code>{{ file }}</code>, base params <code>{{ base }}</code>.
{{ total }} points: {{ ok }} ok, {{ failed }} failed. Ranked by {{ metric }} on the same held-out rows.</p>
{% if best %}
<h2>Best point and the gate</h2>
<p>Point {{ best.index }} (<code>{{ best.label }}</code>): {{ metric }} {{ best.f1 }},
{{ best.model_name }} v{{ best.version }}.</p>
<p><strong>Verdict: {{ decision.verdict }}</strong></p>
<ul>{% for r in decision.reasons %}<li>{{ r }}</li>{% endfor %}</ul>
{% else %}
<p><strong>No point finished: nothing went through the gate.</strong></p>
{% endif %}
{% if plot %}<h2>{{ metric }} against the swept parameters</h2>
<img src="{{ plot }}" alt="{{ metric }} per swept parameter" style="max-width:100%">{% endif %}
{% if search %}<h2>Optuna study <code>{{ search.study }}</code></h2>
<p>TPE sampler, seed {{ search.seed }}: {{ search.complete }} trials complete, {{ search.failed }} failed.
Point <em>n</em> is trial <em>n</em>&minus;1.</p>
{% for fig in search.figures %}<h3>{{ fig.title }}</h3>
{% if fig.file %}<img src="{{ fig.file }}" alt="{{ fig.title }}" style="max-width:100%">
{% else %}<p>{{ fig.note }}</p>{% endif %}{% endfor %}{% endif %}
<h2>Points</h2>
<table><thead><tr><th>#</th><th>point</th>{% for k in keys %}<th><code>{{ k }}</code></th>{% endfor %}
<th>status</th>{% for m in metrics %}<th>{{ m }}</th>{% endfor %}
<th>version</th><th>run</th><th>seconds</th><th>reports</th><th>reason</th></tr></thead>
<tbody>
{% for row in rows %}<tr class="{{ row.css }}"><td>{{ row.index }}</td><td><code>{{ row.id }}</code></td>
{% for v in row.cells %}<td><code>{{ v }}</code></td>{% endfor %}
<td>{{ row.status }}</td>{% for v in row.metrics %}<td class="num">{{ v }}</td>{% endfor %}
<td>{{ row.version }}</td><td><code>{{ row.run_id }}</code></td><td class="num">{{ row.seconds }}</td>
<td>{% for text, href in row.links %}<a href="{{ href }}">{{ text }}</a> {% endfor %}</td>
<td>{{ row.reason }}</td></tr>
{% endfor %}</tbody></table>
</body></html>
"""


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return "" if value is None else str(value)


def swept_keys(records: list[dict]) -> list[str]:
    keys: list[str] = []
    for rec in records:
        keys += [k for k in rec["overrides"] if k not in keys]
    return keys


def plot_metric(records: list[dict], keys: list[str], out: Path, metric: str = "macro_f1") -> bool:
    """One panel per swept key: the metric of every finished point against that key's value."""
    ok = [r for r in records if r["status"] == "ok" and r.get("challenger")]
    if not ok or not keys:
        out.unlink(missing_ok=True)
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(r["overrides"].get(key), r["challenger"]["metrics"][metric]) for r in ok]
        pts = [(x, y) for x, y in pts if x is not None]
        numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x, _ in pts)
        if numeric:
            ax.scatter([x for x, _ in pts], [y for _, y in pts])
        else:
            labels = sorted({json.dumps(x) for x, _ in pts})
            ax.scatter([labels.index(json.dumps(x)) for x, _ in pts], [y for _, y in pts])
            ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
        ax.set_xlabel(key)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


HISTORY = "optuna_history.png"
IMPORTANCES = "optuna_importances.png"


def _save_figure(title: str, file: Path, draw: Callable[[], Any]) -> dict[str, Any]:
    """Draw one Optuna figure into `file`, or say why it could not be drawn."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # optuna.visualization.matplotlib
            draw()
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        plt.close("all")
        return {"title": title, "file": None, "note": f"Not drawn: {type(exc).__name__}: {exc}"}
    fig = plt.gcf()  # the figure Optuna drew on
    fig.set_size_inches(7, 4)
    fig.tight_layout()
    fig.savefig(file, dpi=100)
    plt.close(fig)
    return {"title": title, "file": file.name, "note": None}


def plot_study(study: optuna.Study, out: Path, seed: int, n_params: int) -> dict[str, Any]:
    """Optuna's optimisation history and parameter importances as PNGs in `out`; a figure that
    cannot be drawn says why instead. Importances need 2 completed trials and 2 parameters."""
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    figures: list[dict[str, Any]] = []
    for title, file, (min_trials, min_params), draw in (
        ("Optimisation history", HISTORY, (1, 1), lambda: vis.plot_optimization_history(study)),
        (
            "Parameter importances (fANOVA)",
            IMPORTANCES,
            (2, 2),
            lambda: vis.plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed)),
        ),
    ):
        (out / file).unlink(missing_ok=True)
        if complete >= min_trials and n_params >= min_params:
            figures.append(_save_figure(title, out / file, draw))
            continue
        note = (
            f"Not drawn: needs at least {min_trials} completed trial(s) and {min_params} searched "
            f"parameter(s); this study has {complete} completed, the space {n_params} parameter(s)."
        )
        figures.append({"title": title, "file": None, "note": note})
    failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    return {
        "study": study.study_name,
        "seed": seed,
        "complete": complete,
        "failed": failed,
        "figures": figures,
    }


def _links(sweep: Sweep, rec: dict) -> list[tuple[str, str]]:
    folder = sweep.reports / rec["id"]
    return [
        (text, f"{rec['id']}/{file}")
        for text, file in (
            ("summary", "index.html"),
            ("train", "02_train.html"),
            ("evaluate", "03_evaluate.html"),
        )
        if (folder / file).exists()
    ]


def _shown(sweep: Sweep) -> tuple[str, tuple[str, ...]]:
    """The metric points are ranked by, and the columns of the points' table."""
    from nbops.sweep.spec import rank_metric

    metric = rank_metric(sweep)
    return metric, REGRESSION_METRICS if metric in REGRESSION_METRICS else METRICS


def summary_markdown(sweep: Sweep, records: list[dict], best: dict | None, decision: dict | None) -> str:
    keys = swept_keys(records)
    metric, shown = _shown(sweep)
    lines = [f"## Sweep {md_escape(sweep.name)}", ""]
    if best and decision:
        lines.append(
            f"Best: point {best['index']} ({md_escape(_label(best))}), {metric} "
            f"{best['challenger']['metrics'][metric]:.4f}. Gate: **{md_escape(decision['verdict'])}**"
        )
    else:
        lines.append("No point finished: nothing went through the gate.")
    columns = ("macro-F1", "accuracy") if metric not in REGRESSION_METRICS else ("rmse", "mae")
    lines += ["", "| # | " + " | ".join(md_escape(k) for k in keys) + f" | status | {' | '.join(columns)} |"]
    lines.append("|---" * (len(keys) + 4) + "|")
    for rec in records:
        m = (rec.get("challenger") or {}).get("metrics") or {}
        vals = [md_escape(json.dumps(rec["overrides"].get(k))) if k in rec["overrides"] else "" for k in keys]
        lines.append(
            f"| {rec['index']} | " + " | ".join(vals) + f" | {md_escape(rec['status'])} | "
            f"{_fmt(m.get(shown[0]))} | {_fmt(m.get(shown[1]))} |"
        )
    return "\n".join(lines) + "\n"


def _label(rec: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in rec["overrides"].items()) or "(base)"


def _row(sweep: Sweep, rec: dict, keys: list[str], best: dict | None, shown: tuple[str, ...]) -> dict:
    metrics = (rec.get("challenger") or {}).get("metrics") or {}
    return {
        "index": rec["index"],
        "id": rec["id"],
        "cells": [json.dumps(rec["overrides"][k]) if k in rec["overrides"] else "" for k in keys],
        "status": rec["status"] + (" (cached)" if TRAIN in (rec.get("skipped") or []) else ""),
        "metrics": [_fmt(metrics.get(m)) for m in shown],
        "version": (rec.get("challenger") or {}).get("version", ""),
        "run_id": (rec.get("challenger") or {}).get("run_id", ""),
        "seconds": _fmt(rec.get("seconds"), 1),
        "links": _links(sweep, rec),
        "reason": rec.get("reason") or "",
        "css": "best" if best and rec["id"] == best["id"] else ("failed" if rec["status"] != "ok" else ""),
    }


def _best_view(best: dict | None, metric: str) -> dict | None:
    if not best:
        return None
    return {
        "index": best["index"],
        "label": _label(best),
        "f1": _fmt(best["challenger"]["metrics"][metric]),
        "model_name": best["model_name"],
        "version": best["challenger"]["version"],
    }


def render_sweep_report(
    sweep: Sweep,
    records: list[dict],
    best: dict | None,
    decision: dict | None,
    study: optuna.Study | None = None,
) -> Path:
    """index.html, sweep.json and summary.md in reports/sweep/<name>/ (with a search's `study`:
    its optimisation history and parameter importances)."""
    from jinja2 import Environment

    out = sweep.reports
    out.mkdir(parents=True, exist_ok=True)
    keys = swept_keys(records)
    metric, shown = _shown(sweep)
    plotted = plot_metric(records, keys, out / PLOT, metric)
    search = None
    if study is not None and sweep.search is not None:
        search = plot_study(study, out, sweep.search.seed, len(sweep.search.space))
    html = (
        Environment(autoescape=True)
        .from_string(TEMPLATE)
        .render(
            name=sweep.name,
            file=sweep.shown,
            base=str(
                sweep.base.relative_to(sweep.root) if sweep.base.is_relative_to(sweep.root) else sweep.base
            ),
            total=len(records),
            ok=sum(r["status"] == "ok" for r in records),
            failed=sum(r["status"] != "ok" for r in records),
            metric=metric,
            best=_best_view(best, metric),
            decision=decision or {},
            plot=PLOT if plotted else None,
            search=search,
            keys=keys,
            metrics=shown,
            rows=[_row(sweep, rec, keys, best, shown) for rec in records],
        )
    )
    (out / "index.html").write_text(html, encoding="utf-8")
    write_json(
        out / "sweep.json",
        {"name": sweep.name, "points": records, "best": best, "decision": decision, "search": search},
    )
    (out / "summary.md").write_text(summary_markdown(sweep, records, best, decision), encoding="utf-8")
    return out
