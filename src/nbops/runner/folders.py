"""Which build and reports folder a params file uses: build/<stem>/ and reports/<stem>/.

Two params files in different folders with the same stem (params/smoke.yaml and
params/old/smoke.yaml) would share those folders and undo each other's cache: the first one
to run owns the name (build/<stem>/.params records it), and the other is refused with one line
until it is renamed. A name whose owner file is gone (renamed, moved) is taken by the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nbops.exceptions import NbopsError
from nbops.layout import OWNER_FILE, build_dir, name_problem, params_name, reports_dir


@dataclass(frozen=True)
class Folders:
    name: str
    build: Path
    reports: Path


def shown_path(path: Path, root: Path) -> str:
    """`path` relative to the project when it is inside it, else as it is."""
    return str(path.relative_to(root) if path.is_relative_to(root) else path)


def params_folders(root: Path, params_file: Path) -> Folders:
    """The folders of `params_file` (absolute, resolved `root`); NbopsError naming the file when
    its stem cannot name a folder or another params file owns that name. Writes nothing."""
    name = params_name(params_file)
    shown = shown_path(params_file, root)
    problem = name_problem(name)
    if problem:
        raise NbopsError(f"{shown}: its stem {name!r} names its build and reports folders: use {problem}")
    folders = Folders(name, build_dir(root, name), reports_dir(root, name))
    owner = folders_owner(folders.build, root)
    if owner is not None and owner.resolve() != params_file.resolve() and owner.is_file():
        raise NbopsError(
            f"{shown}: the name {name!r} (build/{name}/, reports/{name}/) belongs to "
            f"{shown_path(owner, root)}; rename one of the two params files"
        )
    return folders


def folders_owner(build: Path, root: Path) -> Path | None:
    """The params file recorded in build/<name>/.params, or None."""
    try:
        text = (build / OWNER_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not text:
        return None
    path = Path(text)
    return path if path.is_absolute() else root / path


def claim_folders(folders: Folders, root: Path, params_file: Path) -> None:
    """Record `params_file` as the owner of its name (the build folder exists: it is locked)."""
    owner = folders.build / OWNER_FILE
    text = shown_path(params_file.resolve(), root) + "\n"
    try:
        if owner.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    folders.build.mkdir(parents=True, exist_ok=True)
    tmp = owner.with_name(OWNER_FILE + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(owner)
