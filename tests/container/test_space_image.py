"""The Space image, built from `make space`'s folder and run as the Space runs it: the browser
scenarios that drive `make space-serve` drive the container too (they are imported from
tests/browser and run here against the `server` below), then what only an image can get wrong:
the user it runs as, its HOME, what it carries, and how it stops."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.browser.conftest import close_tab, own_page
from tests.browser.test_dashboard_browser import (  # noqa: F401 - collected here, against the container
    WIDGETS,
    get,
    test_batch_upload_lists_the_bad_row_and_scores_the_rest,
    test_no_source_store_or_api_is_served,
    test_predict_shows_the_champions_label,
)
from tests.container.conftest import start_container

pytestmark = pytest.mark.container

APP = "/home/user/app"


@pytest.fixture
def server(container_server):
    """What the imported browser scenarios drive: the running image."""
    return container_server


def test_the_page_names_the_served_version_as_the_deploy_reads_it(container_server, space_dir):
    from nbops.serve.space_wait import served_version

    card = json.loads((space_dir / "champion" / "model_card.json").read_text())
    status, _, body = get(container_server.url + "/")
    assert served_version(status, body.decode("utf-8", "replace"), card["name"]) == str(card["version"])


def open_dashboard(page, url: str) -> None:
    """The dashboard with its widgets up; a busy page instead fails the test."""
    page.goto(url + "/")
    page.wait_for_selector(f"{WIDGETS}, body.nbops-busy", state="attached", timeout=120_000)
    assert page.query_selector("body.nbops-busy") is None, page.content()[:2000]
    page.wait_for_selector(WIDGETS, state="visible", timeout=120_000)


# A visitor of its own behind the Space's proxy (a documentation address, RFC 5737): the places of
# 127.0.0.1, which the scenarios before may still hold (a plain GET's kernel for 60 s), are not its
# places, so it gets a kernel at once (the image trusts the private ranges its proxy comes from).
OTHER_VISITOR = {"X-Forwarded-For": "203.0.113.7"}


def test_the_app_runs_as_uid_1000_with_a_writable_home(container_server, browser):
    with own_page(browser, extra_http_headers=OTHER_VISITOR) as page:
        open_dashboard(page, container_server.url)  # at once: a kernel has run the notebook
        check_uids_home_and_log(container_server)
        close_tab(page)


def check_uids_home_and_log(container_server) -> None:
    status = container_server.exec("cat", "/proc/1/status")
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == ["1000"] * 4, status
    processes = container_server.exec("sh", "-c", "for p in /proc/[0-9]*; do stat -c %u $p; done")
    assert set(processes.split()) == {"1000"}, "a process in the container is not uid 1000"
    home = container_server.exec("sh", "-c", 'echo "$HOME"; touch "$HOME/.probe" && echo writable').split()
    assert home == ["/home/user", "writable"]
    # Voila's own log: kernels started with CurveZMQ keys, and tornado's ping-clamp line filtered
    # (voila.json's logging_config works inside the image too)
    log = container_server.logs()
    assert "Kernel started" in log and "Connecting to kernel" in log
    assert "forked for" in log and "Starting the kernel as a new process" not in log, log  # voila_forks
    assert "websocket_ping_timeout" not in log and "without encryption" not in log, log


def largest_folders(containers, image: str) -> list[tuple[int, str]]:
    """(KiB, path) of the image's folders (site-packages' packages included), largest first."""
    done = containers.call(
        containers.engine.command(
            "run", "--rm", "--entrypoint", "du", image, "-x", "-k", "-d", "7", "/home", "/usr"
        ),
        check=False,  # du exits 1 on a folder uid 1000 cannot read
    )
    rows = [line.split("\t", 1) for line in done.stdout.splitlines() if "\t" in line]
    return sorted(((int(kib), path) for kib, path in rows), reverse=True)


# Run inside the image: what the Dockerfile added under HOME (the app and the user's packages;
# the base image's own /usr is the base's), as JSON.
INVENTORY = """
import json, os, shutil, sys
home = os.path.expanduser("~")
out = {"tests": [], "caches": [], "app_bytecode": [], "orphan_pyc": [], "opt_pyc": 0, "py": 0, "pyc": 0}
for folder, dirs, files in os.walk(home):
    for d in dirs:
        if d in ("tests", "test"):
            out["tests"].append(os.path.join(folder, d))
    if folder.startswith(os.path.join(home, "app")) and os.path.basename(folder) == "__pycache__":
        out["app_bytecode"].append(folder)
    for f in files:
        size = os.path.getsize(os.path.join(folder, f))
        if f.endswith(".py"):
            out["py"] += size
        elif f.endswith(".pyc"):
            out["pyc"] += size
            out["opt_pyc"] += ".opt-" in f
            source = os.path.join(os.path.dirname(folder), f.split(".")[0] + ".py")
            if os.path.basename(folder) == "__pycache__" and not os.path.exists(source):
                out["orphan_pyc"].append(os.path.join(folder, f))
for cache in (os.path.join(home, ".cache"), "/root/.cache", "/var/cache/apt/archives/partial"):
    if os.path.isdir(cache) and os.access(cache, os.R_OK) and os.listdir(cache):
        out["caches"].append(cache)
out["build_tools"] = [t for t in ("gcc", "cc", "g++", "make") if shutil.which(t)]
json.dump(out, sys.stdout)
"""


def test_the_image_is_lean(containers, space_image):
    folders = largest_folders(containers, space_image)
    print("\n".join(f"{kib / 1024:8.1f} MB  {path}" for kib, path in folders[:25]))
    size_mb = containers.image_size_mb(space_image)
    print(f"image {space_image}: {size_mb:.0f} MB")
    done = containers.call(
        containers.engine.command(
            "run", "--rm", "-w", "/tmp", "--entrypoint", "python", space_image, "-c", INVENTORY
        )
    )
    found = json.loads(done.stdout)
    assert not found["tests"], f"test folders in the image: {found['tests'][:10]}"
    assert not found["caches"], f"caches in the image: {found['caches']}"
    assert not found["build_tools"], f"build tools in the image: {found['build_tools']}"
    # bytecode is kept for the packages (each kernel imports 3 s faster), one file per source:
    # none for a source that is gone, no second optimisation level, none of the app's own
    assert not found["orphan_pyc"], f"bytecode without its source: {found['orphan_pyc'][:10]}"
    assert found["opt_pyc"] == 0 and not found["app_bytecode"], found
    assert found["pyc"] < 1.5 * found["py"], (
        f"{found['pyc'] / 1e6:.0f} MB of bytecode for {found['py'] / 1e6:.0f} MB of sources"
    )
    assert size_mb < 800, f"{space_image} is {size_mb:.0f} MB"


def test_github_runners_build_with_docker_from_the_registrys_image(containers, space_image):
    """On GitHub's runners docker answers and the registry is reachable: no stand-in there."""
    from tests.container.conftest import BUILD_LOG

    if os.environ.get("GITHUB_ACTIONS") != "true":
        pytest.skip("GitHub's runners only: elsewhere the engine and base are the machine's (next test)")
    assert containers.engine.name == "docker"
    assert any(line.startswith("base image: docker.io/library/python:3.11-slim") for line in BUILD_LOG)


def test_the_build_says_which_base_it_used(containers, space_image):
    from nbops.serve.container_commands import BASE_LABEL
    from tests.container.conftest import BUILD_LOG

    said = [line for line in BUILD_LOG if line.startswith("base image: ")]
    assert said and "python:3.11-slim" in said[-1], BUILD_LOG
    label = containers.call(
        containers.engine.command(
            "image", "inspect", "--format", f'{{{{index .Config.Labels "{BASE_LABEL}"}}}}', space_image
        )
    ).stdout.strip()
    assert label and label in said[-1]
    assert ("stand-in" in label) == ("no registry reachable" in said[-1])


def test_the_container_stops_cleanly_and_leaves_nothing_running(containers, space_dir, space_image, tmp_path):
    container = start_container(containers, space_dir, space_image, tmp_path / "state.json")
    try:
        assert container.running()
        status, _, body = get(container.url + "/")
        assert status == 200 and b"nbops" in body
    finally:
        started = time.monotonic()
        record = container.stop()
    assert time.monotonic() - started < 20, "the container did not stop on SIGTERM (killed after 20 s)"
    assert record["exit_code"] == 0, container.logs()
    assert not container.running(), f"container {container.id[:12]} is still there"
    assert not (tmp_path / "state.json").exists()
    try:  # the port is free again: nothing answers
        get(container.url + "/")
    except OSError:
        pass
    else:
        raise AssertionError(f"{container.url} still answers after the stop")
