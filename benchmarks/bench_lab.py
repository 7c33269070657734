"""JupyterLab: how long `nbops lab` takes to answer, and Run All of 02_train in Lab beside the
same step headless.

    python -m benchmarks.run --only lab

Each round: a fresh project (data generated, store initialised), `nbops lab --params
params/default.yaml` on a free port until its printed URL answers (`lab_ready_s`); 02_train
opened in chromium, its kernel started and idle, then Run > Run All Cells until every cell has
its count (`lab_run_all_s`). Headless: `nbops run --force` in the same project with no kernel
kept warm; `headless_train_step_s` is the `✓ 02_train` time the runner prints (its kernel starts
inside that time, so Lab, whose kernel is already up, is not at a disadvantage)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from benchmarks.chromium import CHROMIUM, CHROMIUM_ARGS
from benchmarks.lab_session import LabServer, open_notebook, run_all
from benchmarks.project import PY, clean_env, init_project, make_project

PARAMS = "params/default.yaml"
LAB_KEYS = ("lab_ready_s", "lab_run_all_s", "headless_train_step_s")
STEP_LINE = re.compile(r"✓ 02_train\s+([\d.]+)s")


def headless_step_seconds(root: Path) -> float:
    done = subprocess.run(
        [PY, "-m", "nbops", "run", "--params", PARAMS, "--force"],
        cwd=root,
        capture_output=True,
        text=True,
        env=clean_env(NBOPS_KEEP_WARM_S="0"),
        timeout=600,
    )
    found = STEP_LINE.search(done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"headless run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return float(found.group(1))


def bench_lab(rounds: int, work: Path, samples: dict[str, list]) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for r in range(rounds):
                root = make_project(work / f"lab-{r}")
                init_project(root, PARAMS)
                env = clean_env(JUPYTERLAB_WORKSPACES_DIR=str(work / f"lab-{r}-workspaces"))
                server = LabServer(root, PARAMS, work / f"lab-{r}.log", env=env)
                try:
                    samples["lab_ready_s"].append(server.wait_ready())
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    open_notebook(page, server.notebook_url("02_train.ipynb"))
                    samples["lab_run_all_s"].append(run_all(page))
                    page.close()
                finally:
                    server.stop()
                samples["headless_train_step_s"].append(headless_step_seconds(root))
        finally:
            browser.close()
