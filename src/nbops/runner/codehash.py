"""Which of the package's modules a step runs, read statically, and the hash of their source.

A notebook's imports of `nbops` modules are followed through the package's own imports (every
`import`/`from ... import` in a module, function-level ones included, relative ones resolved),
so a step's key changes when code it can run changes, and only then: an edit under `serve/`
reruns no pipeline step. Parsing only (ast): nothing is imported here.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "nbops"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # read at each call: tests point it at a copy


def module_file(name: str, package_dir: Path | None = None) -> Path | None:
    """The source file of package module `name` (`nbops.ml.data`), or None when there is none."""
    package_dir = package_dir or PACKAGE_DIR
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_package(name: str, package_dir: Path) -> bool:
    file = module_file(name, package_dir)
    return file is not None and file.name == "__init__.py"


def imported_modules(tree: ast.AST, module: str, package_dir: Path | None = None) -> set[str]:
    """The package modules `tree` (the source of `module`, "" for a notebook) imports anywhere."""
    package_dir = package_dir or PACKAGE_DIR
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, package_dir)
            if base is None:
                continue
            found.add(base)
            # `from nbops.ml import data`: a submodule; `from nbops.ml.data import read_table`: a name
            subs = (f"{base}.{a.name}" for a in node.names)
            found.update(s for s in subs if module_file(s, package_dir))
    return {m for m in found if m.split(".")[0] == PACKAGE and module_file(m, package_dir)}


def _absolute(node: ast.ImportFrom, module: str, package_dir: Path) -> str | None:
    if not node.level:
        return node.module
    if not module:
        return None  # a relative import outside the package
    parts = module.split(".")
    here = parts if _is_package(module, package_dir) else parts[:-1]
    if node.level - 1 > len(here) - 1:
        return None
    here = here[: len(here) - (node.level - 1)]
    return ".".join([*here, *([node.module] if node.module else [])])


def _with_parents(name: str) -> list[str]:
    """Importing `nbops.ml.data` runs `nbops/__init__.py` and `nbops/ml/__init__.py` too."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def _module_imports(file: Path, stamp: tuple[int, int], module: str, package_dir: Path) -> frozenset[str]:
    tree = ast.parse(file.read_bytes(), str(file))
    return frozenset(imported_modules(tree, module, package_dir))


def _stamp(file: Path) -> tuple[int, int]:
    info = file.stat()
    return info.st_mtime_ns, info.st_size


def module_closure(roots: Iterable[str], package_dir: Path | None = None) -> list[str]:
    """`roots` and every package module they import, directly or through each other (sorted)."""
    package_dir = package_dir or PACKAGE_DIR
    seen: set[str] = set()
    todo = [p for r in roots if module_file(r, package_dir) for p in _with_parents(r)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        file = module_file(name, package_dir)
        if file is None:
            continue
        for imported in _module_imports(file, _stamp(file), name, package_dir):
            todo += [p for p in _with_parents(imported) if p not in seen]
    return sorted(m for m in seen if module_file(m, package_dir))


def notebook_modules(nb: dict, package_dir: Path | None = None) -> set[str]:
    """The package modules a notebook's code cells import (cells that do not parse are skipped:
    the step reports them when it runs)."""
    package_dir = package_dir or PACKAGE_DIR
    found: set[str] = set()
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        try:
            tree = ast.parse("".join(cell.get("source", "")))
        except SyntaxError:
            continue
        found |= imported_modules(tree, "", package_dir)
    return found


def code_hash(modules: list[str], package_dir: Path | None = None) -> str:
    """Hash of the named modules' paths and bytes."""
    package_dir = package_dir or PACKAGE_DIR
    digest = hashlib.sha256()
    for name in sorted(modules):
        file = module_file(name, package_dir)
        if file is not None:
            digest.update(file.relative_to(package_dir).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def notebook_code_hash(nb: dict, extra: tuple[str, ...] = (), package_dir: Path | None = None) -> str:
    """Hash of the source of what a notebook can run of the package (plus `extra` roots)."""
    package_dir = package_dir or PACKAGE_DIR
    return code_hash(module_closure(notebook_modules(nb, package_dir) | set(extra), package_dir), package_dir)


def package_hash(package_dir: Path | None = None) -> str:
    """Hash of every module of the package (unparsed): the no-op fast path's fingerprint."""
    package_dir = package_dir or PACKAGE_DIR
    digest = hashlib.sha256()
    for file in sorted(package_dir.rglob("*.py")):
        digest.update(file.relative_to(package_dir).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
