"""Warm a kernel for a notebook before its step starts.

The package's modules import their heavy libraries (mlflow, scikit-learn, seaborn) inside the
functions that use them, so that importing `nbops` costs nothing. A kernel that the runner starts
ahead of a step imports the notebook's own imports and then, through `preload`, what each nbops
module it uses lists in `PRELOAD`: the step then finds mlflow and seaborn already loaded.
"""

from __future__ import annotations

import importlib


def modules_for(names: list[str]) -> list[str]:
    """The PRELOAD lists of the named nbops modules, in order, without repeats."""
    out: list[str] = []
    for name in names:
        for heavy in getattr(importlib.import_module(name), "PRELOAD", ()):
            if heavy not in out:
                out.append(heavy)
    return out


def preload(names: list[str]) -> list[str]:
    """Import the PRELOAD libraries of the named nbops modules; returns what was imported."""
    heavy = modules_for(names)
    for name in heavy:
        importlib.import_module(name)
    return heavy
