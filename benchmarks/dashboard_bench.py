"""Dashboard figures in chromium (playwright): page request → interactive widgets with a cold
kernel and with the preheated pool, and Predict click → label shown.

Voila is started with the command line of the Makefile's `dashboard` target (config in
deploy/voila/voila.json); the cold server only adds `--VoilaConfiguration.preheat_kernel=False`.
Each server runs in its own process group and is stopped by that group id."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchmarks.chromium import CHROMIUM, CHROMIUM_ARGS
from benchmarks.project import REPO, clean_env

WIDGETS = ".nbops-predict"
PREDICT_CLICKS = 50
POOL_TIMEOUT_S = 300
MIN_RENDER_CPU_S = 2.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Voila:
    def __init__(self, project: Path, log: Path, preheat: bool):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = clean_env(
            NBOPS_PARAMS=str(project / "params" / "default.yaml"),
            NBOPS_ROOT=str(REPO),
            MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}",
        )
        cmd = [
            str(REPO / ".venv" / "bin" / "voila"),
            "notebooks/dashboard.ipynb",
            "--Voila.config_file_paths=deploy/voila",
            "--Voila.ip=127.0.0.1",
            f"--port={self.port}",
            "--no-browser",
        ]
        if not preheat:
            cmd.append("--VoilaConfiguration.preheat_kernel=False")
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.log = log

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"voila exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                # a HEAD-less probe of a static path: it must not consume a preheated kernel
                with urllib.request.urlopen(self.url + "/voila/static/main.js", timeout=10) as resp:
                    if resp.status < 500:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"voila not ready after {timeout} s")

    def kernels(self) -> list:
        import psutil

        try:
            procs = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []
        out = []
        for p in procs:
            try:
                if any("ipykernel_launcher" in part for part in p.cmdline()):
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def wait_pool_ready(self, known: set[int]) -> set[int]:
        """Wait until a kernel not in `known` exists and has gone idle (the preheated pool has
        rendered the notebook in it); returns the PIDs of all kernels now running.

        Idle = under 2 % CPU over two consecutive 0.5 s windows, after at least
        MIN_RENDER_CPU_S of CPU (imports and the notebook's cells): a kernel rendering the
        dashboard keeps a core busy for seconds."""
        import psutil

        deadline = time.monotonic() + POOL_TIMEOUT_S
        quiet = 0
        while time.monotonic() < deadline:
            fresh = [k for k in self.kernels() if k.pid not in known]
            if fresh:
                newest = max(fresh, key=lambda k: k.create_time())
                try:
                    busy = newest.cpu_percent(interval=0.5)
                    spent = sum(newest.cpu_times()[:2])
                except psutil.Error:
                    busy, spent = 100.0, 0.0
                if spent < MIN_RENDER_CPU_S:  # started, not yet asked to run the notebook
                    busy = 100.0
                quiet = quiet + 1 if busy < 2.0 else 0
                if quiet >= 2:
                    return {k.pid for k in self.kernels()}
            else:
                time.sleep(0.3)
        raise RuntimeError(f"the preheated kernel pool did not refill in {POOL_TIMEOUT_S} s")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this object created
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log.close()


# Checked in the page on every animation frame. playwright's wait_for_selector re-checks with
# growing pauses up to 500 ms: it noticed the button 25-85 ms or 400-500 ms after the page showed
# it (90 views, benchmarks/dashboard_profile.py's noticed_after_ms), half the samples up to 0.5 s late.
VISIBLE_JS = f"""() => {{
  const b = document.querySelector({WIDGETS!r});
  return b !== null && b.offsetParent !== null;
}}"""


def time_to_widgets(page, url: str) -> float:
    """Seconds from requesting the page to a visible Predict button."""
    t = time.perf_counter()
    page.goto(url + "/")
    page.wait_for_function(VISIBLE_JS, polling="raf", timeout=120_000)
    return time.perf_counter() - t


def _tti(browser, url: str) -> tuple[float, object, object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(120_000)
    return time_to_widgets(page, url), page, context


def _update_count(page) -> int:
    node = page.query_selector(".nbops-result-box .nbops-update")
    return int(node.get_attribute("data-update")) if node else 0


def _predict_ms(page) -> float:
    before = _update_count(page)
    t = time.perf_counter()
    page.click(WIDGETS)
    page.wait_for_function(
        """(before) => {
            const n = document.querySelector('.nbops-result-box .nbops-update');
            return n && Number(n.dataset.update) > before
                && document.querySelector('.nbops-result-box .nbops-label');
        }""",
        arg=before,
        timeout=60_000,
    )
    return (time.perf_counter() - t) * 1000


def bench_dashboard(project: Path, rounds: int, samples: dict[str, list], work: Path) -> None:
    from playwright.sync_api import sync_playwright

    cold = Voila(project, work / "voila-cold.log", preheat=False)
    warm = Voila(project, work / "voila-warm.log", preheat=True)
    try:
        cold.wait_ready()
        warm.wait_ready()
        known = warm.wait_pool_ready(set())
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for r in range(rounds):
                    for name, server in (("cold", cold), ("warm", warm))[:: 1 if r % 2 == 0 else -1]:
                        seconds, page, context = _tti(browser, server.url)
                        key = "dashboard_cold_tti_s" if name == "cold" else "dashboard_tti_s"
                        samples[key].append(seconds)
                        context.close()
                        if name == "warm":  # the next warm view must find a rendered kernel again
                            known = warm.wait_pool_ready(known)
                    cold_s, warm_s = samples["dashboard_cold_tti_s"][-1], samples["dashboard_tti_s"][-1]
                    print(f"  dashboard round {r + 1}/{rounds}: cold {cold_s:.2f}s preheated {warm_s:.2f}s")
                _, page, context = _tti(browser, warm.url)
                _predict_ms(page)  # the first click pays one-off imports; p95 is of the steady state
                for _ in range(PREDICT_CLICKS):
                    samples["predict_ms"].append(_predict_ms(page))
                context.close()
            finally:
                browser.close()
    finally:
        cold.stop()
        warm.stop()
