"""One prediction: the form's inputs from the training schema, and the model's answer."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbops.serve.champion import Champion

if TYPE_CHECKING:
    import pandas as pd


def build_inputs(schema: dict[str, Any], most_frequent: dict[str, Any] | None = None) -> dict[str, Any]:
    """One bounded number box per numeric column (training range, starting at the median), one
    dropdown per categorical (starting at its most frequent value when `most_frequent` names it,
    else at the first). Each label sits above its input (STYLE), so a long column name fits."""
    import ipywidgets as w

    most_frequent = most_frequent or {}
    inputs: dict[str, Any] = {}
    style = {"description_width": "initial"}  # the label's own width: nothing cut off
    for col, info in schema["numeric"].items():
        low, high = float(info["min"]), float(info["max"])
        median = round(float(info.get("median", low)), 2)
        if info.get("integer"):
            box = w.BoundedIntText(
                value=round(median), min=int(low), max=int(high), step=1, description=col, style=style
            )
        else:
            # step=None: any decimal is accepted (the arrows move by 1)
            box = w.BoundedFloatText(value=median, min=low, max=high, step=None, description=col, style=style)
        inputs[col] = box
    for col, values in schema["categorical"].items():
        options = [str(v) for v in values]
        start = str(most_frequent.get(col, options[0]))
        inputs[col] = w.Dropdown(
            options=options, value=start if start in options else options[0], description=col, style=style
        )
    for col, widget in inputs.items():
        widget.layout.width = "16em"
        widget.add_class("nbops-input")
        widget.add_class(f"nbops-input-{_css_name(col)}")
    return inputs


def _range_text(info: dict[str, Any]) -> str:
    return f"{float(info['min']):g} to {float(info['max']):g}"


def _css_name(column: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in column)


def read_inputs(inputs: dict[str, Any]) -> pd.DataFrame:
    """The widgets' values as a one-row table with the model's feature columns."""
    import pandas as pd

    return pd.DataFrame([{col: widget.value for col, widget in inputs.items()}])


@dataclass
class Prediction:
    label: str  # the predicted class, or the predicted number as text
    probabilities: dict[str, float]  # highest first; none for a regressor
    seconds: float = 0.0
    typical_error: tuple[str, float] | None = None  # a regressor's held-out (metric, value): ("rmse", 3.1)


def number_text(value: float) -> str:
    """A predicted number to four significant digits and never fewer than its integer digits,
    without an exponent for everyday sizes: 250,000, 3.142, 0.001234."""
    import math

    if not math.isfinite(value) or value == 0 or abs(value) >= 1e15:
        return f"{value:.4g}"
    decimals = max(0, 3 - math.floor(math.log10(abs(value))))
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if decimals else text  # 8.5, not 8.500 (as %g)


def typical_error(card: dict[str, Any]) -> tuple[str, float] | None:
    """The model's typical error on its held-out rows, from the card: RMSE, else MAE."""
    metrics = card.get("metrics") or {}
    for name in ("rmse", "mae"):
        if isinstance(metrics.get(name), (int, float)):
            return name, float(metrics[name])
    return None


def predict_one(champion: Champion, row: pd.DataFrame) -> Prediction:
    from nbops.ml.models import predict_table

    start = time.perf_counter()
    table = predict_table(champion.model, row[champion.features])
    elapsed = time.perf_counter() - start
    first = table.iloc[0]
    probs = {c.removeprefix("p_"): float(first[c]) for c in table.columns if c.startswith("p_")}
    if not probs:  # a regressor: the number and how far off the model typically is
        return Prediction(number_text(float(first["prediction"])), {}, elapsed, typical_error(champion.card))
    probs = dict(sorted(probs.items(), key=lambda kv: -kv[1]))
    return Prediction(str(first["prediction"]), probs, elapsed)
