"""Read-only look-ups in a local sqlite MLflow store, without importing mlflow.

The runner's cache check and its no-op path must stay fast (no mlflow import: ~1-2 s), yet a
step whose products name a run or a model version must not be taken as done when the store no
longer has them (a store deleted and created anew under the same URI). For a sqlite store these
questions are one indexed query each on MLflow's own tables, opened read-only. Any other store
(a tracking server) answers None: unknown, and the caller trusts its stamps.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _query(uri: str, sql: str, args: tuple) -> list[tuple] | None:
    path = _sqlite_path(uri)
    if path is None:
        return None
    if not path.is_file():
        return []  # no store at all: it holds nothing
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        ) as db:
            return db.execute(sql, args).fetchall()
    except sqlite3.Error:
        return None  # a store of another shape, or busy: unknown


def has_run(uri: str, run_id: str) -> bool | None:
    rows = _query(uri, "SELECT 1 FROM runs WHERE run_uuid = ?", (run_id,))
    return None if rows is None else bool(rows)


def has_version(uri: str, model_name: str, version: str | int) -> bool | None:
    rows = _query(
        uri, "SELECT 1 FROM model_versions WHERE name = ? AND version = ?", (model_name, int(version))
    )
    return None if rows is None else bool(rows)


def alias_version(uri: str, model_name: str, alias: str) -> str | None:
    """The version behind `alias`, "" when the store has none, None when it cannot tell."""
    rows = _query(
        uri, "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?", (model_name, alias)
    )
    if rows is None:
        return None
    return str(rows[0][0]) if rows else ""
