"""Where the dashboard's time to interactive goes, from the browser's own timings.

Starts Voila with the preheated pool as `make dashboard` does (benchmarks/dashboard_bench.Voila),
then loads the page in chromium several times, in a fresh context and in a reused one, and prints
per view: the time to the visible Predict button, the HTML response, DOMContentLoaded, the load
event, how many static files (and bytes) the page fetched, and the page's own timeline after the
load event: kernel websocket opened, widget state received, Predict button visible (seen by the
page itself), and how much later playwright noticed it; for the first view, the slowest files.
All times in ms from navigation start. `python -m benchmarks.dashboard_profile [--project DIR]
[--views N]`; the project needs a champion in its store (`make pipeline` there first).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.chromium import CHROMIUM, CHROMIUM_ARGS
from benchmarks.dashboard_bench import Voila, time_to_widgets
from benchmarks.project import REPO

RESOURCES_JS = """JSON.stringify(performance.getEntriesByType('resource').map(
    r => [r.name.split('/').pop().slice(0, 50), Math.round(r.startTime), Math.round(r.duration),
          r.transferSize, r.encodedBodySize]))"""
NAVIGATION_JS = "JSON.stringify(performance.getEntriesByType('navigation')[0])"
# Runs before the page's own scripts: notes when the kernel websocket opens, when the widget state
# arrives (ipywidgets 8 sends every model's state in one `update_states` message), and the first
# animation frame or DOM change at which the Predict button is visible.
TIMELINE_JS = """(() => {
  const t = window.__nbopsTimeline = {};
  const Native = window.WebSocket;
  window.WebSocket = function (...args) {
    const ws = new Native(...args);
    ws.addEventListener('open', () => { t.ws_open_ms ??= performance.now(); });
    ws.addEventListener('message', (e) => {
      if (t.widget_state_ms !== undefined) return;
      const at = performance.now();
      const d = e.data;
      const look = (text) => { if (text.includes('update_states')) t.widget_state_ms ??= at; };
      if (typeof d === 'string') look(d.slice(0, 4000));
      else if (d instanceof Blob) d.slice(0, 4000).text().then(look);
      else look(new TextDecoder().decode(new Uint8Array(d, 0, Math.min(4000, d.byteLength))));
    });
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, Native);
  const seen = () => {
    const b = document.querySelector('.nbops-predict');
    if (b && b.offsetParent !== null) { t.visible_ms ??= performance.now(); return true; }
    return false;
  };
  const frame = () => { if (!seen()) requestAnimationFrame(frame); };
  requestAnimationFrame(frame);
  new MutationObserver(seen).observe(document, {subtree: true, childList: true, attributes: true});
})();"""


def view(browser_context, url: str) -> dict:
    page = browser_context.new_page()
    try:
        tti = time_to_widgets(page, url)
        noticed_ms = time.time() * 1000  # wall clock when playwright returned
        origin_ms = page.evaluate("performance.timeOrigin")
        nav = json.loads(page.evaluate(NAVIGATION_JS))
        files = json.loads(page.evaluate(RESOURCES_JS))
        timeline = page.evaluate("window.__nbopsTimeline") or {}
    finally:
        page.close()
    visible = timeline.get("visible_ms")
    return {
        "tti_s": round(tti, 2),
        "response_ms": round(nav["responseEnd"]),
        "dom_content_loaded_ms": round(nav["domContentLoadedEventEnd"]),
        "load_ms": round(nav["loadEventEnd"]),
        "ws_open_ms": _ms(timeline.get("ws_open_ms")),
        "widget_state_ms": _ms(timeline.get("widget_state_ms")),
        "visible_ms": _ms(visible),
        # playwright polls with growing pauses (up to 500 ms), so it can notice the button late
        "noticed_after_ms": None if visible is None else round(noticed_ms - origin_ms - visible),
        "files": len(files),
        "bytes": sum(f[4] for f in files),
        "fetched_bytes": sum(f[3] for f in files),
        "slowest": sorted(files, key=lambda f: -f[2])[:8],
    }


def _ms(value: float | None) -> int | None:
    return None if value is None else round(value)


def profile(project: Path, views: int) -> list[dict]:
    from playwright.sync_api import sync_playwright

    out = []
    with tempfile.TemporaryDirectory(prefix="nbops-tti-") as tmp:
        server = Voila(project, Path(tmp) / "voila.log", preheat=True)
        try:
            server.wait_ready()
            known = server.wait_pool_ready(set())
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                reused = browser.new_context()
                reused.add_init_script(TIMELINE_JS)
                try:
                    for i in range(views):
                        for kind in ("fresh", "reused"):
                            context = browser.new_context() if kind == "fresh" else reused
                            if kind == "fresh":
                                context.add_init_script(TIMELINE_JS)
                            figures = {"context": kind, **view(context, server.url)}
                            if kind == "fresh":
                                context.close()
                            if i:
                                figures.pop("slowest")
                            out.append(figures)
                            print(json.dumps(figures), flush=True)
                            known = server.wait_pool_ready(known)  # the next view finds a rendered kernel
                finally:
                    browser.close()
        finally:
            server.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=REPO, help="project with a champion (default: repo)")
    parser.add_argument("--views", type=int, default=4, help="page views per context kind")
    args = parser.parse_args(argv)
    profile(args.project.resolve(), args.views)
    return 0


if __name__ == "__main__":
    sys.exit(main())
