"""Deploy the champion to the Hugging Face Space, then wait until the Space serves it.

    python -m nbops.serve.deploy --params params/default.yaml --space-dir space --space-id owner/name

1. `champion` is resolved to a version in the registry;
2. the Space folder (`make space`) must carry a `model_card.json` naming that same version,
   so what is uploaded is exactly what was promoted;
3. the folder's content hash is compared with the one in the `.nbops-space` marker the Space
   holds: equal means nothing to upload and no commit; otherwise the folder is uploaded with
   `huggingface_hub.HfApi.upload_folder` (token from `HF_TOKEN`) as one commit;
4. in one bounded loop, the Space's runtime is polled until it runs that commit (stage RUNNING
   on that sha: the old container keeps serving the same version while the new one builds, so
   the page alone cannot tell), and the Space URL (asked all along: a request wakes a sleeping
   Space) until, then, it answers with that version. Both requests carry the token, so a
   private Space can be polled.

The HfApi, the HTTP getter, the clock and sleep are parameters, so the tests touch no network.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbops.exceptions import NbopsError, print_problems
from nbops.serve.space import MARKER, UPLOAD_IGNORED, content_hash
from nbops.serve.space_wait import (
    DeployError,
    Getter,
    _first_line,
    http_get,
    hub_errors,
    runtime_readiness,
    wait_for_version,
)

MODEL_CARD = "model_card.json"
TOKEN_ENV = "HF_TOKEN"
_SPACE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


@dataclass
class Deployment:
    space_id: str
    version: str
    commit_url: str | None  # None when the Space already held this content: no commit made
    url: str
    seconds_to_live: float | None
    content_hash: str = ""
    revision: str | None = None  # the Space commit that serves it


def hub_call(what: str, call: Callable[[], Any]) -> Any:
    """One Hub request; its failure is one line naming what was asked (never the token)."""
    try:
        return call()
    except hub_errors() as exc:
        raise DeployError(f"{what} failed: {_first_line(exc)}") from None


def validate_space_id(space_id: str) -> str:
    if not _SPACE_ID.fullmatch(space_id or ""):
        raise DeployError(
            f"Space id must look like 'owner/name', got {space_id!r}: set the repository variable HF_SPACE_ID"
        )
    return space_id


def space_url(space_id: str) -> str:
    """The Space app's own host: https://<owner>-<name>.hf.space (dots and underscores as dashes)."""
    return "https://" + re.sub(r"[._/]", "-", validate_space_id(space_id)).lower() + ".hf.space"


def read_model_card(space_dir: Path) -> tuple[dict[str, Any], Path]:
    """The one model_card.json in the Space folder and where it is."""
    if not space_dir.is_dir():
        raise DeployError(f"{space_dir}: no Space folder: build it with `make space`")
    cards = sorted(space_dir.rglob(MODEL_CARD))
    if len(cards) != 1:
        raise DeployError(
            f"{space_dir}: expected one {MODEL_CARD}, found {len(cards)}: rebuild with `make space`"
        )
    try:
        card = json.loads(cards[0].read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise DeployError(f"{cards[0]}: not valid JSON: rebuild with `make space`") from None
    if not isinstance(card, dict) or not str(card.get("version", "")).strip():
        raise DeployError(f"{cards[0]}: has no model 'version'")
    return card, cards[0]


def resolve_champion(model_name: str, client=None) -> str:
    """The version behind `champion` in the registry."""
    from nbops.ml import registry, tracking

    version = registry.get_alias_version(model_name, tracking.CHAMPION, client)
    if version is None:
        raise DeployError(f"registered model {model_name!r} has no champion: nothing to deploy")
    return str(version.version)


def check_space_folder(space_dir: Path, model_name: str, champion: str) -> dict[str, Any]:
    """The folder must hold the champion itself, not an older export."""
    card, where = read_model_card(space_dir)
    name, version = str(card.get("name", model_name)), str(card["version"])
    if name != model_name or version != champion:
        raise DeployError(
            f"{where}: names {name} v{version} but the champion is {model_name} v{champion}: "
            "rebuild the folder with `make space`"
        )
    return card


def hub_api(token: str, api=None):
    if not token:
        raise DeployError(f"{TOKEN_ENV} is not set: add it as a secret of the `production` environment")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    return api


def space_head(api, space_id: str) -> str | None:
    """The Space repository's current commit."""
    info = hub_call(f"reading Space {space_id}", lambda: api.space_info(space_id))
    return getattr(info, "sha", None)


def served_content_hash(api, space_id: str, revision: str | None) -> str | None:
    """The content hash in the marker the Space holds at `revision`; None without one."""
    from huggingface_hub.errors import EntryNotFoundError

    with tempfile.TemporaryDirectory(prefix="nbops-deploy-") as tmp:
        try:
            path = api.hf_hub_download(
                repo_id=space_id, filename=MARKER, repo_type="space", revision=revision, local_dir=tmp
            )
        except EntryNotFoundError:  # a Space not made by `make space` (yet): nothing to compare
            return None
        except hub_errors() as exc:
            raise DeployError(f"reading {MARKER} of Space {space_id} failed: {_first_line(exc)}") from None
        try:
            marker = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None
    value = marker.get("content_hash") if isinstance(marker, dict) else None
    return value if isinstance(value, str) and value else None


def commit_message(model_name: str, champion: str, commit: str = "") -> str:
    return f"Deploy {model_name} v{champion} (champion)" + (f" from {commit[:12]}" if commit else "")


def upload_files(space_dir: Path) -> list[str]:
    """The paths `upload_space` sends: huggingface_hub's own filter over the folder's files."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    files = sorted(p.relative_to(space_dir).as_posix() for p in space_dir.glob("**/*") if p.is_file())
    return list(filter_repo_objects(files, ignore_patterns=[*UPLOAD_IGNORED, *DEFAULT_IGNORE_PATTERNS]))


def dry_run(
    space_dir: Path, space_id: str, model_name: str, champion: str, commit: str = "", say=print
) -> list[str]:
    """What a deploy would upload and its commit message; no token, no request to the Hub."""
    check_space_folder(space_dir, model_name, champion)
    files = upload_files(space_dir)
    target = f"Space {space_id}" if space_id else "the Space (HF_SPACE_ID not set)"
    say(f"dry run: would upload {len(files)} files from {space_dir} to {target}:")
    for rel in files:
        say(f"  {rel}")
    say(f"commit message: {commit_message(model_name, champion, commit)}")
    say(f"(no commit if the Space's {MARKER} already names content {content_hash(space_dir)[:12]})")
    return files


def upload_space(
    space_dir: Path, space_id: str, token: str, message: str, api=None
) -> tuple[str | None, str | None]:
    """Upload the folder as one commit to the Space; returns (commit URL, commit sha)."""
    api = hub_api(token, api)
    info = hub_call(
        f"upload to Space {space_id}",
        lambda: api.upload_folder(
            repo_id=space_id,
            repo_type="space",
            folder_path=str(space_dir),
            commit_message=message,
            ignore_patterns=UPLOAD_IGNORED,
        ),
    )
    url = getattr(info, "commit_url", None) or (str(info) if info else None)
    sha = getattr(info, "oid", None)
    if not sha and url:
        sha = url.rstrip("/").rsplit("/", 1)[-1]
    return url, sha


def deploy(
    space_dir: Path,
    space_id: str,
    model_name: str,
    champion: str,
    token: str,
    *,
    commit: str = "",
    version_path: str = "/",
    wait: bool = True,
    api=None,
    get: Getter | None = None,
    timeout_s: float = 900.0,
    interval_s: float = 15.0,
    sleep=time.sleep,
    clock=time.monotonic,
    say=print,
) -> Deployment:
    """Check the folder; upload it unless the Space holds the same content; wait until the
    Space runs that commit and serves the champion."""
    validate_space_id(space_id)
    check_space_folder(space_dir, model_name, champion)
    api = hub_api(token, api)
    local = content_hash(space_dir)
    head = space_head(api, space_id)
    if served_content_hash(api, space_id, head) == local:
        say(f"Space {space_id} already holds this folder (content {local[:12]}): no commit")
        commit_url, revision = None, head
    else:
        message = commit_message(model_name, champion, commit)
        say(f"uploading {space_dir} (content {local[:12]}) to Space {space_id}: {message}")
        commit_url, revision = upload_space(space_dir, space_id, token, message, api)
    url = f"{space_url(space_id)}/{version_path.lstrip('/')}"
    seconds = None
    if wait:
        seconds = wait_for_version(
            url,
            champion,
            model_name,
            get=get or (lambda u: http_get(u, token=token)),
            timeout_s=timeout_s,
            interval_s=interval_s,
            sleep=sleep,
            clock=clock,
            say=say,
            ready=runtime_readiness(api, space_id, revision),
        )
        say(f"live: {url} serves {model_name} v{champion} after {seconds:.0f}s")
    return Deployment(space_id, champion, commit_url, url, seconds, local, revision)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The deploy options (also `nbops deploy`)."""
    parser.add_argument("--params", default="params/default.yaml", help="params file (names the model)")
    parser.add_argument("--root", default=".", help="project folder (its registry holds the champion)")
    parser.add_argument("--space-dir", default="space", help="the folder `make space` built")
    parser.add_argument(
        "--space-id", default=os.environ.get("HF_SPACE_ID", ""), help="owner/name (default: env HF_SPACE_ID)"
    )
    parser.add_argument(
        "--version-path",
        default=os.environ.get("HF_SPACE_VERSION_PATH") or "/",
        help="path on the Space whose answer names the served version: a model card JSON, or a page "
        "showing '<model> v<N>' (default /, the dashboard page; env HF_SPACE_VERSION_PATH)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the Space")
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between checks")
    parser.add_argument("--no-wait", action="store_true", help="upload only")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the files it would upload and the commit message; no token",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nbops.serve.deploy", description=__doc__.split("\n\n")[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Upload and wait, as parsed by add_arguments; the exit code."""
    try:
        from nbops.ml import tracking
        from nbops.params import load_params

        root = Path(args.root).resolve()
        params = load_params(Path(args.params) if Path(args.params).is_absolute() else root / args.params)
        dry = getattr(args, "dry_run", False)
        if args.space_id or not dry:
            validate_space_id(args.space_id)
        tracking.configure_tracking(root)
        name = params.registry.model_name
        champion = resolve_champion(name)
        space_dir = Path(args.space_dir) if Path(args.space_dir).is_absolute() else root / args.space_dir
        commit = os.environ.get("HEAD_SHA") or os.environ.get("GITHUB_SHA", "")
        if dry:
            dry_run(space_dir, args.space_id, name, champion, commit)
            return 0
        done = deploy(
            space_dir,
            args.space_id,
            name,
            champion,
            os.environ.get(TOKEN_ENV, ""),
            # under workflow_run, GITHUB_SHA is main's head, not the commit the run tested
            commit=commit,
            version_path=args.version_path,
            wait=not args.no_wait,
            timeout_s=args.timeout,
            interval_s=args.interval,
        )
    except NbopsError as exc:
        print_problems(exc)
        return 1
    print(
        f"deployed {name} v{done.version} to {done.space_id}"
        + (f" ({done.commit_url})" if done.commit_url else " (unchanged: no commit)")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
