"""The dashboard under load, on 127.0.0.1. First 50 page requests without a browser, each from
a client address of its own (X-Forwarded-For, which Voila's kernel manager reads from a proxy on
127.0.0.1): the product's promise is checked, not what this machine happens to manage. Live
kernels never exceed the cap in deploy/voila/voila.json (the preheated pool's included), the
Voila process tree stays within the cap times a kernel's budget plus the server's own memory,
every request answers with the dashboard or the busy page (503, Retry-After), and the kernels go
back to the pool size once culled. Then real browser sessions at once, to measure how many are
served with p95 predict <= 300 ms. Voila is started by the test with the project's config plus
short cull windows; it is stopped by its process group only."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from benchmarks.chromium import CHROMIUM, CHROMIUM_ARGS
from benchmarks.processes import kernel_processes, rss_mb
from tests.browser.conftest import SCREENSHOTS
from tests.conftest import REPO, run_coroutine
from tests.faults.helpers import start_voila

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

VOILA = json.loads((REPO / "deploy" / "voila" / "voila.json").read_text())
POOL_SIZE = VOILA["VoilaConfiguration"]["default_pool_size"]
CAP = VOILA["BoundedKernelManager"]["max_kernels"]  # live kernels at most, the pool's included
CULL_IDLE_S = 15
CULL_INTERVAL_S = 3
UNCONNECTED_S = 10  # a page that never opens its websocket loses its kernel after this
REQUESTS = 50
# What one dashboard kernel may hold (the smoke champion's: 300-340 MB RSS when rendered), and
# what the Voila server may grow by while it renders and serves pages. The bound the load test
# asserts is the server's idle RSS + SERVER_GROWTH_MB + CAP * KERNEL_BUDGET_MB.
KERNEL_BUDGET_MB = 450
SERVER_GROWTH_MB = 300
BUDGET_MS = 300
LEVELS = (1, 2, 4, 8)  # concurrent sessions tried, in order, until p95 exceeds the budget
ROUNDS = 8  # predictions per session per level
DASHBOARD = re.compile(r'"text/plain": "[^"]* dashboard"')  # the model's own line in the page


@pytest.fixture(scope="module")
def voila(smoke_run, tmp_path_factory):
    log = tmp_path_factory.mktemp("voila-load") / "voila.log"
    # the project's settings (caps included), with cull windows short enough for a test;
    # kernels of open browser pages are kept (cull_connected off) so the sessions below stay alive
    proc, url = start_voila(
        smoke_run.root,
        log,
        f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_S}",
        f"--MappingKernelManager.cull_interval={CULL_INTERVAL_S}",
        "--MappingKernelManager.cull_connected=False",
        f"--BoundedKernelManager.unconnected_cull_timeout={UNCONNECTED_S}",
    )
    try:
        yield {"proc": proc, "url": url, "log": log}
    finally:
        proc.stop()


def _tree(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def kernels(pid: int) -> int:
    return len(kernel_processes(pid))


def _get(url: str, client: str) -> tuple[int, float, str, dict]:
    """One anonymous page view from `client` (via X-Forwarded-For, as a Space's proxy sends it)."""
    request = urllib.request.Request(url, headers={"X-Forwarded-For": client})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=180) as resp:
            body = resp.read().decode("utf-8", "replace")
            return resp.status, time.perf_counter() - start, body, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, time.perf_counter() - start, exc.read().decode("utf-8", "replace"), dict(exc.headers)


def test_page_views_past_the_cap_get_the_busy_page_and_memory_stays_within_the_bound(voila, record_property):
    pid = voila["proc"].pid
    deadline = time.monotonic() + 120
    while kernels(pid) < POOL_SIZE and time.monotonic() < deadline:  # the preheated pool
        time.sleep(0.5)
    while kernels(pid) > POOL_SIZE and time.monotonic() < deadline:  # start_voila's own GET culled
        time.sleep(0.5)
    server_mb = rss_mb([psutil.Process(pid)])
    idle_mb = rss_mb(_tree(pid))
    bound_mb = server_mb + SERVER_GROWTH_MB + CAP * KERNEL_BUDGET_MB
    peak = {"kernels": 0, "mb": idle_mb, "kernel_mb": 0.0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            procs = kernel_processes(pid)
            peak["kernels"] = max(peak["kernels"], len(procs))
            peak["mb"] = max(peak["mb"], rss_mb(_tree(pid)))
            peak["kernel_mb"] = max([peak["kernel_mb"], *(rss_mb([p]) for p in procs)])
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            clients = [f"198.51.100.{i}" for i in range(REQUESTS)]
            results = list(pool.map(_get, [voila["url"] + "/"] * REQUESTS, clients))
    finally:
        stop.set()
        sampler.join()
    served = [r for r in results if r[0] == 200]
    busy = [r for r in results if r[0] == 503]
    assert len(served) + len(busy) == REQUESTS, [r[0] for r in results]
    for _, _, body, _ in served:
        assert DASHBOARD.search(body) and "Traceback" not in body
    for _, _, body, headers in busy:
        assert headers.get("Retry-After") == "60" and "Busy: try again in a minute" in body
    after = time.monotonic()
    window = UNCONNECTED_S + 2 * CULL_INTERVAL_S + 30  # slack for a busy 2-core machine
    while kernels(pid) > POOL_SIZE and time.monotonic() - after < window:
        time.sleep(1)
    settled_s = time.monotonic() - after
    left = kernels(pid)
    settled_mb = rss_mb(_tree(pid))
    figures = {
        "requests": REQUESTS,
        "served": len(served),
        "busy": len(busy),
        "cap": CAP,
        "page_s_p50": round(sorted(s for _, s, _, _ in served)[len(served) // 2], 2),
        "peak_kernels": peak["kernels"],
        "server_mb": round(server_mb),
        "idle_mb": round(idle_mb),
        "peak_mb": round(peak["mb"]),
        "peak_kernel_mb": round(peak["kernel_mb"]),
        "bound_mb": round(bound_mb),
        "settled_mb": round(settled_mb),
        "kernels_after": left,
        "back_to_pool_s": round(settled_s, 1),
    }
    print(figures)
    for key, value in figures.items():
        record_property(key, value)
    assert peak["kernels"] <= CAP, figures  # the cap holds, whatever the machine's speed
    assert served and busy, figures  # 50 views against a cap of 8: both answers were given
    assert peak["kernel_mb"] <= KERNEL_BUDGET_MB, figures
    assert peak["mb"] <= bound_mb, figures
    assert left <= POOL_SIZE, f"{left} kernels still alive {settled_s:.0f} s after the last request"
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


async def _open_past_a_busy_page(page, url: str, patience_s: float = 90) -> None:
    """Open the dashboard; a busy page (kernels of the previous test not culled yet) is retried."""
    deadline = time.monotonic() + patience_s
    while True:
        response = await page.goto(url + "/", timeout=180_000)
        if response is None or response.status != 503 or time.monotonic() > deadline:
            return
        await asyncio.sleep(3)


async def _measure(url: str, log: Path) -> dict:
    from playwright.async_api import async_playwright

    levels = {}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pages = []
        try:
            for level in LEVELS:
                while len(pages) < level:
                    # one client address per session: the per-address cap is not what is measured
                    client = f"192.0.2.{len(pages) + 1}"
                    context = await browser.new_context(extra_http_headers={"X-Forwarded-For": client})
                    page = await context.new_page()
                    await _open_past_a_busy_page(page, url)
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
