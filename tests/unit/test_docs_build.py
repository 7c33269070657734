"""The docs site builds with `mkdocs build --strict` (a broken link, a missing anchor or a page left
out of the navigation fails), and its generated pages say what the code says: the params page
names every key of `nbops.params.Params`, the home page every documented make target."""

import ast
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from nbops.params import Params
from tests.conftest import REPO


def schema_fields(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    """Every dotted key of the model and its field, sections included, walked from the model."""
    fields = {}
    for name, field in model.model_fields.items():
        fields[prefix + name] = field
        section = section_of(field)
        if section is not None:
            fields.update(schema_fields(section, f"{prefix}{name}."))
    return fields


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def page_text(site: Path, name: str) -> str:
    return html.unescape((site / name).read_text(encoding="utf-8"))


def test_the_params_page_names_every_key_of_the_schema(site):
    text = page_text(site, "params.html")
    keys = list(schema_fields(Params))
    assert "data.synthetic.label_noise" in keys and "drift.alpha" in keys  # the walk goes deep
    rows = set(re.findall(r"<tr>\s*<td>(?:<a [^>]*>)?<code>([^<]+)</code>", text))  # a table row's first cell
    missing = [key for key in keys if key not in rows]
    assert missing == [], f"docs/params.md's generated reference misses {missing}"


def section_of(field: FieldInfo) -> type[BaseModel] | None:
    for sub in (field.annotation, *getattr(field.annotation, "__args__", ())):
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            return sub
    return None


def test_the_params_page_shows_every_keys_description(site):
    plain = " ".join(re.sub(r"<[^>]+>", "", page_text(site, "params.html")).split())
    for key, field in schema_fields(Params).items():
        section = section_of(field)
        text = field.description or (section.__doc__ if section else None)
        where = f"the docstring of {section.__name__}" if section else f"description= of {key}"
        assert text, f"{key} has no description: add {where} in src/nbops/params.py"
        first = " ".join(text.split("\n\n")[0].replace("`", "").split())
        assert first in plain, key


def test_the_home_page_lists_every_make_target_with_help(site):
    text = page_text(site, "index.html")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = re.findall(r"^([a-zA-Z_-]+):.*## ", makefile, flags=re.M)
    assert {"pipeline", "test", "docs", "params-schema"} <= set(targets)
    missing = [t for t in targets if f"<code>make {t}</code>" not in text]
    assert missing == [], missing


def test_the_site_loads_nothing_from_another_origin(site):
    for page in site.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert not re.findall(r'<(?:link|script|img)[^>]+(?:href|src)="(?:https?:)?//', text), page.name


PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TRACKED_ROOTS = (
    "src/",
    "tests/",
    "deploy/",
    "params/",
    "notebooks/",
    "benchmarks/",
    ".github/",
    "docs/",
    ".ci/",
)


def named_paths(text: str) -> set[str]:
    """Paths of the repository's own files named in code spans (not products, not patterns)."""
    spans = re.findall(r"`([^`\s]+)`", text)
    return {
        span.rstrip(":,.")
        for span in spans
        if span.startswith(TRACKED_ROOTS) and not re.search(r"[<*…{]|\.\.\.", span)
    }


def named_objects(text: str) -> set[str]:
    """Dotted names in the package named in code spans: `nbops.tracking.load_model`."""
    return set(re.findall(r"`(nbops(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`", text))


def defines(module_file: Path, name: str) -> bool:
    tree = ast.parse(module_file.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
        if isinstance(node, ast.ImportFrom | ast.Import) and any(
            (a.asname or a.name) == name for a in node.names
        ):
            return True
    return False


def is_tag(dotted: str) -> bool:
    """An MLflow tag the package writes or reads: `nbops.git_commit`, `nbops.previous_champion`."""
    sources = [f.read_text(encoding="utf-8") for f in (REPO / "src" / "nbops").rglob("*.py")]
    short = dotted.removeprefix("nbops.")
    return any(f'"{dotted}"' in s or f'TAG_PREFIX + "{short}"' in s for s in sources)


def resolves(dotted: str) -> bool:
    """A module of the package, or a name a module of it defines (read, not imported), or a tag."""
    if is_tag(dotted):
        return True
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = REPO / "src" / Path(*parts[:cut])
        for module in (base.with_suffix(".py"), base / "__init__.py"):
            if module.is_file():
                rest = parts[cut:]
                return not rest or (len(rest) == 1 and defines(module, rest[0])) or len(rest) > 1
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_file_and_name_a_page_mentions_exists(page):
    text = page.read_text(encoding="utf-8")
    gone = sorted(p for p in named_paths(text) if not (REPO / p).exists())
    assert gone == [], f"{page.name} names files that are not in the repository: {gone}"
    unknown = sorted(n for n in named_objects(text) if not resolves(n))
    assert unknown == [], f"{page.name} names what src/nbops does not define: {unknown}"
