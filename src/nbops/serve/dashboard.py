"""The Voila dashboard of the champion model, as plain Python and ipywidgets.

Inputs are built from the schema recorded with the model (ranges and categories of its training
data), so nothing here knows about drugs. The model comes from an exported champion folder when
`NBOPS_MODEL_DIR` is set (the Space image), else from `models:/<name>@champion` in the tracking
store, with the name read from the params file `NBOPS_PARAMS` (default `params/default.yaml`).
`notebooks/dashboard.ipynb` only calls `build_app()`; everything else is unit-tested without Voila.
"""

from __future__ import annotations

import html
import sys
import traceback
from pathlib import Path

from nbops.exceptions import NbopsError
from nbops.serve.batch import MAX_UPLOAD_BYTES, BatchResult, score_batch
from nbops.serve.champion import (
    ENV_MODEL_DIR,
    Champion,
    NoChampionError,
    check_schema,
    load_champion,
    resolve_model_source,
)
from nbops.serve.page import _header, batch_html, message_html, model_card_html, prediction_html
from nbops.serve.predict import Prediction, _range_text, build_inputs, predict_one, read_inputs

# What a page's kernel imports to load the champion and build the page (the model's classes come
# with skops.io, which imports scikit-learn's modules); the tracking store's client only when the
# model comes from it. A kernel parent imports them once for every page (nbops.serve.voila_forks).
PRELOAD = (
    "ipywidgets",
    "pandas",
    "pandera.pandas",
    "yaml",
    "skops.io",
    "sklearn.pipeline",
    "sklearn.compose",
    "nbops.ml.registry",
    "nbops.ml.models",
)
PRELOAD_REGISTRY = ("mlflow", "mlflow.pyfunc", "mlflow.sklearn", "nbops.ml.tracking")


def preload(env=None) -> list[str]:
    """Import what a page's kernel will import (PRELOAD, and PRELOAD_REGISTRY unless the model is
    an exported champion folder); returns the module names."""
    import importlib
    import os

    env = os.environ if env is None else env
    names = [*PRELOAD, *(() if env.get(ENV_MODEL_DIR) else PRELOAD_REGISTRY)]
    for name in names:
        importlib.import_module(name)
    return names


def start_kernel() -> None:
    """In each kernel forked after `preload`: what importing ipywidgets in a running kernel does,
    which an import done before the kernel existed could not (its comm targets: without
    `jupyter.widget.control` the page fetches the widgets' state one widget at a time)."""
    import ipywidgets

    ipywidgets.register_comm_target()


def _log_to_server(exc: BaseException) -> None:
    """Tracebacks go to the server's log (the kernel's real stderr), never to the page."""
    print("nbops.dashboard:", "".join(traceback.format_exception(exc)), file=sys.__stderr__, flush=True)


class Dashboard:
    """The page for one loaded champion: inputs, Predict, result, model card, batch upload."""

    def __init__(self, champion: Champion):
        import ipywidgets as w

        self.champion = champion
        self.inputs = build_inputs(champion.schema, champion.tolerance.modes)
        # the icon's font is fontawesome's, bundled with Voila and served by it (voila-style.js)
        self.predict_button = w.Button(description="Predict", button_style="primary", icon="play")
        self.predict_button.add_class("nbops-predict")
        self.predict_button.on_click(self._on_predict)
        self.result = w.HTML(message_html("Describe a case and press Predict.", "info"))
        self.result.add_class("nbops-result-box")
        # Its label is drawn by STYLE: FileUpload writes "<description> (<files held>)", and it holds
        # none again once a file is read (see _on_upload), so it would always say "(0)".
        self.upload = w.FileUpload(
            accept=".csv,text/csv",
            multiple=False,
            description="Upload CSV",
            icon="",
            tooltip="Choose a CSV file",
        )
        self.upload.add_class("nbops-upload")
        self.upload.observe(self._on_upload, names="value")
        self.batch = w.HTML("")
        self.batch.add_class("nbops-batch")
        self.last_batch: BatchResult | None = None
        self.updates = {"result": 0, "batch": 0}
        self.widget = self._layout(w)

    def _repr_mimebundle_(self, **kwargs):
        """Shown as the widget; the plain-text part names the model, so the served page's HTML
        says which version answers (what `make deploy` polls for) without running JavaScript."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        card = self.champion.card
        data["text/plain"] = f"{card.get('name', '?')} v{card.get('version', '?')} dashboard"
        return bundle

    def _layout(self, w):
        schema = self.champion.schema
        target = schema.get("target", "label")
        numeric = [
            w.HBox(
                [self.inputs[c], w.HTML(f'<span class="nbops-hint">{_range_text(info)}</span>')],
                layout=w.Layout(align_items="flex-end"),  # the hint beside the box, below the label
            )
            for c, info in schema["numeric"].items()
        ]
        categorical = [self.inputs[c] for c in schema["categorical"]]
        groups = []
        if numeric:
            groups += [w.HTML('<div class="nbops-group">Measurements</div>'), *numeric]
        if categorical:
            groups += [w.HTML('<div class="nbops-group">Categories</div>'), *categorical]
        inputs = w.VBox([w.HTML("<h3>Describe the case</h3>"), *groups, self.predict_button])
        inputs.add_class("nbops-panel")
        result = w.VBox([w.HTML(f"<h3>Predicted {html.escape(str(target))}</h3>"), self.result])
        result.add_class("nbops-panel")
        result.layout.flex = "1"
        card = w.HTML(model_card_html(self.champion.card))
        card.add_class("nbops-panel")
        columns = ", ".join([*schema["numeric"], *schema["categorical"]])
        batch = w.VBox(
            [
                w.HTML(
                    "<h3>Score a CSV file</h3><div>One row per case with the columns "
                    f"<code>{html.escape(columns)}</code>; other columns are ignored. Every row the "
                    "model can take is scored, with a warning where a value is missing or unlike the "
                    "training data; the rows it cannot take are listed. Files up to "
                    f"{MAX_UPLOAD_BYTES // 2**20} MB.</div>"
                ),
                self.upload,
                self.batch,
            ]
        )
        batch.add_class("nbops-panel")
        batch.add_class("nbops-batch-panel")
        subtitle = (
            f"Enter a case to get the {target} predicted by the champion model "
            f"{self.champion.card.get('name', '')} v{self.champion.card.get('version', '?')}, "
            + (
                "with its typical error."
                if self.champion.card.get("task") == "regression"
                else "with how sure it is."
            )
        )
        title = f"Predict the {target}"
        app = w.VBox([_header(w, subtitle, title), w.HBox([inputs, result]), card, batch])
        app.add_class("nbops-app")
        return app

    def _show(self, where: str, content: str) -> None:
        """Replace a panel's content; `data-update` counts replacements so a reader can wait for a new one."""
        self.updates[where] += 1
        widget = self.result if where == "result" else self.batch
        widget.value = f'<div class="nbops-update" data-update="{self.updates[where]}">{content}</div>'

    def predict(self) -> Prediction:
        pred = predict_one(self.champion, read_inputs(self.inputs))
        self._show("result", prediction_html(pred))
        return pred

    def _on_predict(self, _button=None) -> None:
        try:
            self.predict()
        except Exception as exc:  # noqa: BLE001 - UI boundary: the page shows a message, the log the traceback
            _log_to_server(exc)
            self._show("result", message_html(f"The model could not score this case ({type(exc).__name__})."))

    def score_upload(self, content: bytes, name: str) -> BatchResult | None:
        try:
            result = score_batch(self.champion, content, name)
        except NbopsError as exc:
            self.last_batch = None
            self._show("batch", message_html(str(exc), title="This file cannot be scored"))
            return None
        self.last_batch = result
        self._show("batch", batch_html(result, name))
        return result

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0]
        try:
            self.score_upload(bytes(item["content"]), str(item.get("name", "upload.csv")))
        except Exception as exc:  # noqa: BLE001 - UI boundary, as above
            _log_to_server(exc)
            self._show(
                "batch",
                message_html(
                    f"The file could not be scored ({type(exc).__name__}).",
                    title="This file cannot be scored",
                ),
            )
        finally:
            # Clear the selection so the same file can be uploaded again after a fix.
            self.upload.unobserve(self._on_upload, names="value")
            self.upload.value = ()
            self.upload.observe(self._on_upload, names="value")
            self.upload.add_class("nbops-upload-again")


def status_page(text: str, title: str, kind: str = "info"):
    """A page without a model: what happened and what to do."""
    import ipywidgets as w

    page = w.VBox(
        [_header(w, "Predictions from the champion model."), w.HTML(message_html(text, kind, title))]
    )
    page.add_class("nbops-app")
    page.add_class("nbops-status")
    return page


def build_app(env: dict[str, str] | None = None, cwd: Path | None = None):
    """The dashboard widget, or a friendly page saying why there is none. Never raises."""
    try:
        source = resolve_model_source(env, cwd)
        champion = load_champion(source)
        check_schema(champion.schema, source.label)
    except NoChampionError as exc:
        return status_page(str(exc), "No model to show yet")
    except NbopsError as exc:
        return status_page(
            f"{exc}\nThe dashboard cannot load the champion; ask whoever runs it to check the model.",
            "The model could not be loaded",
            "error",
        )
    except Exception as exc:  # noqa: BLE001 - last line: a page, never a traceback
        _log_to_server(exc)
        return status_page(
            f"Loading the champion failed ({type(exc).__name__}). The details are in the server log.",
            "The model could not be loaded",
            "error",
        )
    return Dashboard(champion)
