"""Reading a YAML file bounded in size, depth and aliases (safe loader, no merge keys): a params
or sweep file is refused with one line before it can cost memory or time."""

from __future__ import annotations

import os
import reprlib
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.composer import Composer
from yaml.error import Mark
from yaml.events import AliasEvent

from nbops.exceptions import ParamsError

MAX_PARAMS_BYTES = 1 << 20  # 1 MB: a params file is a page of YAML; this is a thousand pages
MAX_YAML_DEPTH = 32  # nesting levels (the schema has three; model.params may nest a little)
_QUOTED = 80  # characters of a value quoted in a message


def shorten(text: str, limit: int = _QUOTED) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quoted(value: Any, limit: int = _QUOTED) -> str:
    """repr(value) cut to `limit` characters with '…': messages quote what a user wrote, and a
    value can be a megabyte. reprlib stops early, so quoting a long list costs little."""
    return shorten(_REPR.repr(value), limit)


class _ShortRepr(reprlib.Repr):
    def repr_str(self, x: str, level: int) -> str:  # cut at the end, as shorten does
        return repr(x) if len(x) <= self.maxstring else repr(x[: self.maxstring - 1] + "…")


_REPR = _ShortRepr()  # (keyword arguments only from Python 3.12)
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 8, 8, 6, 6
_REPR.maxstring = _REPR.maxother = _QUOTED


class YamlRefused(yaml.MarkedYAMLError):
    """Valid YAML this project does not read: an alias, a duplicate key, deep nesting."""

    def __init__(self, problem: str, mark: Mark):
        super().__init__(problem=problem, problem_mark=mark)
        self.line = mark.line + 1


_MERGE_TAGS = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")

if TYPE_CHECKING or not hasattr(yaml, "CSafeLoader"):
    # PyYAML without libyaml: the pure-Python safe loader already composes with Composer
    _SafeLoader = yaml.SafeLoader
else:

    class _SafeLoader(Composer, yaml.CSafeLoader):
        """libyaml's scanner and parser, with the nodes composed by the Python Composer."""

        def __init__(self, stream):
            yaml.CSafeLoader.__init__(self, stream)
            Composer.__init__(self)


class _BoundedLoader(_SafeLoader):
    """libyaml's safe loader (same safe constructors: a `!!python/object` tag is refused), with
    the nodes composed here so that an alias is refused before anything could expand it (a
    1.4 KB file of nested aliases expands into gigabytes wherever it is walked: validation,
    model_dump, a repr), and a mapping's keys checked for duplicates (YAML keeps the last)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            event = self.get_event()
            raise YamlRefused(
                f"YAML alias '*{shorten(event.anchor)}' refused: write the value out "
                "(aliases can expand a small file into gigabytes)",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YamlRefused(
                    f"nested more than {MAX_YAML_DEPTH} levels deep", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag in _MERGE_TAGS:
                    continue  # a merge key (`<<`); a list or mapping as key is unhashable anyway
                key = self.construct_object(key_node, deep=deep)  # cached: built once
                line = first.setdefault(key, key_node.start_mark.line + 1)
                if line != key_node.start_mark.line + 1:
                    raise YamlRefused(
                        f"duplicate key {quoted(key)} (first at line {line}): keep one", key_node.start_mark
                    )
        return super().construct_mapping(node, deep=deep)


def safe_yaml(text: str) -> Any:
    """Parse params YAML: safe constructors (libyaml's C parser when PyYAML has it), no aliases,
    no duplicate keys, bounded nesting. Raises yaml.YAMLError (YamlRefused for the refusals)."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"


def read_yaml(path: str | Path, label: str) -> Any:
    """A params (or sweep) file, bounded: a regular file (a FIFO or /dev/zero would be read
    forever) of at most MAX_PARAMS_BYTES, then `safe_yaml`. Raises FileNotFoundError when there
    is no such file (callers name what was missing), ParamsError with one line otherwise."""
    mb = MAX_PARAMS_BYTES / 2**20
    try:
        info = os.stat(path)  # before opening: opening a device can do things (a tape rewinds)
        if not stat.S_ISREG(info.st_mode):
            raise ParamsError(f"{label}: not a regular file ({_kind(info.st_mode)})")
        if info.st_size > MAX_PARAMS_BYTES:
            size = info.st_size / 2**20
            raise ParamsError(f"{label}: {size:.1f} MB, more than the {mb:g} MB a params file may have")
        # O_NONBLOCK: if a FIFO took the file's place since the stat, opening it does not wait
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ParamsError(f"{label}: not a regular file")
            blob = fh.read(MAX_PARAMS_BYTES + 1)  # bounded: a file in /proc says its size is 0
        if len(blob) > MAX_PARAMS_BYTES:
            raise ParamsError(f"{label}: more than the {mb:g} MB a params file may have")
        text = blob.decode("utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{label}: cannot read params file ({exc.__class__.__name__})") from None
    try:
        return safe_yaml(text)
    except YamlRefused as exc:
        raise ParamsError(f"{label}: line {exc.line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = shorten(getattr(exc, "problem", None) or exc.__class__.__name__, 200)
        raise ParamsError(f"{label}: not valid YAML{where}: {problem}") from None
