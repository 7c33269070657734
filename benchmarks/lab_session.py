"""JupyterLab as a person uses it, for the browser test and `make bench`: `nbops lab` started in
a project on a free 127.0.0.1 port (its own process group, stopped by that id only), and a
playwright page that opens a notebook, runs all cells from Lab's Run menu and saves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.processes import free_port, stop_group

READY_TIMEOUT_S = 120
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook tab in front
RUN_TIMEOUT_MS = 300_000
IDLE_JS = (
    "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
    ".some(e => /\\| Idle$/.test(e.textContent.trim()))"
)
ALL_RUN_JS = (
    f"() => {{ const p = [...document.querySelectorAll('{PANEL} .jp-CodeCell .jp-InputPrompt')]"
    ".map(e => e.textContent.trim()); return p.length > 0 && p.every(t => /^\\[\\d+\\]:$/.test(t)); }"
)


class LabServer:
    """`python -m nbops lab --params PARAMS --port N` in `root`; `url` is the one it prints."""

    def __init__(self, root: Path, params: str, log: Path, env: dict[str, str] | None = None):
        self.root, self.port, self.log = root, free_port(), log
        self.url: str | None = None
        self._log_file = open(log, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nbops", "lab", "--params", params, "--port", str(self.port)],
            cwd=root,
            env={**os.environ, **(env or {})},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> float:
        """Seconds from the start until the printed URL (with its token) answers."""
        import urllib.request

        pattern = re.compile(rf"http://127\.0\.0\.1:{self.port}/lab\S*\?token=\w+")
        deadline = self.started + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nbops lab exited with {self.proc.returncode}:\n{self.output()}")
            found = pattern.search(self.output())
            if found:
                try:
                    with urllib.request.urlopen(found.group(0), timeout=30) as resp:
                        if resp.status == 200:
                            self.url = found.group(0)
                            return time.monotonic() - self.started
                except OSError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"nbops lab not ready after {READY_TIMEOUT_S} s:\n{self.output()}")

    def notebook_url(self, notebook: str) -> str:
        base, token = self.url.split("?token=")
        # reset: the workspace opens this notebook alone, not the tabs the user's workspace holds
        return f"http://127.0.0.1:{self.port}/lab/tree/notebooks/{notebook}?reset&token={token}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop_group(self.proc)  # the group we created: nbops, jupyter, kernels
        self._log_file.close()


def open_notebook(page, url: str) -> None:
    """Open a notebook tab and wait until its kernel is idle."""
    page.goto(url)
    page.wait_for_selector(f"{PANEL} .jp-CodeCell .jp-InputArea", timeout=READY_TIMEOUT_S * 1000)
    page.wait_for_function(IDLE_JS, timeout=READY_TIMEOUT_S * 1000)


def tab_is_dirty(page) -> bool:
    return page.locator(".jp-NotebookPanel-tab.jp-mod-dirty, .lm-TabBar-tab.jp-mod-dirty").count() > 0


def run_all(page) -> float:
    """Run > Run All Cells; seconds until every code cell has its execution count."""
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    started = time.monotonic()
    page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").click()
    page.wait_for_function(ALL_RUN_JS, timeout=RUN_TIMEOUT_MS)
    page.wait_for_function(IDLE_JS, timeout=RUN_TIMEOUT_MS)
    return time.monotonic() - started


def cell_sources(page) -> list[str]:
    """Each cell's source as the editor shows it."""
    return page.eval_on_selector_all(
        f"{PANEL} .jp-Cell",
        "cells => cells.map(c => [...c.querySelectorAll('.cm-line')].map(l => l.textContent).join('\\n'))",
    )


def output_texts(page, mime: str | None = None) -> list[str]:
    selector = f"{PANEL} .jp-OutputArea-output" + (f"[data-mime-type='{mime}']" if mime else "")
    return page.locator(selector).all_inner_texts()


def save(page) -> None:
    """Ctrl+S, then wait until the tab is no longer marked unsaved."""
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while tab_is_dirty(page) and time.monotonic() < deadline:
        time.sleep(0.2)
