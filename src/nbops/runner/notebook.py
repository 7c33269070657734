"""Reading a notebook without running it: its source hash, its parameters, its imports."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from nbops.exceptions import NbopsError
from nbops.products import params_hash

PRELOADER = "nbops.runner.preload"  # what a warm kernel imports to load the heavy libraries


def read_notebook_source(path: Path) -> dict:
    """The notebook JSON, for hashing and for finding its parameters cell (no nbformat import)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NbopsError(f"{path}: notebook not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise NbopsError(f"{path}: not a readable notebook (invalid JSON)") from None


def source_hash(nb: dict) -> str:
    """Hash of cell types and sources only: outputs, counts and metadata don't count."""
    cells = [
        (c.get("cell_type"), "".join(c.get("source", "")), sorted(c.get("metadata", {}).get("tags", [])))
        for c in nb.get("cells", [])
    ]
    return params_hash(cells)


def declared_parameters(nb: dict, path: Path) -> list[str]:
    """Names assigned in the one cell tagged `parameters` (parsed with ast, not executed)."""
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise NbopsError(f"{path}: needs exactly one cell tagged 'parameters', found {len(cells)}")
    try:
        tree = ast.parse("".join(cells[0].get("source", "")))
    except SyntaxError as exc:
        raise NbopsError(f"{path}: parameters cell line {exc.lineno}: {exc.msg}") from None
    names = []
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def warmup_code(nb: dict) -> str:
    """The notebook's top-level import statements (parsed, not executed here), then the heavy
    libraries its nbops modules use lazily (nbops.runner.preload): run silently in a kernel started
    ahead of its step, so the step finds its libraries already loaded."""
    lines, package_modules = [], []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code" or "parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        try:
            tree = ast.parse("".join(cell.get("source", "")))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                package_modules += _package_modules(node)
                lines.append(ast.unparse(node))
    if package_modules:
        names = list(dict.fromkeys(package_modules))
        lines += [f"import {PRELOADER}", f"{PRELOADER}.preload({names!r})"]
    return "\n".join(dict.fromkeys(lines))


def _package_modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package modules one import statement loads, in its order (`from nbops.ml import
    plots` loads nbops.ml.plots; `from nbops.ml.data import read_table` loads nbops.ml.data)."""
    from nbops.runner.codehash import module_file

    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("nbops.")]
    if node.level or node.module is None or node.module.split(".")[0] != "nbops":
        return []
    subs = [f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}")]
    return subs or ([node.module] if node.module != "nbops" else [])
