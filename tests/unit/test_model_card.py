"""The dashboard's model card: what answered, and the gate's evidence when it was promoted."""

import re
from types import SimpleNamespace

from nbops.serve import page
from nbops.serve.champion import model_card

INTERVAL = "macro_f1 +0.608 (95% interval +0.38 to +0.70) on 40 held-out rows"


def version(tags):
    return SimpleNamespace(name="drug-classifier", version=3, tags=tags)


RUN = SimpleNamespace(info=SimpleNamespace(run_id="1a2b3c4d", start_time=1_764_590_400_000))


def facts(card_html: str) -> dict[str, str]:
    return dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", card_html))


def test_a_champion_promoted_by_the_paired_gate_shows_its_interval():
    tags = {"nbops.gate.verdict": "promote", "nbops.gate.interval": INTERVAL, "nbops.git_commit": "ab" * 20}
    card = model_card(version(tags), RUN, {"macro_f1": 0.9, "rows": 40})
    assert (card["gate_verdict"], card["gate_interval"]) == ("promote", INTERVAL)
    shown = facts(page.model_card_html(card))
    assert shown["gate"] == f"promote: {INTERVAL}"
    assert shown["model"] == "drug-classifier v3 (alias champion)"
    assert shown["trained"] == "2025-12-01 12:00 UTC" and shown["commit"] == "ab" * 6


def test_a_first_champion_has_no_gate_row():
    """The first champion was compared with nothing: no interval, no row claiming one."""
    card = model_card(version({"nbops.gate.verdict": "promote"}), RUN, {"macro_f1": 0.9, "rows": 40})
    shown = facts(page.model_card_html(card))
    assert "gate" not in shown and shown["commit"] == "unknown"
