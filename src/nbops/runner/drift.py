"""`python -m nbops drift`: the champion's training sample against the current data, the
report notebook (04_drift, run by the runner's executor), and a retrain when asked.

Stdlib only at import: the CLI reads EXIT_CODES_HELP to build its --help.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nbops.layout import DRIFT, NOTEBOOKS_DIR, drift_dir, executed_notebook, notebook_path

if TYPE_CHECKING:
    from nbops.ml.drift import DriftReport
    from nbops.params import Params
    from nbops.runner.folders import Folders

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_DRIFT = 3  # only with --fail-on-drift: a scheduler's run turns red
NO_CHAMPION_LINE = "no champion yet: nothing to compare; run the pipeline"
EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}  the check ran: no drift, insufficient data, or drift without --fail-on-drift
     (the verdict is printed and written to reports/<name>/drift.json); or no champion yet
     (nothing to compare; with --retrain the pipeline ran and passed)
  {EXIT_ERROR}  an error: bad params or data, the report notebook failed, or
     the retrain (--retrain, --force, or --retrain with no champion) failed
  {EXIT_DRIFT}  drift found and --fail-on-drift given (after the retrain, if one ran and passed)"""


def _say(msg: str) -> None:
    print(msg, flush=True)


def _write_no_champion(reports: Path) -> None:
    """reports/<name>/drift.md says why there is no verdict (the workflow shows it in the job
    summary); no drift.json: there is no verdict to read."""
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "drift.md").write_text(f"## Drift check: not run\n\n{NO_CHAMPION_LINE}.\n", encoding="utf-8")


def render_drift_report(root: Path, products: Path, params: Params, timeout_s: int, reports: Path) -> Path:
    """Run notebooks/04_drift.ipynb on the products and render <reports>/drift.html."""
    from nbops.exceptions import StepError
    from nbops.runner import notebook_html
    from nbops.runner.execute import execute_notebook

    executed = executed_notebook(products.parent, DRIFT)
    parameters = {
        "drift_json": str(products / "drift.json"),
        "reference_path": str(products / "reference.parquet"),
        "current_path": str(products / "current.parquet"),
        "data_numeric": params.data.numeric,
        "data_categorical": params.data.categorical,
    }
    try:
        execute_notebook(
            root / notebook_path(DRIFT),
            executed,
            parameters,
            step=DRIFT,
            cwd=root / NOTEBOOKS_DIR,
            timeout_s=timeout_s,
        )
    except StepError:
        if executed.exists():  # the failing notebook is still a report to read
            notebook_html.render_notebook_html(executed, reports / "drift.html", with_code=True)
        raise
    return notebook_html.render_notebook_html(executed, reports / "drift.html", with_code=False)


def _write_verdict(
    root: Path, params: Params, folders: Folders, params_file: Path
) -> tuple[DriftReport | None, bool]:
    """Check, write build/<name>/04_drift/ and reports/<name>/drift.{json,md,html};
    (report, no champion)."""
    from nbops.ml import drift
    from nbops.products import write_json
    from nbops.runner.folders import claim_folders

    try:
        report, reference, current = drift.check_drift(params, root)
    except drift.NoChampionToCompare:
        _say(NO_CHAMPION_LINE)
        _write_no_champion(folders.reports)
        return None, True
    products = drift_dir(folders.build)
    products.mkdir(parents=True, exist_ok=True)
    claim_folders(folders, root, params_file)
    reference.to_parquet(products / "reference.parquet")
    current.to_parquet(products / "current.parquet")
    data = report.to_dict()
    write_json(products / "drift.json", data)
    write_json(folders.reports / "drift.json", data)
    (folders.reports / "drift.md").write_text(drift.drift_markdown(data), encoding="utf-8")
    html = render_drift_report(root, products, params, params.run.cell_timeout_s, folders.reports)
    _say(f"drift report: {html}")
    _say(report.summary_line())
    return report, False


def main_drift(
    params_file: str,
    root: str = ".",
    retrain: bool = False,
    force: bool = False,
    fail_on_drift: bool = False,
) -> int:
    """`python -m nbops drift`: check, write reports/<name>/drift.{json,md,html}, retrain if asked.
    Returns the exit code (EXIT_CODES_HELP)."""
    from nbops.exceptions import ModelError, NbopsError, print_problems
    from nbops.ml import tracking
    from nbops.ml.drift import DRIFT as DRIFTED
    from nbops.params import load_params
    from nbops.runner.folders import params_folders
    from nbops.runner.noop import build_lock

    root_path = Path(root).resolve()
    path = Path(params_file) if Path(params_file).is_absolute() else root_path / params_file
    try:
        folders = params_folders(root_path, path)
        params = load_params(path)
        tracking.configure_tracking(root_path)
        try:
            # as a run holds it: a run of the same params file writes the same folders
            with build_lock(folders.build):
                report, no_champion = _write_verdict(root_path, params, folders, path)
        except ModelError as exc:
            if not force:
                raise
            _say(f"drift: not checked ({exc}); retraining because of --force")
            report, no_champion = None, False
    except NbopsError as exc:
        print_problems(exc)
        return EXIT_ERROR
    drifted = report is not None and report.verdict == DRIFTED
    if force or (retrain and (drifted or no_champion)):
        why = "forced" if force else ("no champion yet" if no_champion else "drift found")
        _say(f"retrain: {why}; running the pipeline (promotion through the gate)")
        from nbops.runner import pipeline

        code = pipeline.main_run(str(path), str(root_path), True, None, 2)
        if code != EXIT_OK:
            return code
    elif retrain and report is not None:  # without a report, a retrain ran above
        _say(f"retrain: not needed ({report.verdict})")
    return EXIT_DRIFT if fail_on_drift and drifted else EXIT_OK
