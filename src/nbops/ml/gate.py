"""The promotion gate: when may a challenger become `champion`?

Rules (both models scored on the same held-out rows):
1. every gated metric (macro-F1, accuracy) must be present and finite;
2. the challenger must meet the floors `gate.min_macro_f1` and `gate.min_accuracy`;
3. no champion yet -> promote;
4. neither metric may fall more than `gate.tolerance` below the champion's;
5. macro-F1 must be higher than the champion's beyond noise: with the paired interval of
   Δ macro-F1 (nbops.ml.bootstrap, both models on the same rows), its lower end must be above
   `gate.min_improvement`; without one (`gate.paired: false`), strictly higher. A tie keeps
   the champion.
`promote: false` (pull requests) decides and reports but never moves an alias.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import partial

GATED_METRICS = ("macro_f1", "accuracy")
PRIMARY_METRIC = "macro_f1"


@dataclass
class Decision:
    promote: bool
    verdict: str  # "promote", "keep champion", "reject", "not promoted (promote: false)"
    reasons: list[str] = field(default_factory=list)
    deltas: dict[str, float] = field(default_factory=dict)
    challenger_version: str | None = None
    champion_version: str | None = None
    interval: dict | None = None  # nbops.ml.bootstrap.PairedInterval.to_dict() when compared paired

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


def decide_promotion(
    challenger: dict,
    champion: dict | None,
    *,
    min_macro_f1: float,
    min_accuracy: float,
    tolerance: float,
    allow_promotion: bool = True,
    challenger_version: str | None = None,
    champion_version: str | None = None,
    interval: dict | None = None,
    min_improvement: float = 0.0,
) -> Decision:
    """Pure decision from two metric dicts; `champion=None` means there is no champion yet.
    `interval`: the paired bootstrap record of Δ (challenger − champion) of the primary metric."""
    decision = partial(Decision, challenger_version=challenger_version, champion_version=champion_version)
    reasons: list[str] = []
    read = {m: _value(challenger, m) for m in GATED_METRICS}
    missing = [m for m, v in read.items() if v is None]
    if missing:
        reasons = [f"challenger metric {m} is missing or not a number" for m in missing]
        return decision(False, "reject", reasons)
    values = {m: v for m, v in read.items() if v is not None}

    floors = {"macro_f1": min_macro_f1, "accuracy": min_accuracy}
    for metric, floor in floors.items():
        if values[metric] < floor:
            reasons.append(f"{metric} {values[metric]:.4f} is below the floor {floor:.4f}")
        else:
            reasons.append(f"{metric} {values[metric]:.4f} meets the floor {floor:.4f}")
    if any(values[m] < floors[m] for m in floors):
        return decision(False, "reject", reasons)

    deltas: dict[str, float] = {}
    if champion is None:
        reasons.append("no champion yet")
        promote = True
    elif champion_version is not None and str(champion_version) == str(challenger_version):
        reasons.append("challenger is already the champion")
        promote = False
    else:
        champ_read = {m: _value(champion, m) for m in GATED_METRICS}
        if any(v is None for v in champ_read.values()):
            reasons.append("champion metrics are missing: cannot compare, champion kept")
            return decision(False, "keep champion", reasons)
        champ = {m: v for m, v in champ_read.items() if v is not None}
        deltas = {m: values[m] - champ[m] for m in GATED_METRICS}
        promote = True
        for metric in GATED_METRICS:
            if deltas[metric] < -tolerance:
                promote = False
                reasons.append(f"{metric} regresses by {-deltas[metric]:.4f} (> tolerance {tolerance:.4f})")
        if promote and deltas[PRIMARY_METRIC] <= 0:
            promote = False
            word = "ties" if deltas[PRIMARY_METRIC] == 0 else "is below"
            reasons.append(f"{PRIMARY_METRIC} {word} the champion's ({champ[PRIMARY_METRIC]:.4f})")
        elif promote and interval is not None:
            promote, reason = _beyond_noise(interval, min_improvement)
            reasons.append(reason)
        elif promote:
            reasons.append(
                f"{PRIMARY_METRIC} improves by {deltas[PRIMARY_METRIC]:.4f} "
                f"over the champion's {champ[PRIMARY_METRIC]:.4f}"
            )

    compared = interval if champion is not None else None
    if promote and not allow_promotion:
        reasons.append("promotion disabled (promote: false): no alias moved")
        return decision(False, "not promoted (promote: false)", reasons, deltas, interval=compared)
    verdict = "promote" if promote else "keep champion"
    return decision(promote, verdict, reasons, deltas, interval=compared)


def _beyond_noise(interval: dict, min_improvement: float) -> tuple[bool, str]:
    """Whether the interval's lower end clears `min_improvement`, said as a reviewer reads it."""
    from nbops.ml.bootstrap import describe

    low = interval["delta"]["low"]
    if not math.isfinite(low) or low <= min_improvement:
        bar = "noise" if min_improvement == 0 else f"the minimum improvement {min_improvement:+.3f}"
        return False, f"{describe(interval)} is within {bar}"
    above = "zero" if min_improvement == 0 else f"the minimum improvement {min_improvement:+.3f}"
    return True, f"{describe(interval)}: its lower end is above {above}"
