"""The promotion gate: when may a challenger become `champion`?

Rules (both models scored on the same held-out rows; `metric` is `gate.metric`, and a metric's
"better" is its direction: higher for macro-F1 or R², lower for RMSE or MAE):
1. the metric and every metric with a floor must be present and finite;
2. the challenger must meet every floor (`gate.floors`; for an error such as RMSE a ceiling);
3. no champion yet -> promote;
4. no metric with a floor may fall more than `gate.tolerance` behind the champion's;
5. the metric must be better than the champion's beyond noise: the paired interval of Δ metric
   (nbops.ml.bootstrap, both models on the same rows) must lie beyond `gate.min_improvement` on
   the better side; without one (`gate.paired: false`), strictly better. A tie keeps the champion.
`promote: false` (pull requests) decides and reports but never moves an alias.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from nbops.ml.metrics import floor_word, gain, higher_is_better, meets_floor

PRIMARY_METRIC = "macro_f1"  # the default of classification; gate.metric names the run's


@dataclass
class Decision:
    promote: bool
    verdict: str  # "promote", "keep champion", "reject", "not promoted (promote: false)"
    reasons: list[str] = field(default_factory=list)
    deltas: dict[str, float] = field(default_factory=dict)
    challenger_version: str | None = None
    champion_version: str | None = None
    interval: dict | None = None  # nbops.ml.bootstrap.PairedInterval.to_dict() when compared paired
    metric: str = PRIMARY_METRIC

    def to_dict(self) -> dict:
        return asdict(self)


def _value(metrics: dict | None, name: str) -> float | None:
    if not metrics:
        return None
    value = metrics.get(name)
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def gated_metrics(metric: str, floors: dict[str, float]) -> list[str]:
    """The metric ranked by, then every other metric with a floor."""
    return list(dict.fromkeys([metric, *floors]))


def decide_promotion(
    challenger: dict,
    champion: dict | None,
    *,
    metric: str = PRIMARY_METRIC,
    floors: dict[str, float] | None = None,
    tolerance: float = 0.0,
    allow_promotion: bool = True,
    challenger_version: str | None = None,
    champion_version: str | None = None,
    interval: dict | None = None,
    min_improvement: float = 0.0,
) -> Decision:
    """Pure decision from two metric dicts; `champion=None` means there is no champion yet.
    `interval`: the paired bootstrap record of Δ (challenger − champion) of `metric`. `floors`
    as `gate_arguments` gives them (a params file's `gate.min_macro_f1` folded in)."""
    floors = dict(floors or {})
    gated = gated_metrics(metric, floors)
    versions = {"challenger_version": challenger_version, "champion_version": champion_version}

    def decided(promote: bool, verdict: str, reasons: list[str], deltas=None, compared=None) -> Decision:
        return Decision(promote, verdict, reasons, deltas or {}, **versions, interval=compared, metric=metric)

    values, missing = _read(challenger, gated)
    if missing:
        return decided(
            False, "reject", [f"challenger metric {m} is missing or not a number" for m in missing]
        )
    reasons = _floor_reasons(values, floors)
    if any(not meets_floor(m, values[m], f) for m, f in floors.items()):
        return decided(False, "reject", reasons)
    deltas: dict[str, float] = {}
    if champion is None:
        reasons.append("no champion yet")
        promote = True
    elif champion_version is not None and str(champion_version) == str(challenger_version):
        reasons.append("challenger is already the champion")
        promote = False
    else:
        champ, champ_missing = _read(champion, gated)
        if champ_missing:
            reasons.append("champion metrics are missing: cannot compare, champion kept")
            return decided(False, "keep champion", reasons)
        deltas = {m: values[m] - champ[m] for m in gated}
        promote = _beats_champion(
            metric, floors, deltas, champ, tolerance, interval, min_improvement, reasons
        )
    compared = interval if champion is not None else None
    if promote and not allow_promotion:
        reasons.append("promotion disabled (promote: false): no alias moved")
        return decided(False, "not promoted (promote: false)", reasons, deltas, compared)
    return decided(promote, "promote" if promote else "keep champion", reasons, deltas, compared)


def _read(metrics: dict, names: list[str]) -> tuple[dict[str, float], list[str]]:
    read = {m: _value(metrics, m) for m in names}
    return {m: v for m, v in read.items() if v is not None}, [m for m, v in read.items() if v is None]


def _floor_reasons(values: dict[str, float], floors: dict[str, float]) -> list[str]:
    reasons = []
    for metric, floor in floors.items():
        word = floor_word(metric)
        if meets_floor(metric, values[metric], floor):
            reasons.append(f"{metric} {values[metric]:.4f} meets the {word} {floor:.4f}")
        else:
            side = "below" if higher_is_better(metric) else "above"
            reasons.append(f"{metric} {values[metric]:.4f} is {side} the {word} {floor:.4f}")
    return reasons


def _beats_champion(metric, floors, deltas, champ, tolerance, interval, min_improvement, reasons) -> bool:
    """Rules 4 and 5 against a champion with metrics; each finding appended to `reasons`."""
    promote = True
    for name in gated_metrics(metric, floors):
        if name in floors and gain(name, deltas[name]) < -tolerance:
            promote = False
            behind = -gain(name, deltas[name])
            reasons.append(f"{name} regresses by {behind:.4f} (> tolerance {tolerance:.4f})")
    if not promote:
        return False
    progress = gain(metric, deltas[metric])
    if progress <= 0:
        word = "ties" if progress == 0 else "is below" if higher_is_better(metric) else "is above"
        reasons.append(f"{metric} {word} the champion's ({champ[metric]:.4f})")
        return False
    if interval is not None:
        promote, reason = _beyond_noise(interval, min_improvement)
        reasons.append(reason)
        return promote
    reasons.append(f"{metric} improves by {progress:.4f} over the champion's {champ[metric]:.4f}")
    return True


def _beyond_noise(interval: dict, min_improvement: float) -> tuple[bool, str]:
    """Whether the interval's near end clears `min_improvement` on the better side (the lower end
    when higher is better, the upper end of an error's Δ), said as a reviewer reads it."""
    from nbops.ml.bootstrap import describe

    higher = higher_is_better(interval["metric"])
    near = interval["delta"]["low"] if higher else -interval["delta"]["high"]
    bar = (
        "zero"
        if min_improvement == 0
        else f"the minimum improvement {min_improvement * (1 if higher else -1):+.3f}"
    )
    if not math.isfinite(near) or near <= min_improvement:
        return False, f"{describe(interval)} is within {'noise' if min_improvement == 0 else bar}"
    end, side = ("lower", "above") if higher else ("upper", "below")
    return True, f"{describe(interval)}: its {end} end is {side} {bar}"


def gate_arguments(gate) -> dict:
    """decide_promotion's settings from a params file's `gate` section (GateParams)."""
    return {
        "metric": gate.metric or PRIMARY_METRIC,
        "floors": dict(gate.floors),
        "tolerance": gate.tolerance,
        "min_improvement": gate.min_improvement,
    }
