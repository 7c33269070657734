"""mkdocs hook: the pages' reference tables, rendered from the code at build time.

`<!-- params-reference -->` becomes one table per params section, from the JSON schema of
`nbops.params.Params` (the schema `params/params.schema.json` publishes), so the page names every
key, type, default and description the code declares. `<!-- make-targets -->` becomes the table
`make help` prints, from the Makefile's `## ` comments.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARAMS_MARK = "<!-- params-reference -->"
TARGETS_MARK = "<!-- make-targets -->"
_TARGET = re.compile(r"^([a-zA-Z_-]+):.*## (.*)$")  # the pattern of `make help`'s awk


def _schema() -> dict:
    try:
        from nbops.params import params_json_schema
    except ImportError:  # mkdocs run from an interpreter without the editable install
        sys.path.insert(0, str(ROOT / "src"))
        from nbops.params import params_json_schema
    return params_json_schema()


def _resolve(node: dict, defs: dict) -> dict:
    while "$ref" in node:
        node = {**defs[node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _section(node: dict, defs: dict) -> dict | None:
    """The object schema with named keys inside `node` (a section, or a section or null)."""
    for option in [node, *node.get("anyOf", [])]:
        option = _resolve(option, defs)
        if "properties" in option:
            return option
    return None


_NAMES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}


def _type(node: dict, defs: dict) -> str:
    node = _resolve(node, defs)
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    if "anyOf" in node:
        return " or ".join(_type(option, defs) for option in node["anyOf"])
    if "properties" in node:
        return "section"
    kind = node.get("type")
    if kind == "null":
        return "null"
    if kind == "array":
        items = _type(node.get("items", {}), defs)
        low, high = node.get("minItems"), node.get("maxItems")
        count = f"{low} " if low is not None and low == high else ""
        return f"list of {count}{items}" + _bounds(node)
    if kind == "object":
        values = node.get("additionalProperties", True)
        return "mapping" if values is True else f"mapping of name → {_type(values, defs)}"
    return _NAMES.get(kind, "any") + _bounds(node)


def _bounds(node: dict) -> str:
    parts = []
    for key, sign in (
        ("exclusiveMinimum", ">"),
        ("minimum", "≥"),
        ("exclusiveMaximum", "<"),
        ("maximum", "≤"),
    ):
        if key in node:
            parts.append(f"{sign} {node[key]:,}" if isinstance(node[key], int) else f"{sign} {node[key]:g}")
    if "minLength" in node and node["minLength"] == node.get("maxLength"):
        parts.append(f"{node['minLength']} character{'s' if node['minLength'] != 1 else ''}")
    elif "minLength" in node:
        parts.append(f"at least {node['minLength']} character{'s' if node['minLength'] != 1 else ''}")
    if "pattern" in node:
        parts.append(f"matching `{node['pattern']}`")
    return f" ({', '.join(parts)})" if parts else ""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _default(name: str, node: dict, required: list[str]) -> str:
    if name in required:
        return "required"
    if "default" not in node:
        return ""
    return f"`{json.dumps(node['default'], ensure_ascii=False)}`"


def params_reference(schema: dict | None = None) -> str:
    """Markdown: the top-level keys, then one heading and table per section, nested ones after."""
    schema = schema or _schema()
    defs = schema.get("$defs", {})
    head = ["| key | type | default | what |", "|---|---|---|---|"]
    out: list[str] = []
    queue: list[tuple[str, dict]] = [("", schema)]
    while queue:
        prefix, obj = queue.pop(0)
        rows, nested = [], []
        for name, node in obj["properties"].items():
            key = prefix + name
            section = _section(node, defs)
            if section is not None:
                nested.append((key + ".", section))
                rows.append(
                    f"| [`{key}`](#{key.replace('.', '')}) | {_cell(_type(node, defs))} | "
                    f"{_default(name, node, obj.get('required', []))} | "
                    f"{_cell(_resolve(node, defs).get('description', '').split(chr(10) * 2)[0])} |"
                )
                continue
            description = node.get("description", "")
            rows.append(
                f"| `{key}` | {_cell(_type(node, defs))} | "
                f"{_default(name, node, obj.get('required', []))} | {_cell(description)} |"
            )
        title = f"`{prefix[:-1]}`" if prefix else "Top level"
        anchor = prefix[:-1].replace(".", "") if prefix else "top-level"
        out += [f"### {title} {{#{anchor}}}", ""]
        if prefix and obj.get("description"):
            out += [obj["description"].strip(), ""]
        out += [*head, *rows, ""]
        queue = nested + queue  # a nested section right after the one that holds it
    return "\n".join(out)


def make_targets(makefile: Path = ROOT / "Makefile") -> str:
    """Markdown: every target with a `## ` comment and its text, in the Makefile's order."""
    rows = ["| target | what |", "|---|---|"]
    for line in makefile.read_text(encoding="utf-8").splitlines():
        match = _TARGET.match(line)
        if match:
            text = _cell(match[2]).replace("<", "&lt;").replace("*", "\\*")  # `<name>`, `requirements*`
            rows.append(f"| `make {match[1]}` | {text} |")
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs hook
    if PARAMS_MARK in markdown:
        markdown = markdown.replace(PARAMS_MARK, params_reference())
    if TARGETS_MARK in markdown:
        markdown = markdown.replace(TARGETS_MARK, make_targets())
    return markdown
