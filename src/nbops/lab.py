"""JupyterLab on the pipeline's values: a contents manager for `make lab`.

Opening notebooks/<step>.ipynb inserts an `injected-parameters` cell after its `parameters` cell
(papermill's tag and format) with exactly what the runner would inject for the params file in
NBOPS_PARAMS, except that products go to build/lab/<name>/<step>/ (the runner's plan with
build=build/lab/<name>, <name> the params file's stem) and the notebook runs as a hand run
(`interactive = True`, its MLflow run tagged `nbops.source = lab`, `register` left to the
notebook's parameters cell). Saving removes that cell, every output and execution count and
the metadata Jupyter adds, and keeps the kernelspec and language_info the file already has: a
save in Lab leaves `git diff` clean.

Runs in the Jupyter server process: the runner's plan (no pandas) on each open, the validated
table for build/lab/<name> (pandas, once per data/params change).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

from nbops.layout import DRIFT, NOTEBOOKS_DIR, VALIDATE, drift_dir, lab_build_dir

ENV_PARAMS = "NBOPS_PARAMS"
INJECTED_TAG = "injected-parameters"
DRIFT_STEP = DRIFT
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python"}
# what the nbstripout git filter strips (its defaults), so a save equals what git would commit
STRIP_KEYS = [
    "metadata.signature",
    "metadata.widgets",
    "metadata.papermill",
    "cell.metadata.collapsed",
    "cell.metadata.ExecuteTime",
    "cell.metadata.execution",
    "cell.metadata.heading_collapsed",
    "cell.metadata.hidden",
    "cell.metadata.scrolled",
    "cell.metadata.papermill",
]


def lab_steps() -> list[str]:
    from nbops.runner.plan import STEPS

    return [s.name for s in STEPS] + [DRIFT_STEP]


def lab_parameters(root: Path, params_file: Path, step: str) -> dict:
    """The values a hand run of `step` gets: the runner's for build/lab/<name>, as a hand run."""
    from nbops.params import load_params
    from nbops.runner.folders import params_folders
    from nbops.runner.plan import make_plan

    folders = params_folders(root, params_file)  # a name another params file owns: refused
    if step == DRIFT_STEP:  # `python -m nbops drift` writes these; 04_drift only reads them
        params = load_params(params_file)
        products = drift_dir(folders.build)
        return {
            "drift_json": str(products / "drift.json"),
            "reference_path": str(products / "reference.parquet"),
            "current_path": str(products / "current.parquet"),
            "data_numeric": params.data.numeric,
            "data_categorical": params.data.categorical,
        }
    build = lab_build_dir(root, folders.name)
    plan = make_plan(params_file, root, build=build)  # no reports: a hand run renders none
    ensure_lab_table(plan)
    values = dict(plan.injected[step])
    values.pop("register", None)  # the notebook's own parameter: False unless the user sets it
    if "interactive" in values:
        values["interactive"] = True
    if "run_tags" in values:
        values["run_tags"] = {**values["run_tags"], "source": "lab"}
    return values


def ensure_lab_table(plan) -> None:
    """build/lab/<name>/00_validate/table.parquet for this params file and data, made when missing
    or stale: a hand run never reads (or waits for) the pipeline's build/<name>/."""
    from nbops.products import read_json, write_json
    from nbops.runner.pipeline import run_validate

    stamp = plan.stamp_path(VALIDATE)
    try:
        if read_json(stamp)["key"] == plan.keys[VALIDATE]:
            return
    except (OSError, ValueError, KeyError):
        pass
    stamp.unlink(missing_ok=True)
    run_validate(plan)
    write_json(stamp, {"key": plan.keys[VALIDATE]})


def kernel_language_info() -> dict:
    """The language_info the project's python3 kernel reports, which Lab writes into a notebook
    as soon as its kernel starts: served with the notebook, so opening a tab leaves it unmodified."""
    from ipykernel.ipkernel import IPythonKernel

    return dict(IPythonKernel.language_info)


def injected_source(values: dict) -> str:
    from papermill.translators import translate_parameters

    return translate_parameters("python", "python", values, comment="Parameters injected by make lab")


def _is_injected(cell) -> bool:
    return INJECTED_TAG in cell.get("metadata", {}).get("tags", [])


def inject_parameters(nb, source: str):
    """`nb` (nbformat) with one injected-parameters cell holding `source` after its parameters cell."""
    import nbformat

    nb.cells = [c for c in nb.cells if not _is_injected(c)]
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": [INJECTED_TAG]})
    at = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), -1)
    nb.cells.insert(at + 1, cell)
    return nb


def strip_notebook(nb, committed_metadata: dict | None = None):
    """What git would commit: no injected cell, outputs, counts or Jupyter's extra metadata;
    kernelspec and language_info as committed (Lab writes the running kernel's)."""
    from nbstripout import strip_output

    nb.cells = [c for c in nb.cells if not _is_injected(c)]
    nb = strip_output(nb, keep_output=False, keep_count=False, keep_id=True, extra_keys=STRIP_KEYS)
    committed = committed_metadata or {}
    nb.metadata["kernelspec"] = committed.get("kernelspec", KERNELSPEC)
    nb.metadata["language_info"] = committed.get("language_info", LANGUAGE_INFO)
    return nb


class ParamsContentsManager(AsyncLargeFileManager):
    """Injects the params file's values into the pipeline's notebooks on open, strips them on save."""

    def _project(self) -> tuple[Path, Path | None]:
        root = Path(os.environ.get("NBOPS_ROOT") or self.root_dir).resolve()
        params = os.environ.get(ENV_PARAMS)
        return root, (Path(params) if params else None)

    def _step(self, path: str) -> str | None:
        root, _ = self._project()
        file = (Path(self.root_dir) / path.strip("/")).resolve()
        if file.parent != root / NOTEBOOKS_DIR or file.suffix != ".ipynb":
            return None
        return file.stem if file.stem in lab_steps() else None

    def _in_project(self, path: str) -> bool:
        root, _ = self._project()
        file = (Path(self.root_dir) / path.strip("/")).resolve()
        return file.suffix == ".ipynb" and file.is_relative_to(root / NOTEBOOKS_DIR)

    async def get(self, path, content=True, type=None, format=None, require_hash=False, **kwargs):
        model = await super().get(
            path, content=content, type=type, format=format, require_hash=require_hash, **kwargs
        )
        if content and model.get("type") == "notebook" and self._in_project(path):
            metadata = model["content"].metadata
            if metadata.get("kernelspec", {}).get("name") == KERNELSPEC["name"]:
                metadata["language_info"] = kernel_language_info()  # save restores the committed one
        step = self._step(path)
        if not (content and model.get("type") == "notebook" and step):
            return model
        root, params_file = self._project()
        if params_file is None:
            source = f"# {ENV_PARAMS} is not set: the parameters cell's defaults apply (make lab PARAMS=...)"
        else:
            try:
                source = injected_source(lab_parameters(root, params_file, step))
            except Exception as exc:  # the notebook still opens; the cell says why it has no values
                self.log.warning("nbops: %s: %s", path, exc)
                message = " ".join(str(exc).split())
                source = f"raise RuntimeError({f'{params_file}: {message}'!r})"
        model["content"] = inject_parameters(model["content"], source)
        return model

    async def save(self, model, path=""):
        if model.get("type") == "notebook" and model.get("content") and self._in_project(path):
            import nbformat

            committed = None
            file = Path(self.root_dir) / path.strip("/")
            if file.is_file():
                try:
                    committed = json.loads(file.read_text(encoding="utf-8")).get("metadata")
                except (OSError, ValueError):
                    committed = None
            nb = nbformat.from_dict(model["content"])
            model = {**model, "content": strip_notebook(nb, committed)}
        return await super().save(model, path)
