"""The floor: one plain Python process doing the pipeline's work on the same data, calling the
package directly — validate, EDA figures, split + CV + fit, log and register to MLflow, score
challenger and champion on the holdout, gate, one HTML report with every figure and table.

    python benchmarks/script_floor.py --root <project> --params params/default.yaml

The project's MLflow store is expected to be initialised already (as for the pipeline)."""

from __future__ import annotations

import argparse
import base64
import html
import io
import sys
from pathlib import Path


def _figure_html(fig) -> str:
    """PNG at the inline backend's default dpi, as a notebook output would hold it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def run(root: Path, params_file: Path) -> Path:
    import matplotlib

    matplotlib.use("agg")

    from nbops.ml import data, evaluation, gate, models, plots, registry, tracking
    from nbops.params import load_params
    from nbops.runner import report

    params = load_params(params_file, str(params_file))
    d = params.data
    parts: list[str] = []

    # validate
    table, csv_path = data.load_table(params, root, str(params_file))
    data_hash = data.file_hash(csv_path)

    # EDA: the same figures and tables as notebooks/01_eda
    sample = plots.sample_rows(table, d.target, params.eda.sample_rows)
    parts.append(plots.summarize_table(table, d.numeric, d.categorical).to_html())
    for fig in (
        plots.class_balance(table, d.target),
        plots.numeric_by_class(sample, d.numeric, d.target),
        plots.categorical_by_class(sample, d.categorical, d.target),
        plots.relationships(sample, d.numeric, d.target),
        plots.correlations(table, d.numeric),
    ):
        if fig is not None:
            parts.append(_figure_html(fig))
    parts.append(plots.missing_values(table).to_html())

    # train: split, CV, fit, log + register as challenger
    tracking.configure_tracking(root)
    features = [*d.numeric, *d.categorical]
    train_ids, holdout_ids = data.split_holdout(table, d.target, params.split.test_size, params.split.seed)
    train = table.loc[train_ids]
    m = params.model
    model = models.make_model(m.name, m.params, d.numeric, d.categorical)
    cv_scores = models.fit_model(model, train[features], train[d.target], m.cv_folds, params.split.seed)
    schema = data.infer_schema(train, d.target, d.numeric, d.categorical)
    registered = tracking.log_training(
        model,
        X_example=train[features],
        params={"model": {"name": m.name, "params": m.params, "cv_folds": m.cv_folds}},
        cv_scores=cv_scores,
        schema=schema,
        holdout_ids=holdout_ids,
        tags={"git_commit": "unknown", "params_hash": "", "data_hash": data_hash},
        model_name=params.registry.model_name,
        experiment=params.registry.experiment,
        run_name=f"floor-{m.name}",
        reference=train[[*features, d.target]],
    )
    parts.append(pd_html(cv_scores))

    # evaluate + gate: challenger (loaded back from the registry) and champion on the same rows
    rows = table.loc[holdout_ids]
    X, y = rows[features], rows[d.target]
    labels = sorted(schema["classes"])
    challenger_model = registry.load_model(registered["model_uri"])
    challenger_metrics = models.score_model(challenger_model, X, y, labels)
    tracking.log_holdout_metrics(registered["run_id"], challenger_metrics)
    champion = evaluation.score_champion(params.registry.model_name, registered["version"], X, y, labels)
    parts.append(evaluation.metrics_table(challenger_metrics, champion["metrics"]).to_html())
    parts.append(
        _figure_html(plots.confusion_heatmap(challenger_metrics["confusion_matrix"], labels, "challenger"))
    )
    if champion["metrics"]:
        parts.append(
            _figure_html(plots.confusion_heatmap(champion["metrics"]["confusion_matrix"], labels, "champion"))
        )
    parts.append(
        _figure_html(plots.per_class_f1({"challenger": challenger_metrics, "champion": champion["metrics"]}))
    )
    g = params.gate
    decision = gate.decide_promotion(
        challenger_metrics,
        champion["metrics"] if champion["version"] else None,
        **gate.gate_arguments(g),
        allow_promotion=params.promote,
        challenger_version=registered["version"],
        champion_version=champion["version"],
    )
    decision = registry.apply_decision(params.registry.model_name, decision)
    record = evaluation.build_evaluation(
        challenger_info=registered,
        challenger_metrics=challenger_metrics,
        champion=champion,
        decision=decision,
        diff=evaluation.params_diff(registered["run_id"], champion["run_id"]),
        data_hash=data_hash,
        holdout_rows=len(y),
        data_source=str(csv_path),
        synthetic=data.is_synthetic(params, root),
    )

    # report: one HTML page with every figure and table, plus the PR summary
    out = root / "floor-report"
    out.mkdir(exist_ok=True)
    statuses = dict.fromkeys(report.TITLES, "ran")
    (out / "summary.md").write_text(report.summary_markdown(record, None, statuses), encoding="utf-8")
    page = f"<html><body><h1>{html.escape(decision.verdict)}</h1>{''.join(parts)}</body></html>"
    (out / "report.html").write_text(page, encoding="utf-8")
    return out


def pd_html(scores: dict) -> str:
    import pandas as pd

    return pd.Series(scores, name="cross-validation").round(4).to_frame().to_html()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".")
    ap.add_argument("--params", default="params/default.yaml")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    params_file = Path(args.params)
    params_file = params_file if params_file.is_absolute() else root / params_file
    out = run(root, params_file)
    print(f"floor report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
