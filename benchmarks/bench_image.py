"""The Space image: its size, and its cold start (container run → Predict visible in chromium)
beside `make space-serve`'s (the same folder from build/space-venv, Popen → Predict visible).

    python -m benchmarks.run --only image

The image is built once (`nbops.serve.container`, as `make space-image`); each round starts a fresh
container and a fresh `make space-serve` in turn, after one untimed start of each (the first one
pays the disk cache and the venv sync). Each is stopped by its container id or process group."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from benchmarks.chromium import CHROMIUM, CHROMIUM_ARGS
from benchmarks.dashboard_bench import VISIBLE_JS
from benchmarks.processes import free_port, stop_group
from benchmarks.project import REPO, clean_env

IMAGE_KEYS = ("image_size_mb", "container_cold_start_s", "space_serve_cold_start_s")
START_TIMEOUT_S = 240


def build_space(project: Path, out: Path) -> Path:
    done = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(REPO),
            "space",
            f"PARAMS={project / 'params' / 'default.yaml'}",
            f"SPACE_DIR={out}",
        ],
        env=clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow' / 'mlflow.db'}"),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"make space failed:\n{done.stderr[-3000:]}")
    return out


def until_predict(browser, url: str, started: float) -> float:
    """Seconds from `started` until the page at `url` shows a visible Predict button."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        while True:
            try:
                page.goto(url + "/", timeout=120_000)
                break
            except Exception:  # noqa: BLE001 - refused or reset while the server starts
                if time.perf_counter() - started > START_TIMEOUT_S:
                    raise
                time.sleep(0.1)
        page.wait_for_function(VISIBLE_JS, polling="raf", timeout=120_000)
        return time.perf_counter() - started
    finally:
        context.close()


def container_cold_start(box, folder: Path, tag: str, browser) -> float:
    port = free_port()
    started = time.perf_counter()
    box.start(folder, port, name=f"nbops-bench-{os.getpid()}-{port}", tag=tag)
    try:
        return until_predict(browser, f"http://127.0.0.1:{port}", started)
    finally:
        box.stop()


def space_serve_cold_start(folder: Path, browser, log: Path) -> float:
    port = free_port()
    started = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["make", "-s", "-C", str(REPO), "space-serve", f"SPACE_DIR={folder}", f"SPACE_PORT={port}"],
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        return until_predict(browser, f"http://127.0.0.1:{port}", started)
    finally:
        stop_group(proc, linger=0)  # the group this function created: make + voila


def bench_image(project: Path, rounds: int, samples: dict[str, list], work: Path) -> str:
    """Fills IMAGE_KEYS' samples; returns the note naming the engine and the base image."""
    from playwright.sync_api import sync_playwright

    from nbops.serve.container import Containers, image_tag, read_card

    lines: list[str] = []
    box = Containers(REPO / ".cache" / "containers", state=work / "bench-container.json", say=lines.append)
    folder = build_space(project, work / "bench-space")
    tag = box.build(folder, tag="nbops-bench/" + image_tag(read_card(folder)))  # not the user's tag
    samples["image_size_mb"].append(round(box.image_size_mb(tag)))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            container_cold_start(box, folder, tag, browser)  # untimed: disk cache
            space_serve_cold_start(folder, browser, work / "space-serve.log")  # untimed: venv sync
            for r in range(rounds):
                order = ("container", "space-serve")[:: 1 if r % 2 == 0 else -1]
                for which in order:
                    if which == "container":
                        seconds = container_cold_start(box, folder, tag, browser)
                        samples["container_cold_start_s"].append(seconds)
                    else:
                        seconds = space_serve_cold_start(folder, browser, work / "space-serve.log")
                        samples["space_serve_cold_start_s"].append(seconds)
                print(
                    f"  image round {r + 1}/{rounds}: container {samples['container_cold_start_s'][-1]:.2f}s "
                    f"space-serve {samples['space_serve_cold_start_s'][-1]:.2f}s"
                )
        finally:
            browser.close()
    base = next((line.removeprefix("base image: ") for line in lines if line.startswith("base image: ")), "?")
    return f"image: {tag} built with {box.engine.name} on {base}"
