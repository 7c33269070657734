"""Voila's kernels as nbops.serve.voila_kernels manages them, with real kernels. A visitor who takes a
kernel that waited in Voila's preheated pool for longer than the cull idle timeout still gets a
live dashboard: the kernel is not culled in the moment between handing out the page and the
browser connecting (the stock manager is run too, so the test is known to catch the race it
guards against). A page whose websocket never opens loses its kernel after the short unconnected
timeout while a connected one keeps it, and one client address gets two kernels at most. Voila
runs on 127.0.0.1 and is stopped by its group."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.faults.helpers import start_voila

pytestmark = pytest.mark.e2e

IDLE_S = 8  # cull_idle_timeout for the test
INTERVAL_S = 1  # cull_interval for the test
CULLED = re.compile(r"Culling '\w+' kernel")
STOCK = "jupyter_server.services.kernels.kernelmanager.AsyncMappingKernelManager"


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _handed_out_after_a_stale_wait(project, log, *extra):
    """Start Voila, let its pooled kernel sit idle past the timeout, request the page, then wait
    (no browser connects) for less than the idle timeout. Returns (kernel id, log text)."""
    proc, url = start_voila(
        project,
        log,
        f"--MappingKernelManager.cull_idle_timeout={IDLE_S}",
        f"--MappingKernelManager.cull_interval={INTERVAL_S}",
        *extra,
    )
    try:
        # the first request of wait_http took the first pooled kernel; wait for its refill
        _wait_for(lambda: log.read_text().count("Kernel started") >= 2, 180, "the pool to refill")
        _wait_for(lambda: CULLED.search(log.read_text()), 60, "the first (unconnected) kernel to be culled")
        time.sleep(IDLE_S + 3 * INTERVAL_S)  # the pooled kernel has now been "idle" longer than IDLE_S
        with urllib.request.urlopen(url + "/", timeout=120) as resp:
            assert resp.status == 200
            resp.read()
        handed = re.findall(r"Using pre-heated kernel: ([0-9a-f-]{36})", log.read_text())[-1]
        time.sleep(IDLE_S / 2)  # a slow browser: > several cull passes, < the idle timeout
        culled_early = f"({handed})" in log.read_text().split(f"Using pre-heated kernel: {handed}")[-1]
        if not culled_early:
            # an abandoned page is still culled once its own idle time has passed
            _wait_for(lambda: f"({handed})" in log.read_text(), IDLE_S + 10 * INTERVAL_S + 20, "the cull")
        return handed, culled_early
    finally:
        proc.stop()


def test_a_kernel_from_a_stale_pool_is_not_culled_before_the_browser_connects(smoke_run, tmp_path):
    handed, culled_early = _handed_out_after_a_stale_wait(smoke_run.root, tmp_path / "voila.log")
    assert not culled_early, f"kernel {handed} was culled {IDLE_S / 2} s after it was handed out"


def test_the_stock_kernel_manager_has_the_race(smoke_run, tmp_path):
    """The control: with Voila's default manager the same sequence culls the handed-out kernel
    at the next cull pass. If this starts failing, Voila fixed it upstream and
    nbops.serve.voila_kernels can go."""
    handed, culled_early = _handed_out_after_a_stale_wait(
        smoke_run.root, tmp_path / "voila.log", f"--VoilaConfiguration.multi_kernel_manager_class={STOCK}"
    )
    assert culled_early, f"the stock manager kept kernel {handed}"


def _view(url: str, client: str) -> tuple[int, str, dict]:
    request = urllib.request.Request(url + "/", headers={"X-Forwarded-For": client})
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def _kernel_of(page: str) -> str:
    return re.search(r'"kernelId": "([0-9a-f-]{36})"', page).group(1)


def _alive(url: str, kernel_id: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/kernels/{kernel_id}", timeout=30) as resp:
            return resp.status == 200
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
        return False


class Websocket(threading.Thread):
    """A page's kernel websocket, held open from a thread of its own until `close()`."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.opened, self.done = url, threading.Event(), threading.Event()
        self.error: BaseException | None = None

    def run(self):
        from tornado.websocket import websocket_connect

        async def hold():
            conn = await websocket_connect(self.url)
            self.opened.set()
            while not self.done.is_set():
                await asyncio.sleep(0.1)
            conn.close()

        try:
            asyncio.run(hold())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            self.opened.set()

    def close(self):
        self.done.set()
        self.join(timeout=10)


UNCONNECTED_S = 6


def test_an_unconnected_page_loses_its_kernel_early_and_one_address_holds_two(smoke_run, tmp_path):
    log = tmp_path / "voila.log"
    proc, url = start_voila(
        smoke_run.root,
        log,
        "--MappingKernelManager.cull_idle_timeout=600",
        f"--MappingKernelManager.cull_interval={INTERVAL_S}",
        f"--BoundedKernelManager.unconnected_cull_timeout={UNCONNECTED_S}",
    )
    socket = None
    try:
        views = [_view(url, "203.0.113.7") for _ in range(3)]
        assert [status for status, _, _ in views] == [200, 200, 503]
        assert views[2][2].get("Retry-After") == "60"
        assert "already has 2 dashboard pages open" in views[2][1]
        lost, kept = _kernel_of(views[0][1]), _kernel_of(views[1][1])
        port = url.rsplit(":", 1)[1]
        socket = Websocket(f"ws://127.0.0.1:{port}/api/kernels/{kept}/channels?session_id=load-test")
        socket.start()
        assert socket.opened.wait(30) and socket.error is None, socket.error
        _wait_for(
            lambda: f"Culling kernel {lost}: its page never connected" in log.read_text(),
            UNCONNECTED_S + 20 * INTERVAL_S + 30,
            "the unconnected kernel's cull",
        )
        _wait_for(lambda: not _alive(url, lost), 30, "the unconnected kernel's shutdown")
        assert _alive(url, kept)
        time.sleep(UNCONNECTED_S + 2 * INTERVAL_S)  # the connected page's kernel outlives the timeout
        assert _alive(url, kept) and f"Culling kernel {kept}" not in log.read_text()
        status, page, _ = _view(url, "203.0.113.7")  # the freed place is this address's again
        assert status == 200 and _kernel_of(page) not in (lost, kept)
    finally:
        if socket is not None:
            socket.close()
        proc.stop()
