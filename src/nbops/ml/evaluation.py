"""Challenger vs champion on the same held-out rows, and the record the gate leaves behind;
also the score tables the train and evaluate notebooks show (cv_table, metrics_table)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbops.exceptions import NbopsError
from nbops.ml.metrics import CLASSIFICATION, METRICS, REGRESSION
from nbops.products import read_json

# Heavy libraries imported inside the functions below; warm kernels load them early (nbops.runner.preload).
PRELOAD = ("pandas", "mlflow")
NO_VALUE = "–"  # a table cell with nothing to show (no champion to compare with)

if TYPE_CHECKING:
    import pandas as pd


def load_holdout(table_path: str | Path, train_dir: str | Path, features: list[str], target: str):
    """The held-out rows the train step set aside: (X, y, holdout ids)."""
    import pandas as pd

    holdout = Path(train_dir) / "holdout.json"
    if not holdout.is_file():
        raise NbopsError(
            f"{holdout} not found: run 02_train first (the held-out rows are the ones it set aside; "
            "a hand run of 03_evaluate scores the model of a hand run of 02_train)"
        )
    table = pd.read_parquet(table_path)
    ids = read_json(holdout)["holdout_ids"]
    rows = table.loc[ids]
    return rows[features], rows[target], ids


def model_label(role: str, info: dict) -> str:
    """How a model is named on plots and tables: `challenger v3`, or for a hand run that registered
    nothing `challenger (run 1a2b3c4d, not registered)`; `champion (none)` when there is none."""
    if info.get("version") is not None:
        return f"{role} v{info['version']}"
    if info.get("run_id"):
        return f"{role} (run {str(info['run_id'])[:8]}, not registered)"
    return f"{role} (none)"


def predict_version(model_name: str, version: str, X, task: str | None = None):
    """One registered version's predict_table for the rows, or raise NbopsError if it cannot,
    including a version made for the other task (a classifier in a regression run: its labels are
    not numbers, a regressor in a classification run: its numbers are not labels)."""
    import pandas as pd

    from nbops.ml import registry
    from nbops.ml.models import predict_table

    try:
        table = predict_table(registry.load_model(f"models:/{model_name}/{version}"), X)
    except (ValueError, KeyError, AttributeError) as exc:
        raise NbopsError(f"v{version} cannot score these rows: {exc}") from None
    if task is not None and pd.api.types.is_numeric_dtype(table["prediction"]) != (task == REGRESSION):
        other = CLASSIFICATION if task == REGRESSION else REGRESSION
        raise NbopsError(f"v{version} is a {other} model; this run is {task}")
    return table


def score_version(model_name: str, version: str, X, y, labels, task: str = CLASSIFICATION) -> dict[str, Any]:
    """Metrics of one registered version on the rows, or raise NbopsError if it cannot score."""
    from nbops.ml import models

    return models.score_table(y, predict_version(model_name, version, X, task), labels, task)


def score_champion(
    model_name: str, challenger_version: str, X, y, labels, task: str = CLASSIFICATION
) -> dict[str, Any]:
    """Score the current champion on the rows; never raises for a champion that cannot score."""
    from nbops.ml import models, registry, tracking

    champ = registry.get_alias_version(model_name, tracking.CHAMPION)
    none = {"metrics": None, "error": None, "predictions": None}
    if champ is None:
        return {"version": None, "run_id": None, **none}
    out = {"version": str(champ.version), "run_id": champ.run_id, **none}
    if str(champ.version) == str(challenger_version):
        out["error"] = "challenger is already the champion"
        return out
    try:
        out["predictions"] = predict_version(model_name, str(champ.version), X, task)
        out["metrics"] = models.score_table(y, out["predictions"], labels, task)
    except NbopsError as exc:
        out["error"] = f"champion {exc}"
    return out


def paired_record(
    metric: str, y, challenger: pd.DataFrame, champion: pd.DataFrame, labels, **settings
) -> dict:
    """The paired bootstrap record of Δ `metric` between two predict_table outputs on the rows y."""
    from nbops.ml.bootstrap import ERROR_METRICS, paired_interval
    from nbops.ml.bootstrap_rows import paired_auc_interval, paired_error_interval

    if metric in ERROR_METRICS:
        a, b = challenger["prediction"], champion["prediction"]
        return paired_error_interval(y, a, b, metric, **settings).to_dict()
    if metric == "roc_auc":
        positive = sorted(map(str, labels))[1]
        a, b = challenger[f"p_{positive}"], champion[f"p_{positive}"]
        return paired_auc_interval([str(v) for v in y], a, b, positive, **settings).to_dict()
    a, b = (t["prediction"] for t in (challenger, champion))
    seen = sorted({*map(str, labels), *map(str, y), *map(str, a), *map(str, b)})
    y_s, a_s, b_s = ([str(v) for v in values] for values in (y, a, b))
    return paired_interval(y_s, a_s, b_s, seen, metric, **settings).to_dict()


def paired_scorer(
    model_name: str,
    X,
    y,
    challenger_pred,
    labels,
    *,
    confidence: float,
    seed: int,
    known=None,
    metric: str = "macro_f1",
):
    """For the gate: version -> the paired bootstrap record of Δ `metric` between the
    challenger's predict_table and that version's on the same rows (None when the version
    cannot predict them). `known`: predict_table outputs already made, by version."""
    known = {str(v): p for v, p in (known or {}).items() if v is not None and p is not None}

    def compare(version: str) -> dict | None:
        pred = known.get(str(version))
        if pred is None:
            try:
                pred = predict_version(model_name, str(version), X, METRICS[metric].task)
            except NbopsError:
                return None
        return paired_record(metric, y, challenger_pred, pred, labels, confidence=confidence, seed=seed)

    return compare


def quiet_scorer(model_name: str, X, y, labels, task: str = CLASSIFICATION):
    """score_version for the gate: a version that cannot score has no metrics (so it is kept)."""

    def score(version: str) -> dict | None:
        try:
            return score_version(model_name, version, X, y, labels, task)
        except NbopsError:
            return None

    return score


def headline(metrics: dict, metric: str) -> str:
    """The challenger's held-out scores in one line, the gate's metric first."""
    from nbops.ml.metrics import METRICS, shown_metrics

    names = sorted(shown_metrics(metrics), key=lambda m: (m != metric, shown_metrics(metrics).index(m)))
    return "challenger " + ", ".join(f"{METRICS[m].title} {metrics[m]:.4f}" for m in names)


def metrics_table(challenger: dict, champion: dict | None, metric: str | None = None) -> pd.DataFrame:
    """The task's metrics side by side with the challenger's delta, as the text the notebook
    shows: four decimals, "–" where there is no champion to compare with; which way is better,
    and the gate's metric marked."""
    import pandas as pd

    from nbops.ml.metrics import direction_text, shown_metrics

    rows = []
    for name in shown_metrics(challenger):
        c = challenger[name]
        p = champion.get(name) if champion else None
        rows.append(
            {
                "metric": name + (" (gate)" if name == metric else ""),
                "challenger": f"{c:.4f}",
                "champion": NO_VALUE if p is None else f"{p:.4f}",
                "delta": NO_VALUE if p is None else f"{c - p:+.4f}",
                "better": direction_text(name).removesuffix(" is better"),
            }
        )
    return pd.DataFrame(rows).set_index("metric")


def cv_table(scores: dict[str, float]) -> pd.DataFrame:
    """Cross-validation scores as mean and std per metric; the fold count (an int) names the
    table instead of sitting in a float column."""
    import pandas as pd

    folds = scores.get("cv_folds")
    metrics = sorted({k[3:].rsplit("_", 1)[0] for k in scores if k != "cv_folds"})
    return pd.DataFrame(
        {
            "mean": [scores[f"cv_{m}_mean"] for m in metrics],
            "std": [scores[f"cv_{m}_std"] for m in metrics],
        },
        index=pd.Index(metrics, name=f"{int(folds)}-fold CV" if folds else "no CV (too few rows per fold)"),
    ).round(4)


def champion_line(record: dict) -> str:
    """Where `champion` stands, from the record build_evaluation made (and the runner settled):
    moving to the challenger once the run succeeds, now the challenger, kept, or none yet."""
    name = record["model_name"]
    before = (record.get("champion") or {}).get("version")
    after = record.get("champion_after")
    promotion = record.get("promotion")
    if promotion == "pending":
        until = f"v{before} until then" if before else "no champion until then"
        return (
            f"champion moves to {name} v{record['challenger']['version']} once every step of this run "
            f"has succeeded ({until})"
        )
    if not after:
        return "no champion yet"
    if promotion == "applied" or (promotion is None and str(after) != str(before)):
        return f"champion is now {name} v{after}"
    return f"champion stays {name} v{after}"


def params_diff(challenger_run_id: str, champion_run_id: str | None) -> dict[str, list]:
    """Params that differ between the two training runs: {key: [champion, challenger]}."""
    if not champion_run_id:
        return {}
    import mlflow

    client = mlflow.MlflowClient()
    new = client.get_run(challenger_run_id).data.params
    old = client.get_run(champion_run_id).data.params
    return {k: [old.get(k), new.get(k)] for k in sorted(set(new) | set(old)) if old.get(k) != new.get(k)}


def build_evaluation(
    *,
    challenger_info: dict,
    challenger_metrics: dict,
    champion: dict,
    decision,
    diff: dict,
    data_hash: str,
    holdout_rows: int,
    data_source: str,
    synthetic: bool,
) -> dict[str, Any]:
    """Everything the summary, the reports and the dashboard's model card need, as JSON."""
    return {
        "model_name": challenger_info["model_name"],
        "challenger": {
            "version": challenger_info["version"],
            "run_id": challenger_info["run_id"],
            "metrics": challenger_metrics,
        },
        "champion": {k: v for k, v in champion.items() if k != "predictions"},
        "decision": decision.to_dict(),
        # the evaluate step decides; the runner moves `champion` once every step of the run has
        # succeeded, and then records "applied" or "withheld" and the champion after
        "promotion": "pending" if decision.promote else "none",
        "champion_after": champion["version"],
        "params_diff": diff,
        "data": {
            "hash": data_hash,
            "source": data_source,
            "synthetic": synthetic,
            "holdout_rows": holdout_rows,
        },
    }
