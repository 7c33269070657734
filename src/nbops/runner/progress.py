"""What a run says while it runs: one line per event, and a ticker for long cells."""

from __future__ import annotations

import threading
import time


def say(msg: str) -> None:
    print(msg, flush=True)


class Progress:
    """Which cell each running step is in; a ticker prints it for long steps."""

    def __init__(self, every_s: float = 10.0):
        self.every_s = every_s
        self.cells: dict[str, tuple[int, int, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_cell(self, step: str, index: int, total: int) -> None:
        self.cells[step] = (index, total, time.perf_counter())

    def current_cell(self, step: str) -> int | None:
        """1-based position of the cell running last in `step` (None before the first)."""
        entry = self.cells.get(step)
        return entry[0] + 1 if entry else None

    def lines(self, now: float | None = None) -> list[str]:
        """One line per step whose current cell has run for at least the interval."""
        now = time.perf_counter() if now is None else now
        return [
            f"… {step:<12}  cell {index + 1}/{total} ({now - since:.0f}s in it)"
            for step, (index, total, since) in list(self.cells.items())
            if now - since >= self.every_s
        ]

    def __enter__(self):
        def tick():
            while not self._stop.wait(self.every_s):
                for line in self.lines():
                    say(line)

        self._thread = threading.Thread(target=tick, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()

    def done(self, step: str) -> None:
        self.cells.pop(step, None)
