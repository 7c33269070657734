"""Deploy the champion to the Hugging Face Space, then wait until the Space serves it.

    python -m nbops.deploy --params params/default.yaml --space-dir space --space-id owner/name

1. `champion` is resolved to a version in the registry;
2. the Space folder (`make space`) must carry a `model_card.json` naming that same version,
   so what is uploaded is exactly what was promoted;
3. the folder is uploaded with `huggingface_hub.HfApi.upload_folder` (token from `HF_TOKEN`);
4. the Space URL is polled, in a bounded loop, until it answers with that version (the Space
   rebuilds after the upload; until then it serves the previous one, or nothing).

The HfApi, the HTTP getter, the clock and sleep are parameters, so the tests touch no network.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbops.exceptions import NbopsError, print_problems

MODEL_CARD = "model_card.json"
TOKEN_ENV = "HF_TOKEN"
UPLOAD_IGNORED = ["__pycache__/**", "*.pyc", ".ipynb_checkpoints/**", ".DS_Store"]
_SPACE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")

# (url) -> (HTTP status, body text); raises OSError when the host cannot be reached.
Getter = Callable[[str], tuple[int, str]]


class DeployError(NbopsError):
    """The deploy cannot go on: no champion, a Space folder for another version, no token, a timeout."""


@dataclass
class Deployment:
    space_id: str
    version: str
    commit_url: str | None
    url: str
    seconds_to_live: float | None


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
    from nbops import tracking

    version = tracking.get_alias_version(model_name, tracking.CHAMPION, client)
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


def upload_space(space_dir: Path, space_id: str, token: str, message: str, api=None) -> str | None:
    """Upload the folder as one commit to the Space; returns the commit URL."""
    if not token:
        raise DeployError(f"{TOKEN_ENV} is not set: add it as a secret of the `production` environment")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        info = api.upload_folder(
            repo_id=space_id,
            repo_type="space",
            folder_path=str(space_dir),
            commit_message=message,
            ignore_patterns=UPLOAD_IGNORED,
        )
    except OSError as exc:  # HfHubHTTPError (401, 404, ...) and connection errors are OSErrors
        detail = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise DeployError(f"upload to Space {space_id} failed: {detail}") from None
    return getattr(info, "commit_url", None) or (str(info) if info else None)


def served_version(status: int, text: str, model_name: str) -> str | None:
    """The model version a Space response names: a model card's JSON, or `<name> v<N>` in a page."""
    if status != 200:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "version" in doc:
        return str(doc["version"])
    found = re.findall(re.escape(model_name) + r" v([0-9]+)\b", text)
    return found[-1] if found else None


def http_get(url: str, timeout: float = 15.0) -> tuple[int, str]:
    """GET with the standard library; an HTTP error status is an answer, not an exception."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "nbops-deploy", "Cache-Control": "no-cache"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(1 << 20).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def wait_for_version(
    url: str,
    version: str,
    model_name: str,
    *,
    get: Getter = http_get,
    timeout_s: float = 900.0,
    interval_s: float = 15.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    say: Callable[[str], None] = print,
) -> float:
    """Poll `url` until it names `version`; returns the seconds it took, DeployError on timeout."""
    if not url.startswith("https://") and not url.startswith("http://127.0.0.1"):
        raise DeployError(f"refusing to poll {url!r}: https only")
    start = clock()
    attempt, last = 0, "no answer yet"
    while True:
        attempt += 1
        try:
            status, text = get(url)
        except OSError as exc:  # DNS, refused, reset, timeout: the Space is still starting
            status, text, last = 0, "", f"{exc.__class__.__name__}"
        else:
            seen = served_version(status, text, model_name)
            if seen == version:
                return clock() - start
            last = f"HTTP {status}" + (f", serving v{seen}" if seen else "")
        elapsed = clock() - start
        if elapsed + interval_s > timeout_s:
            raise DeployError(
                f"{url} did not serve {model_name} v{version} within {timeout_s:.0f}s "
                f"({attempt} checks; last: {last})"
            )
        say(f"waiting for v{version} at {url}: {last} ({elapsed:.0f}s)")
        sleep(interval_s)


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
    get: Getter = http_get,
    timeout_s: float = 900.0,
    interval_s: float = 15.0,
    sleep=time.sleep,
    clock=time.monotonic,
    say=print,
) -> Deployment:
    """Check the folder, upload it, wait for the Space to serve the champion."""
    validate_space_id(space_id)
    check_space_folder(space_dir, model_name, champion)
    message = f"Deploy {model_name} v{champion} (champion)" + (f" from {commit[:12]}" if commit else "")
    say(f"uploading {space_dir} to Space {space_id}: {message}")
    commit_url = upload_space(space_dir, space_id, token, message, api)
    url = f"{space_url(space_id)}/{version_path.lstrip('/')}"
    seconds = None
    if wait:
        seconds = wait_for_version(
            url,
            champion,
            model_name,
            get=get,
            timeout_s=timeout_s,
            interval_s=interval_s,
            sleep=sleep,
            clock=clock,
            say=say,
        )
        say(f"live: {url} serves {model_name} v{champion} after {seconds:.0f}s")
    return Deployment(space_id, champion, commit_url, url, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbops.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params/default.yaml", help="params file (names the model)")
    parser.add_argument("--root", default=".")
    parser.add_argument("--space-dir", default="space", help="the folder `make space` built")
    parser.add_argument("--space-id", default=os.environ.get("HF_SPACE_ID", ""), help="owner/name")
    parser.add_argument(
        "--version-path",
        default=os.environ.get("HF_SPACE_VERSION_PATH") or "/",
        help="path on the Space whose answer names the served version: a model card JSON, or a page "
        "showing '<model> v<N>' (default /, the dashboard page; env HF_SPACE_VERSION_PATH)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the Space")
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between checks")
    parser.add_argument("--no-wait", action="store_true", help="upload only")
    args = parser.parse_args(argv)
    try:
        from nbops import tracking
        from nbops.params import load_params

        root = Path(args.root).resolve()
        params = load_params(Path(args.params) if Path(args.params).is_absolute() else root / args.params)
        validate_space_id(args.space_id)
        tracking.configure_tracking(root)
        name = params.registry.model_name
        champion = resolve_champion(name)
        space_dir = Path(args.space_dir) if Path(args.space_dir).is_absolute() else root / args.space_dir
        done = deploy(
            space_dir,
            args.space_id,
            name,
            champion,
            os.environ.get(TOKEN_ENV, ""),
            commit=os.environ.get("GITHUB_SHA", ""),
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
        + (f" ({done.commit_url})" if done.commit_url else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
