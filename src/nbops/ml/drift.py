"""Data drift: is the current data still like the data the champion was trained on?

Each feature column of the current table is compared with the same column of the champion's
`reference_sample.parquet` (the training rows logged with the model): two-sample
Kolmogorov–Smirnov for numeric columns, chi-squared on the category counts for categorical
ones (scipy). A column drifts when its p-value is below `drift.alpha` divided by the number of
columns tested (Bonferroni), so `drift.alpha` bounds the false-alarm rate of the whole check.
Columns with fewer than `drift.min_rows` values on either side are not tested.

Verdicts: `drift` (at least one column drifted), `no drift`, `insufficient data` (no column
could be tested). With no champion yet there is nothing to compare: the command says so and
exits 0, or with `--retrain` runs the pipeline (a registry lost to cache eviction trains a new
champion instead of failing every scheduled run). The exit codes of `python -m nbops drift` are
in EXIT_CODES_HELP (its `--help`).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbops.exceptions import DataError, ModelError

# Heavy libraries imported inside the functions below; warm kernels load them early (nbops.runner.preload).
PRELOAD = ("pandas", "scipy.stats", "matplotlib.pyplot")

if TYPE_CHECKING:
    import pandas as pd

    from nbops.params import Params

REFERENCE_ARTIFACT = "reference_sample.parquet"
DRIFT = "drift"
NO_DRIFT = "no drift"
INSUFFICIENT = "insufficient data"
_SHOWN_CATEGORIES = 3


class NoChampionToCompare(ModelError):
    """The registered model has no champion yet: there is no training sample to compare with."""


@dataclass
class ColumnDrift:
    """One column's test: which test, its statistic and p-value, and whether it drifted."""

    column: str
    kind: str  # "numeric" | "categorical"
    test: str  # "ks" | "chi2" | "not tested"
    statistic: float | None
    p_value: float | None
    threshold: float | None
    drifted: bool
    reference_rows: int
    current_rows: int
    detail: str = ""


@dataclass
class DriftReport:
    verdict: str
    alpha: float
    threshold: float | None
    columns: list[ColumnDrift] = field(default_factory=list)
    reference_rows: int = 0
    current_rows: int = 0
    champion_version: str | None = None
    model_name: str | None = None

    @property
    def drifted(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_columns"] = self.drifted
        return out

    def to_frame(self) -> pd.DataFrame:
        """The per-column table, drifted columns first, smallest p-value first."""
        import pandas as pd

        frame = pd.DataFrame([asdict(c) for c in self.columns])
        if frame.empty:
            return frame
        frame["_order"] = frame["p_value"].fillna(2.0)
        return frame.sort_values(["drifted", "_order"], ascending=[False, True]).drop(columns="_order")

    def summary_line(self) -> str:
        """The one line the CLI prints and the workflow summary shows."""
        where = f"{self.model_name} v{self.champion_version}" if self.champion_version else "the reference"
        if self.verdict == DRIFT:
            return f"drift: {', '.join(self.drifted)} differ from the training data of {where}"
        if self.verdict == NO_DRIFT:
            tested = sum(c.test != "not tested" for c in self.columns)
            return f"no drift: {tested} columns match the training data of {where}"
        return f"insufficient data: no column has enough values to test against {where}"


# ------------------------------------------------------------------ the tests


def _finite(value: float) -> float:
    return float(value) if math.isfinite(float(value)) else 0.0


def numeric_drift(reference: pd.Series, current: pd.Series) -> tuple[float, float, str]:
    """Two-sample KS: (statistic, p-value, a short description of the shift)."""
    from scipy.stats import ks_2samp

    result = ks_2samp(reference.to_numpy(dtype=float), current.to_numpy(dtype=float))
    detail = f"median {reference.median():.4g} → {current.median():.4g}"
    return _finite(result.statistic), float(result.pvalue), detail


def categorical_drift(reference: pd.Series, current: pd.Series) -> tuple[float, float, str]:
    """Chi-squared on a 2×k table of category counts: (statistic, p-value, description).

    A category seen on one side only still counts (a new category is a strong signal);
    with fewer than two categories in total there is nothing to compare (p = 1).
    """
    import numpy as np
    from scipy.stats import chi2_contingency

    ref_counts = reference.astype(str).value_counts()
    cur_counts = current.astype(str).value_counts()
    categories = sorted(set(ref_counts.index) | set(cur_counts.index))
    table = np.array([[ref_counts.get(c, 0) for c in categories], [cur_counts.get(c, 0) for c in categories]])
    ref_share = table[0] / table[0].sum()
    cur_share = table[1] / table[1].sum()
    moved = sorted(range(len(categories)), key=lambda i: -abs(cur_share[i] - ref_share[i]))
    detail = ", ".join(
        f"{categories[i]} {ref_share[i]:.0%} → {cur_share[i]:.0%}" for i in moved[:_SHOWN_CATEGORIES]
    )
    if len(categories) < 2:
        return 0.0, 1.0, detail
    result = chi2_contingency(table, correction=False)
    return _finite(result.statistic), float(result.pvalue), detail


def _require_columns(frames: dict[str, pd.DataFrame], columns: list[str]) -> None:
    for name, frame in frames.items():
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(
                f"{name} has no column{'s' if len(missing) > 1 else ''} "
                + ", ".join(repr(c) for c in missing)
            )


def _column_drift(
    col: str, kind: str, ref: pd.Series, cur: pd.Series, threshold: float | None, min_rows: int
):
    """One column's test at the corrected `threshold` (None: no column is tested)."""
    if threshold is None or min(len(ref), len(cur)) < min_rows:
        return ColumnDrift(
            col,
            kind,
            "not tested",
            None,
            None,
            None,
            False,
            len(ref),
            len(cur),
            f"fewer than {min_rows} values",
        )
    test = numeric_drift if kind == "numeric" else categorical_drift
    statistic, p_value, detail = test(ref, cur)
    return ColumnDrift(
        col,
        kind,
        "ks" if kind == "numeric" else "chi2",
        statistic,
        p_value,
        threshold,
        bool(p_value < threshold),
        len(ref),
        len(cur),
        detail,
    )


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    *,
    alpha: float = 0.05,
    min_rows: int = 30,
) -> DriftReport:
    """Compare every declared feature column of `current` with `reference`; the tested columns
    share `alpha` (Bonferroni: each is tested at alpha / the number tested)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    _require_columns({"reference sample": reference, "current data": current}, [*numeric, *categorical])
    pairs = [
        (col, kind, reference[col].dropna(), current[col].dropna())
        for kind, cols in (("numeric", numeric), ("categorical", categorical))
        for col in cols
    ]
    tested = sum(min(len(ref), len(cur)) >= min_rows for _, _, ref, cur in pairs)
    threshold = alpha / tested if tested else None
    columns = [_column_drift(col, kind, ref, cur, threshold, min_rows) for col, kind, ref, cur in pairs]
    if not tested:
        verdict = INSUFFICIENT
    else:
        verdict = DRIFT if any(c.drifted for c in columns) else NO_DRIFT
    return DriftReport(verdict, alpha, threshold, columns, len(reference), len(current))


# ------------------------------------------------------------------ the champion's reference


def _download_artifact(run_id: str, artifact_path: str, dst: str) -> str:
    """MLflow's download, with "no such artifact" as FileNotFoundError."""
    import os

    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bar in logs/reports
    try:
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=dst)
    except mlflow.exceptions.MlflowException as exc:
        raise FileNotFoundError(artifact_path) from exc


def load_reference(model_name: str, client=None, download=None) -> tuple[pd.DataFrame, str]:
    """The champion's training sample and its version; ModelError when there is none.

    `download(run_id, artifact_path, dst) -> local path` defaults to MLflow's; tests inject one.
    """
    import pandas as pd

    from nbops.ml import registry, tracking

    champion = registry.get_alias_version(model_name, tracking.CHAMPION, client)
    if champion is None:
        raise NoChampionToCompare(
            f"registered model {model_name!r} has no champion: run `make pipeline` to train "
            "and promote one before checking drift"
        )
    download = download or _download_artifact
    with tempfile.TemporaryDirectory(prefix="nbops-drift-") as tmp:
        try:
            frame = pd.read_parquet(download(champion.run_id, REFERENCE_ARTIFACT, tmp))
        except FileNotFoundError:
            raise ModelError(
                f"{model_name} v{champion.version}: its run has no {REFERENCE_ARTIFACT}; retrain to log one"
            ) from None
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"{model_name} v{champion.version}: its {REFERENCE_ARTIFACT} is not readable "
                f"({exc.__class__.__name__}); retrain to log a new one"
            ) from None
    return frame, str(champion.version)


def check_drift(params: Params, root: Path, client=None, download=None) -> tuple[DriftReport, Any, Any]:
    """Current table (validated) vs the champion's sample: (report, reference, current)."""
    from nbops.ml.data import load_table

    current, _ = load_table(params, root)
    reference, version = load_reference(params.registry.model_name, client, download)
    report = detect_drift(
        reference,
        current,
        params.data.numeric,
        params.data.categorical,
        alpha=params.drift.alpha,
        min_rows=params.drift.min_rows,
    )
    report.champion_version = version
    report.model_name = params.registry.model_name
    return report, reference, current


# ------------------------------------------------------------------ what a reader sees


def plot_distributions(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    drifted: Sequence[str] = (),
):
    """One panel per column: reference vs current (density for numeric, shares for categorical)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    columns = [*numeric, *categorical]
    ncols = min(3, len(columns))
    nrows = -(-len(columns) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, col in zip(axes.flat, columns, strict=False):
        if col in numeric:
            for frame, label in ((reference, "training (champion)"), (current, "current")):
                values = frame[col].dropna()
                if len(values):
                    ax.hist(values, bins=20, density=True, alpha=0.5, label=label)
        else:
            shares = pd.DataFrame(
                {
                    "training (champion)": reference[col].astype(str).value_counts(normalize=True),
                    "current": current[col].astype(str).value_counts(normalize=True),
                }
            ).fillna(0.0)
            shares.plot.bar(ax=ax, rot=0, alpha=0.8, legend=False)
        if col in drifted:
            ax.set_title(f"{col} — DRIFT", color="#b00020", fontweight="bold")
        else:
            ax.set_title(col)
    for ax in list(axes.flat)[len(columns) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    plt.close(fig)
    return fig


def drift_markdown(report: dict[str, Any]) -> str:
    """The verdict and per-column table as Markdown (job summary, notebook); data escaped."""
    from nbops.markdown import md_escape

    champion = (
        f"{md_escape(report['model_name'])} v{md_escape(report['champion_version'])}"
        if report.get("champion_version")
        else "the champion"
    )
    lines = [
        # text, not an emoji: ✅ is a missing-glyph box where no emoji font is installed
        f"## Drift check: {md_escape(report['verdict'])}",
        "",
        f"Current data ({report['current_rows']} rows) vs the training sample of {champion} "
        f"({report['reference_rows']} rows). Per-column threshold: p < "
        + (f"{report['threshold']:.4g}" if report.get("threshold") else "–")
        + f" (alpha {report['alpha']} over the columns tested, Bonferroni).",
        "",
        "| column | kind | test | statistic | p-value | drift | what moved |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for c in report["columns"]:
        stat = "–" if c["statistic"] is None else f"{c['statistic']:.4f}"
        p = "–" if c["p_value"] is None else f"{c['p_value']:.3g}"
        lines.append(
            f"| {md_escape(c['column'])} | {c['kind']} | {c['test']} | {stat} | {p} | "
            f"{'**yes**' if c['drifted'] else 'no'} | {md_escape(c['detail'])} |"
        )
    return "\n".join(lines) + "\n"
