"""Waiting for the Space to serve a version: its runtime on the new commit, then its page."""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Callable

from nbops.exceptions import NbopsError

# (url) -> (HTTP status, body text); raises OSError when the host cannot be reached.
Getter = Callable[[str], tuple[int, str]]
# () -> None when the Space runs the commit just made, else what it is doing; DeployError when
# it never will (a build error on that commit, a paused Space).
Readiness = Callable[[], str | None]

# Space runtime stages (huggingface_hub.SpaceStage): on the way, failed on this commit, or stuck.
STAGE_RUNNING = "RUNNING"
STAGES_FAILED = {"BUILD_ERROR", "RUNTIME_ERROR", "CONFIG_ERROR", "NO_APP_FILE"}
STAGES_STUCK = {"PAUSED", "DELETING"}


class DeployError(NbopsError):
    """The deploy cannot go on: no champion, a Space folder for another version, no token, a timeout."""


def hub_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub and its HTTP client raise for a refused, failed or unreachable call.

    A connection error of httpx (or httpx2, which huggingface_hub 2 uses) is not an OSError."""
    errors: list[type[BaseException]] = [OSError, http.client.HTTPException]
    for module in ("httpx", "httpx2"):
        try:
            errors.append(__import__(module).HTTPError)
        except ImportError:
            pass
    try:
        from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    except ImportError:
        pass
    else:
        errors += [HfHubHTTPError, HFValidationError]
    return tuple(errors)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def runtime_readiness(api, space_id: str, revision: str | None) -> Readiness:
    """A check that the Space's runtime runs `revision` (stage RUNNING on that sha)."""

    def check() -> str | None:
        try:
            runtime = api.get_space_runtime(space_id)
        except hub_errors() as exc:  # the Hub hiccups while a Space builds: ask again
            return f"runtime: {_first_line(exc)}"
        stage = str(getattr(runtime.stage, "value", runtime.stage))
        raw = getattr(runtime, "raw", None) or {}
        sha = raw.get("sha") if isinstance(raw, dict) else None
        this_commit = not revision or not sha or sha == revision
        if this_commit and stage in STAGES_FAILED:
            raise DeployError(
                f"Space {space_id} stopped at {stage} on commit {(sha or revision or '?')[:12]}: "
                f"see its logs at https://huggingface.co/spaces/{space_id}?logs=build"
            )
        if stage in STAGES_STUCK:
            raise DeployError(f"Space {space_id} is {stage}: restart it in its settings, then deploy again")
        if stage == STAGE_RUNNING and this_commit:
            return None
        if stage == STAGE_RUNNING:  # not this commit: both shas are known
            return f"still running commit {str(sha)[:12]}, not {str(revision)[:12]}"
        return f"stage {stage}" + (f" on {sha[:12]}" if sha else "")

    return check


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


def http_get(url: str, timeout: float = 15.0, token: str | None = None) -> tuple[int, str]:
    """GET with the standard library; an HTTP error status is an answer, not an exception.

    With a token (a private Space), it goes as `Authorization: Bearer`, and never to another
    host a redirect points at."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    class SameHostAuth(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            new = super().redirect_request(req, fp, code, msg, headers, newurl)
            if new is not None and urlsplit(newurl).hostname != urlsplit(req.full_url).hostname:
                new.remove_header("Authorization")
            return new

    headers = {"User-Agent": "nbops-deploy", "Cache-Control": "no-cache"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    opener = urllib.request.build_opener(SameHostAuth)
    try:
        with opener.open(request, timeout=timeout) as response:
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
    ready: Readiness | None = None,
) -> float:
    """Poll until `ready()` (the runtime runs the new commit, when given) and then `url` names
    `version`; returns the seconds it took, DeployError on timeout."""
    if not url.startswith("https://") and not url.startswith("http://127.0.0.1"):
        raise DeployError(f"refusing to poll {url!r}: https only")
    start = clock()
    attempt, last = 0, "no answer yet"
    running = ready is None  # once the runtime runs the commit, it is not asked again
    while True:
        attempt += 1
        waiting = None if running or ready is None else ready()
        running = waiting is None
        try:  # asked even while waiting for the runtime: a request wakes a sleeping Space
            status, text = get(url)
        except (OSError, http.client.HTTPException) as exc:  # DNS, refused, reset, timeout
            status, text, last = 0, "", f"{exc.__class__.__name__}"
        else:
            seen = served_version(status, text, model_name)
            if seen == version and running:
                return clock() - start
            last = f"HTTP {status}" + (f", serving v{seen}" if seen else "")
        if waiting is not None:
            last = f"{waiting}; {last}"
        elapsed = clock() - start
        if elapsed + interval_s > timeout_s:
            raise DeployError(
                f"{url} did not serve {model_name} v{version} within {timeout_s:.0f}s "
                f"({attempt} checks; last: {last})"
            )
        say(f"waiting for v{version} at {url}: {last} ({elapsed:.0f}s)")
        sleep(interval_s)
