"""The Hugging Face Space: a folder that serves the dashboard of the exported champion.

`build` exports the current champion (MLflow model folder, schema, JSON model card), copies the
dashboard notebook, the Voila config and the package, writes a Dockerfile, the Space README
(front matter `sdk: docker`) and a slim requirements file pinned exactly from requirements.txt.
`serve` runs, from that folder, the Dockerfile's own CMD and ENV (only the host and port change),
so what the tests drive is what the image will run.

Two builds of one champion from one commit are byte-identical (nothing in the folder says when
it was built), and the folder's `content_hash` is written into its `.nbops-space` marker: the
deploy compares it with the one the Space holds and makes no commit when they are equal.

    python -m nbops.serve.space build --params params/default.yaml --out space
    python -m nbops.serve.space serve space --host 127.0.0.1 --port 7860
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from nbops.exceptions import ModelError, NbopsError, print_problems
from nbops.layout import NOTEBOOKS_DIR

SPACE_PORT = 7860
APP_DIR = "/home/user/app"
MARKER = ".nbops-space"  # what made the folder, and its content hash (uploaded; not in the image)
# Never uploaded, so never hashed (huggingface_hub's ignore_patterns, matched with fnmatch).
UPLOAD_IGNORED = ["__pycache__/**", "*.pyc", ".ipynb_checkpoints/**", ".DS_Store"]
CHAMPION_DIR = "champion"
NOTEBOOK = "dashboard.ipynb"
BASE_IMAGE = "python:3.11-slim"
# What the dashboard imports at run time (no MLflow: the exported champion is read with skops).
RUNTIME_PACKAGES = (
    "voila",
    "ipywidgets",
    "ipykernel",
    "pandas",
    "numpy",
    "scikit-learn",
    "scipy",
    "skops",
    "pandera",
    "PyYAML",
)
# ENV lines that describe the container's layout, not the app: `serve` leaves them alone.
CONTAINER_ENV = {"HOME", "PATH", "PIP_NO_CACHE_DIR", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}


class SpaceError(NbopsError):
    """The Space folder cannot be built or served."""


def content_hash(folder: Path) -> str:
    """sha256 over the path and bytes of every file the deploy uploads, except the marker.

    Only what the Space would receive counts: not file times, not the marker that holds the hash."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MARKER or any(fnmatch.fnmatch(rel, pattern) for pattern in UPLOAD_IGNORED):
            continue
        digest.update(rel.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """`name==version` pins of a uv/pip-compile lock file, by canonical name."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if match:
            pins[_canonical(match.group(1))] = match.group(3)
    return pins


def runtime_requirements(lock: dict[str, str], packages=RUNTIME_PACKAGES) -> list[str]:
    """The runtime packages and everything they need, each pinned as in the lock.

    The closure is read from the installed distributions' metadata (markers evaluated for this
    interpreter, which matches the image's Python), so no version is left to the resolver.
    """
    from packaging.requirements import Requirement

    seen: dict[str, str] = {}
    todo: list[tuple[str, tuple[str, ...]]] = [(p, ()) for p in packages]
    while todo:
        name, extras = todo.pop()
        key = _canonical(name)
        if key in seen and not extras:
            continue
        if key not in lock:
            raise SpaceError(f"requirements.txt: {name!r} is needed by the Space but not pinned in the lock")
        seen[key] = lock[key]
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            raise SpaceError(f"{name!r} is pinned but not installed: run `make setup`") from None
        for text in requires:
            req = Requirement(text)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, tuple(req.extras)))
    return [f"{name}=={version}" for name, version in sorted(seen.items())]


def serve_command(host: str = "0.0.0.0", port: int = SPACE_PORT) -> list[str]:
    """Voila on the dashboard notebook with the folder's voila.json (the Dockerfile's CMD)."""
    return [
        "voila",
        NOTEBOOK,
        "--Voila.config_file_paths=.",
        f"--Voila.ip={host}",
        f"--port={port}",
        "--no-browser",
    ]


def dockerfile() -> str:
    cmd = json.dumps(serve_command())
    return f"""# Hugging Face Space (sdk: docker): the nbops dashboard of the exported champion model.
FROM {BASE_IMAGE}

# Spaces run the container as uid 1000; so do we, never as root.
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user PATH=/home/user/.local/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \\
    PIP_NO_CACHE_DIR=1
WORKDIR {APP_DIR}

COPY --chown=user requirements.txt .
# The packages' bytecode stays (without it every kernel compiles pandas and scikit-learn again,
# about 3 s per start); their own test suites go, in the same layer.
RUN pip install --user --no-deps --no-warn-script-location -r requirements.txt \\
    && find /home/user/.local/lib -type d \\( -name tests -o -name test \\) -prune -exec rm -rf {{}} +

COPY --chown=user . .
ENV NBOPS_MODEL_DIR={CHAMPION_DIR} PYTHONPATH=src
EXPOSE {SPACE_PORT}
CMD {cmd}
"""


def space_readme(card: dict[str, Any], license_id: str) -> str:
    name, version = card["name"], card["version"]
    short = f"Predictions from the champion {name} v{version}"
    if len(short) > 60:  # the Hub's limit for short_description
        short = short[:59] + "…"
    metrics = ", ".join(f"{k.replace('_', ' ')} {float(v):.3f}" for k, v in card.get("metrics", {}).items())
    return f"""---
title: {json.dumps(f"{name} dashboard", ensure_ascii=False)}
emoji: 📊
colorFrom: blue
colorTo: indigo
sdk: docker
app_port: {SPACE_PORT}
short_description: {json.dumps(short, ensure_ascii=False)}
license: {license_id}
pinned: false
---

# {name} dashboard

A Voila dashboard that serves the champion model **{name} v{version}** (trained {card.get("trained_at")},
commit `{str(card.get("git_commit"))[:12]}`; held-out {metrics or "metrics unavailable"}).
Describe a case to get the predicted label with class probabilities, or upload a CSV to score many rows.

Built by `make space` from the nbops project; the model card is in `{CHAMPION_DIR}/model_card.json`.
Run it locally without Docker with `make space-serve`.
"""


def export_champion(model_name: str, dest: Path) -> dict[str, Any]:
    """Write the champion to `dest`: `model/` (MLflow model folder), `schema.json`, `model_card.json`."""
    from nbops.ml import registry
    from nbops.serve import champion

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    version, schema, card = champion.registry_champion_info(model_name)
    dest.mkdir(parents=True)
    model_dir = dest / champion.MODEL_SUBDIR
    champion._mlflow().artifacts.download_artifacts(
        artifact_uri=f"models:/{model_name}/{version.version}", dst_path=str(model_dir)
    )
    registry.load_model_dir(model_dir, f"{model_name} v{version.version}")  # refuse what we would not load
    champion.check_schema(schema, f"{model_name} v{version.version} schema.json")
    # No export time: it would make every build of one champion a new Space commit. The
    # version's registration time changes only with the champion.
    card = {**card, "registry_uri": f"models:/{model_name}/{version.version}"}
    created = getattr(version, "creation_timestamp", None)
    if created:
        card["registered_at"] = datetime.fromtimestamp(created / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    (dest / champion.SCHEMA_FILE).write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    (dest / champion.MODEL_CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def _copy_package(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def build_space(root: Path, params_path: Path, out: Path, license_id: str = "mit") -> dict[str, Any]:
    """Assemble the Space folder in a temp sibling, then swap it in: a failure leaves `out` as it was."""
    from nbops.ml import tracking
    from nbops.params import load_params

    root = root.resolve()
    out = out if out.is_absolute() else root / out
    if out.exists() and not (out / MARKER).is_file():
        raise SpaceError(f"{out}: exists and was not made by `make space`; refusing to replace it")
    if out.resolve() in (root, *root.parents):
        raise SpaceError(f"{out}: the Space folder cannot be the project or above it")
    params = load_params(params_path)
    notebook = root / NOTEBOOKS_DIR / NOTEBOOK
    voila_config = root / "deploy" / "voila" / "voila.json"
    package = root / "src" / "nbops"
    for needed in (
        notebook,
        voila_config,
        voila_config.with_name("voila.py"),
        package,
        root / "requirements.txt",
    ):
        if not needed.exists():
            raise SpaceError(f"{needed}: missing; run `make space` from the project folder")
    requirements = runtime_requirements(read_lock(root / "requirements.txt"))
    tracking.configure_tracking(root)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        card = export_champion(params.registry.model_name, work / CHAMPION_DIR)
        shutil.copy2(notebook, work / NOTEBOOK)
        shutil.copy2(voila_config, work / "voila.json")
        # voila.py (read beside voila.json) picks the page template that loads nothing from a CDN
        shutil.copy2(voila_config.with_name("voila.py"), work / "voila.py")
        _copy_package(package, work / "src" / "nbops")
        (work / "requirements.txt").write_text(
            "# Runtime pins for the Space, taken from the project's requirements.txt lock.\n"
            + "\n".join(requirements)
            + "\n",
            encoding="utf-8",
        )
        (work / "Dockerfile").write_text(dockerfile(), encoding="utf-8")
        (work / "README.md").write_text(space_readme(card, license_id), encoding="utf-8")
        if (root / "LICENSE").is_file():  # the license the front matter names, beside the code it covers
            shutil.copy2(root / "LICENSE", work / "LICENSE")
        (work / ".dockerignore").write_text("**/__pycache__\n*.pyc\n.nbops-space\n", encoding="utf-8")
        marker = {"model": card["registry_uri"], "content_hash": content_hash(work)}
        (work / MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        work.chmod(0o755)  # mkdtemp made it private; the image and a web server need to read it
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return card


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[str]]:
    """The ENV assignments and the exec-form CMD of a Dockerfile (continuation lines joined)."""
    import shlex

    env: dict[str, str] = {}
    cmd: list[str] | None = None
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, sep, value = pair.partition("=")
                if not sep:
                    raise SpaceError(f"Dockerfile: ENV {pair!r} is not KEY=VALUE")
                env[key] = value
        elif line.startswith("CMD "):
            try:
                cmd = json.loads(line[4:])
            except json.JSONDecodeError:
                raise SpaceError("Dockerfile: CMD must be in exec form (a JSON list)") from None
    if not cmd or not all(isinstance(a, str) for a in cmd):
        raise SpaceError("Dockerfile: no CMD [...] found")
    return env, cmd


def local_command(folder: Path, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The Dockerfile's CMD and app ENV for running `folder` here, bound to host:port."""
    dockerfile_path = folder / "Dockerfile"
    if not dockerfile_path.is_file():
        raise SpaceError(f"{folder}: no Dockerfile; build the folder with `make space`")
    env, cmd = parse_dockerfile(dockerfile_path.read_text(encoding="utf-8"))
    swaps = {"--Voila.ip=0.0.0.0": f"--Voila.ip={host}", f"--port={SPACE_PORT}": f"--port={port}"}
    for old in swaps:
        if old not in cmd:
            raise SpaceError(f"{dockerfile_path}: CMD has no {old!r} to rebind")
    cmd = [swaps.get(arg, arg) for arg in cmd]
    exe = Path(sys.executable).parent / cmd[0]  # the venv's console script
    cmd[0] = str(exe) if exe.exists() else cmd[0]
    app_env = {k: v for k, v in env.items() if k not in CONTAINER_ENV}
    return cmd, app_env


def serve(folder: Path, host: str, port: int) -> None:
    """Replace this process with the Space's server, run from `folder` (same PID: easy to stop)."""
    cmd, app_env = local_command(folder, host, port)
    os.chdir(folder)
    os.execve(cmd[0], cmd, {**os.environ, **app_env})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`build` and `serve` with their options (also `nbops space`)."""
    sub = parser.add_subparsers(dest="space_command", metavar="{build,serve}", required=True)
    build = sub.add_parser("build", help="assemble the Space folder with the exported champion")
    build.add_argument("--params", default="params/default.yaml", help="params file (names the model)")
    build.add_argument("--root", default=".", help="project folder (its registry holds the champion)")
    build.add_argument("--out", default="space", help="the Space folder to write (default space/)")
    build.add_argument("--license", default="mit", help="license id for the Space README front matter")
    run = sub.add_parser("serve", help="run the folder's Dockerfile CMD locally")
    run.add_argument("folder", nargs="?", default="space", help="the Space folder (default space/)")
    run.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=SPACE_PORT, help=f"port (default {SPACE_PORT})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbops.serve.space", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """`build` or `serve` as parsed by add_arguments; the exit code."""
    try:
        if args.space_command == "build":
            root = Path(args.root).resolve()
            params = Path(args.params)
            card = build_space(
                root, params if params.is_absolute() else root / params, Path(args.out), args.license
            )
            out = Path(args.out) if Path(args.out).is_absolute() else root / args.out
            print(
                f"space: {args.out}/ serves {card['name']} v{card['version']} ({card['registry_uri']}; "
                f"content {content_hash(out)[:12]})"
            )
        else:
            serve(Path(args.folder), args.host, args.port)
    except (NbopsError, ModelError) as exc:
        print_problems(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
