"""The dashboard under load, on 127.0.0.1: 50 page requests without a browser (kernels go back
to the pool size once culled, memory stays bounded), then real browser sessions at once, to
measure how many are served with p95 predict <= 300 ms. Voila is started by the test with the
project's config plus a short cull window; it is stopped by its process group only."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from benchmarks.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.browser.conftest import SCREENSHOTS
from tests.conftest import run_coroutine
from tests.faults.helpers import start_voila

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

POOL_SIZE = 1  # deploy/voila/voila.json: default_pool_size
CULL_IDLE_S = 15
CULL_INTERVAL_S = 3
REQUESTS = 50
BUDGET_MS = 300
LEVELS = (1, 2, 4, 8)  # concurrent sessions tried, in order, until p95 exceeds the budget
ROUNDS = 8  # predictions per session per level
MEMORY_BOUND_MB = 6000


@pytest.fixture(scope="module")
def voila(smoke_run, tmp_path_factory):
    log = tmp_path_factory.mktemp("voila-load") / "voila.log"
    # the project's settings, with a cull window short enough for a test; kernels of open
    # browser pages are kept (cull_connected off) so the sessions below stay alive
    proc, url = start_voila(
        smoke_run.root,
        log,
        f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_S}",
        f"--MappingKernelManager.cull_interval={CULL_INTERVAL_S}",
        "--MappingKernelManager.cull_connected=False",
    )
    try:
        yield {"proc": proc, "url": url, "log": log}
    finally:
        proc.stop()


def _tree(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def kernels(pid: int) -> int:
    count = 0
    for p in _tree(pid)[1:]:
        try:
            if "ipykernel_launcher" in " ".join(p.cmdline()):
                count += 1
        except psutil.Error:
            pass
    return count


def rss_mb(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def _get(url: str) -> tuple[int, float, str]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=180) as resp:
        body = resp.read().decode("utf-8", "replace")
        return resp.status, time.perf_counter() - start, body


def test_fifty_page_requests_return_to_the_pool_with_bounded_memory(voila, record_property):
    pid = voila["proc"].pid
    deadline = time.monotonic() + 120
    while kernels(pid) < POOL_SIZE and time.monotonic() < deadline:  # the preheated pool
        time.sleep(0.5)
    idle_mb = rss_mb(pid)
    peak = {"kernels": 0, "mb": idle_mb}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["kernels"] = max(peak["kernels"], kernels(pid))
            peak["mb"] = max(peak["mb"], rss_mb(pid))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(_get, [voila["url"] + "/"] * REQUESTS))
    finally:
        stop.set()
        sampler.join()
    assert [status for status, _, _ in results] == [200] * REQUESTS
    assert not any("Traceback" in body for _, _, body in results)
    after = time.monotonic()
    window = CULL_IDLE_S + 2 * CULL_INTERVAL_S + 30  # slack for a busy 2-core machine
    while kernels(pid) > POOL_SIZE and time.monotonic() - after < window:
        time.sleep(1)
    settled_s = time.monotonic() - after
    left = kernels(pid)
    settled_mb = rss_mb(pid)
    figures = {
        "requests": REQUESTS,
        "page_s_p50": sorted(s for _, s, _ in results)[REQUESTS // 2],
        "peak_kernels": peak["kernels"],
        "idle_mb": round(idle_mb),
        "peak_mb": round(peak["mb"]),
        "settled_mb": round(settled_mb),
        "kernels_after": left,
        "back_to_pool_s": round(settled_s, 1),
    }
    print(figures)
    for key, value in figures.items():
        record_property(key, value)
    assert left <= POOL_SIZE, f"{left} kernels still alive {settled_s:.0f} s after the last request"
    assert peak["mb"] < MEMORY_BOUND_MB, figures
    # culled kernels give their memory back: what is left is within reach of the idle server
    assert settled_mb < idle_mb + 600, figures


PREDICT_JS = """() => new Promise((resolve, reject) => {
    const box = document.querySelector('.nbops-result-box');
    const read = () => {
        const n = box.querySelector('.nbops-update');
        return n ? Number(n.dataset.update) : 0;
    };
    const before = read();
    const t0 = performance.now();
    const obs = new MutationObserver(() => {
        if (read() > before) { obs.disconnect(); resolve(performance.now() - t0); }
    });
    obs.observe(box, {subtree: true, childList: true, attributes: true, characterData: true});
    setTimeout(() => { obs.disconnect(); reject(new Error('no answer in 20 s')); }, 20000);
    document.querySelector('button.nbops-predict, .nbops-predict button, .nbops-predict').click();
})"""


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


async def _measure(url: str, log: Path) -> dict:
    from playwright.async_api import async_playwright

    levels = {}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = []
        try:
            for level in LEVELS:
                while len(pages) < level:
                    context = await browser.new_context()
                    page = await context.new_page()
                    await page.goto(url + "/", timeout=180_000)
                    try:
                        await page.wait_for_selector(".nbops-predict", state="visible", timeout=180_000)
                    except Exception as exc:
                        text = (await page.inner_text("body"))[-1500:]
                        raise AssertionError(
                            f"session {len(pages) + 1} of {level}: no Predict button; page says:\n{text}\n"
                            f"voila log:\n{log.read_text()[-4000:]}"
                        ) from exc
                    await page.evaluate(PREDICT_JS)  # warm-up: first call imports and caches
                    pages.append(page)
                latencies = []
                for _ in range(ROUNDS):
                    latencies += await asyncio.gather(*(p.evaluate(PREDICT_JS) for p in pages))
                levels[level] = {
                    "answered": len(latencies),
                    "p50_ms": round(sorted(latencies)[len(latencies) // 2]),
                    "p95_ms": round(_p95(latencies)),
                }
                if levels[level]["p95_ms"] > BUDGET_MS:
                    break
        finally:
            await browser.close()
    return levels


def test_concurrent_sessions_are_served_and_measured(voila, record_property):
    """Every click of every concurrent session gets its prediction; how many sessions stay
    within p95 <= 300 ms is measured and recorded (README "Under load"), not asserted: speed
    goals live in `make bench`, and this machine's load varies."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    levels = run_coroutine(_measure(voila["url"], voila["log"]))
    served = max((n for n, v in levels.items() if v["p95_ms"] <= BUDGET_MS), default=0)
    figures = {
        "levels": levels,
        "sessions_within_budget": served,
        "budget_ms": BUDGET_MS,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures))
    record_property("sessions_within_300ms_p95", served)
    SCREENSHOTS.mkdir(exist_ok=True)
    (SCREENSHOTS / "load.json").write_text(json.dumps(figures, indent=2))
    assert levels and 1 in levels, levels
    for level, figures_at in levels.items():
        assert figures_at["answered"] == level * ROUNDS, f"{level} sessions: some clicks got no answer"
