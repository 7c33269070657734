"""Warm a kernel for a notebook before its step starts.

The package's modules import their heavy libraries (mlflow, scikit-learn, seaborn) inside the
functions that use them, so that importing `nbops` costs nothing. A kernel that the runner starts
ahead of a step imports the notebook's own imports and then, through `preload`, what each nbops
module it uses lists in `PRELOAD`: the step then finds mlflow and seaborn already loaded.
"""

from __future__ import annotations

import importlib
import sys

# Imported by jsonschema, when installed, only to check the "iri" string format; building its
# grammar costs ~1 s of CPU on a quiet machine (3 s on a busy 2-core one). It is installed for
# Voila (jupyter-events asks for jsonschema[format-nongpl]); notebook validation never checks it.
UNUSED_BY_THE_RUNNER = ("rfc3987_syntax",)


def modules_for(names: list[str]) -> list[str]:
    """The PRELOAD lists of the named nbops modules, then what their `preload_for_environment()`
    adds for this process (the tracking store's client), in order, without repeats."""
    out: list[str] = []
    for name in names:
        module = importlib.import_module(name)
        more: tuple[str, ...] | list[str] = getattr(module, "preload_for_environment", tuple)()
        for heavy in (*getattr(module, "PRELOAD", ()), *more):
            if heavy not in out:
                out.append(heavy)
    return out


def preload(names: list[str]) -> list[str]:
    """Import the PRELOAD libraries of the named nbops modules; returns what was imported."""
    heavy = modules_for(names)
    for name in heavy:
        importlib.import_module(name)
    return heavy


def skip_unused_imports() -> None:
    """Keep this process from importing UNUSED_BY_THE_RUNNER (an import of it raises ImportError,
    which jsonschema handles by leaving that format unchecked). Call before papermill or nbconvert
    is imported; a module already imported is left alone. Never called in Voila's process."""
    for name in UNUSED_BY_THE_RUNNER:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None makes the import raise
