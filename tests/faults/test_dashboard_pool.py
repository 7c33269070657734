"""A visitor who takes a kernel that waited in Voila's preheated pool for longer than the cull idle
timeout still gets a live dashboard: the kernel is not culled in the moment between handing out the
page and the browser connecting (nbops.voila_kernels). The stock manager is run too, so the test is
known to catch the race it guards against. Voila runs on 127.0.0.1 and is stopped by its group."""

from __future__ import annotations

import re
import time
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
    nbops.voila_kernels can go."""
    handed, culled_early = _handed_out_after_a_stale_wait(
        smoke_run.root, tmp_path / "voila.log", f"--VoilaConfiguration.multi_kernel_manager_class={STOCK}"
    )
    assert culled_early, f"the stock manager kept kernel {handed}"
