"""The Space image built from `make space`'s folder (the browser tests' smoke champion), run on a
free 127.0.0.1 port. Containers started here are named nbops-test-<pid>-<n>, recorded in a temp
state file and stopped by their id only."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import pytest

from benchmarks.processes import free_port, ready_or_stopped, voila_answers
from tests.browser import conftest as browser_conftest
from tests.conftest import REPO

# the session's smoke champion, its Space folder and the page, as tests/browser has them
champion_project = browser_conftest.champion_project
space_dir = browser_conftest.space_dir
exported_model = browser_conftest.exported_model
screenshots = browser_conftest.screenshots
page = browser_conftest.page


READY_TIMEOUT_S = 180
BUILD_LOG: list[str] = []  # what nbops.serve.container said while it built the session's image
_names = itertools.count()


@pytest.fixture(scope="session")
def containers(tmp_path_factory):
    """nbops.serve.container with the repo's cache (the stand-in base is built once per machine)."""
    from nbops.serve.container import ContainerError, Containers

    state = tmp_path_factory.mktemp("container") / "state.json"
    try:
        box = Containers(REPO / ".cache" / "containers", state=state, say=BUILD_LOG.append)
    except ContainerError as exc:
        pytest.fail(str(exc), pytrace=False)
    remove_orphans(box)
    return box


def remove_orphans(box) -> list[str]:
    """Remove the containers an interrupted test session left: named nbops-test-<pid>-<n> by a
    test process that is gone (a live session's, and every other container, are left alone)."""
    listed = box.call(
        box.engine.command("ps", "-a", "--filter", "name=nbops-test-", "--format", "{{.ID}} {{.Names}}"),
        check=False,
    )
    removed = []
    for line in (listed.stdout or "").splitlines():
        cid, _, name = line.strip().partition(" ")
        parts = name.split("-")
        if len(parts) != 4 or parts[:2] != ["nbops", "test"] or not parts[2].isdigit():
            continue
        if Path(f"/proc/{parts[2]}").exists():
            continue
        box.call(box.engine.command("rm", "-f", cid), check=False)
        removed.append(name)
    return removed


@pytest.fixture(scope="session")
def space_image(containers, space_dir) -> str:
    """The image of `make space`'s folder, built as `make space-image` builds it (under a tag of
    its own: a user's <model>:v<version> image is left alone)."""
    from nbops.serve.container import image_tag, read_card

    return containers.build(space_dir, tag="nbops-test/" + image_tag(read_card(space_dir)))


class Container:
    """A running container of the image, with what the browser tests read of a server."""

    def __init__(self, containers, folder: Path, image: str, state: Path):
        from nbops.serve.container import Containers

        self.box = Containers(containers.cache, engine=containers.engine, state=state, say=lambda _: None)
        self.name = "container"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started_at = time.perf_counter()
        name = f"nbops-test-{os.getpid()}-{next(_names)}"
        self.record = self.box.start(folder, self.port, name=name, tag=image)
        self.id = self.record["id"]

    def engine(self, *args: str, check: bool = True):
        return self.box.call(self.box.engine.command(*args), check=check)

    def logs(self) -> str:
        done = self.engine("logs", self.id, check=False)
        return (done.stdout or "") + (done.stderr or "")

    def exec(self, *args: str) -> str:
        return self.engine("exec", self.id, *args).stdout

    def running(self) -> bool:
        done = self.engine("ps", "-a", "-q", "--no-trunc", "--filter", f"id={self.id}", check=False)
        return self.id in (done.stdout or "")

    def wait_ready(self) -> None:
        """Until the page answers (a static file: the preheated kernel is left for the browser)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            state = self.engine("inspect", "--format", "{{.State.Status}}", self.id).stdout.strip()
            if state not in ("created", "running"):
                raise RuntimeError(f"container {self.id[:12]} is {state}:\n{self.logs()}")
            if voila_answers(self.url):
                return
            time.sleep(0.5)
        raise RuntimeError(f"container {self.id[:12]} not ready after {READY_TIMEOUT_S} s:\n{self.logs()}")

    def stop(self) -> dict:
        if not self.box.state_file().is_file():  # stopped already
            return self.record
        return self.box.stop()


def start_container(containers, space_dir, space_image, state: Path) -> Container:
    return ready_or_stopped(Container(containers, space_dir, space_image, state))


@pytest.fixture(scope="session")
def container_server(containers, space_dir, space_image, tmp_path_factory):
    container = start_container(
        containers, space_dir, space_image, tmp_path_factory.mktemp("served") / "state.json"
    )
    yield container
    container.stop()
