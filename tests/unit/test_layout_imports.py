"""The package's layout: no import circles, no module too long to read, the folders' import
budgets (read statically: every import a module holds, lazy and TYPE_CHECKING ones included)."""

import ast
from pathlib import Path

import pytest

from nbops.runner.codehash import PACKAGE_DIR, imported_modules, module_closure

MAX_LINES = 400
MAX_FUNCTION_LINES = 60


def package_modules() -> dict[str, Path]:
    modules = {}
    for file in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = file.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = file
    return modules


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, file in package_modules().items():
        tree = ast.parse(file.read_bytes(), str(file))
        # a package's own __init__ is run by importing any module in it: not an edge of its own
        graph[name] = {m for m in imported_modules(tree, name) if m != name and not name.startswith(m + ".")}
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as the path that closes it, or None."""
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_circle():
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_circle_finder_finds_a_circle_through_three_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_circle(graph) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_is_over_400_lines():
    long = {
        name: n
        for name, file in package_modules().items()
        if (n := len(file.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def long_functions(tree: ast.AST, limit: int) -> dict[str, int]:
    """Functions (and methods) of `tree` longer than `limit` lines, decorators and docstring included."""
    return {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > limit
    }


def test_no_function_is_over_60_lines():
    long = {
        f"{name}.{function}": n
        for name, file in package_modules().items()
        for function, n in long_functions(ast.parse(file.read_bytes()), MAX_FUNCTION_LINES).items()
    }
    assert long == {}, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_length_check_counts_a_function_from_def_to_its_last_line():
    tree = ast.parse("def short():\n    return 1\n\n\ndef long():\n" + "    x = 1\n" * 60)
    assert long_functions(tree, 60) == {"long": 61}


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("nbops.ml", ("nbops.runner", "nbops.serve", "nbops.sweep")),  # what kernels import
        ("nbops.serve", ("nbops.runner", "nbops.sweep")),  # the served app
        ("nbops.runner", ("nbops.serve", "nbops.sweep")),
    ],
)
def test_each_process_folder_imports_only_what_it_may(folder, forbidden):
    """The kernel's code (ml/) knows nothing of the runner or the app; the app and the runner
    know nothing of each other: a folder's closure is its import budget."""
    modules = [name for name in package_modules() if name.startswith(folder + ".")]
    reached = module_closure(modules)
    assert [m for m in reached if m.startswith(forbidden)] == []


def test_layout_and_shared_types_import_nothing_above_them():
    graph = import_graph()
    assert graph["nbops.layout"] == set()
    assert {m for m in module_closure(["nbops.runner.plan"]) if m.startswith("nbops.runner.")} <= {
        "nbops.runner.plan",
        "nbops.runner.notebook",
        "nbops.runner.stamps",
        "nbops.runner.codehash",
        "nbops.runner.store_probe",
    }


def test_every_command_the_cli_delegates_names_a_module_that_runs_it():
    import importlib

    from nbops.cli import DELEGATED

    for module in DELEGATED.values():
        loaded = importlib.import_module(module)
        assert callable(loaded.add_arguments) and callable(loaded.run), module


def test_every_module_the_package_runs_by_name_exists():
    """`-m` targets and module names given to importlib: a moved module must not leave one behind."""
    named = set()
    for file in package_modules().values():
        tree = ast.parse(file.read_bytes())
        for node in ast.walk(tree):
            if isinstance(node, ast.List | ast.Tuple):
                items = [getattr(e, "value", None) for e in node.elts]
                named |= {
                    b for a, b in zip(items, items[1:], strict=False) if a == "-m" and isinstance(b, str)
                }
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and str(arg.value).startswith("nbops"):
                    named.add(arg.value)
    assert {"nbops.runner.spare_process", "nbops.sweep.worker", "nbops.kernel_parent"} <= named
    assert [m for m in named if m.startswith("nbops") and m not in package_modules()] == []
