"""A local sweep worker's process (`python -m nbops.sweep.worker <reply fd>`, started by
nbops.sweep.executors.LocalPool): long-lived, it runs points one after another, each in a fresh
runner call with fresh kernels, so the runner and its libraries are imported once per worker
rather than once per point.

It reads one spec file path per line on stdin, runs that point (its output into the point's
`point.log`), writes `result.json` beside the spec and answers the path on the reply pipe. Its
kernel pool (nbops.sweep.kernels) starts with its first point and keeps the next point's
kernels forked ahead. It ends, stopping its kernels, when stdin closes (the sweep is over) or
on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from pathlib import Path

from nbops.products import read_json, write_json
from nbops.sweep import kernels
from nbops.sweep.point import run_point


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def _run(spec: dict, log) -> dict:
    """run_point, with an error it does not expect (the store, the disk) failing this point
    only, its traceback in the point's log: the worker goes on with the next point."""
    try:
        return run_point(spec)
    except Exception as exc:
        traceback.print_exc(file=log)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return {"status": "failed", "reason": f"{type(exc).__name__}: {first}".rstrip(": ")}


def main(argv: list[str]) -> int:
    replies = os.fdopen(int(argv[0]), "w", buffering=1, encoding="utf-8")
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        for line in sys.stdin:
            spec_file = Path(line.strip())
            spec = read_json(spec_file)
            log = spec_file.with_name("point.log")
            with open(log, "w", encoding="utf-8") as fh, contextlib.redirect_stdout(fh):
                with contextlib.redirect_stderr(fh):
                    out = _run(spec, fh)
            write_json(spec_file.with_name("result.json"), out)
            replies.write(f"{spec_file}\n")
    except KeyboardInterrupt:
        return 130
    finally:
        kernels.close_process_pool()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
