"""Where the dashboard's time to interactive goes, from the browser's own timings.

Starts Voila with the preheated pool as `make dashboard` does (benchmarks/dashboard_bench.Voila),
then loads the page in chromium several times, in a fresh context and in a reused one, and prints
per view: the time to the visible Predict button, the HTML response, DOMContentLoaded, the load
event, and how many static files (and bytes) the page fetched; for the first view, the slowest
files. `python -m benchmarks.dashboard_profile [--project DIR] [--views N]`; the project needs a
champion in its store (`make pipeline` there first).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.chromium import CHROMIUM, CHROMIUM_ARGS
from benchmarks.dashboard_bench import Voila, time_to_widgets
from benchmarks.project import REPO

RESOURCES_JS = """JSON.stringify(performance.getEntriesByType('resource').map(
    r => [r.name.split('/').pop().slice(0, 50), Math.round(r.startTime), Math.round(r.duration),
          r.transferSize, r.encodedBodySize]))"""
NAVIGATION_JS = "JSON.stringify(performance.getEntriesByType('navigation')[0])"


def view(browser_context, url: str) -> dict:
    page = browser_context.new_page()
    try:
        tti = time_to_widgets(page, url)
        nav = json.loads(page.evaluate(NAVIGATION_JS))
        files = json.loads(page.evaluate(RESOURCES_JS))
    finally:
        page.close()
    return {
        "tti_s": round(tti, 2),
        "response_ms": round(nav["responseEnd"]),
        "dom_content_loaded_ms": round(nav["domContentLoadedEventEnd"]),
        "load_ms": round(nav["loadEventEnd"]),
        "files": len(files),
        "bytes": sum(f[4] for f in files),
        "fetched_bytes": sum(f[3] for f in files),
        "slowest": sorted(files, key=lambda f: -f[2])[:8],
    }


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
                try:
                    for i in range(views):
                        for kind in ("fresh", "reused"):
                            context = browser.new_context() if kind == "fresh" else reused
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
