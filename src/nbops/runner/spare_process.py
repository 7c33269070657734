"""The spare kernel's own process (`python -m nbops.runner.spare_process <spec>`): it starts its
kernel, runs the warm-up, records itself for the next run to claim, and exits when it is claimed,
idle too long, or its build folder goes."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from nbops.products import write_json
from nbops.runner.spares import POLL_S

# ------------------------------------------------------------------ kernel side


def _watch(folder: Path, step: str, token: str, idle_s: float) -> None:
    """Exit when unclaimed for idle_s, when the run that claimed us is gone, or when our
    files are removed (make clean)."""
    record = folder / f"{step}.{token}.spare"
    deadline = time.monotonic() + idle_s
    while True:
        time.sleep(POLL_S)
        if record.exists():
            if time.monotonic() < deadline:
                continue
            try:
                record.rename(record.with_name(record.name + ".expired"))
            except FileNotFoundError:  # claimed this very moment
                continue
            break
        claimed = list(folder.glob(f"{record.name}.claimed-*"))
        if not claimed:
            break
        try:
            os.kill(int(claimed[0].name.rsplit("-", 1)[1]), 0)
        except (ProcessLookupError, ValueError):
            break
        except PermissionError:
            continue
    for path in folder.glob(f"{step}.{token}.*"):
        path.unlink(missing_ok=True)
    os._exit(0)


# A spare waits this long at most for the run that started it to exit (a run in a long-lived
# process: a test, a notebook) before it starts importing.
AFTER_PID_WAIT_S = 10.0


def _wait_for_exit(pid: int | None, timeout_s: float = AFTER_PID_WAIT_S) -> None:
    """Let the run that started us finish first: our imports would take the CPU its exit needs
    (on 2 cores three spares starting at once made a cold run 0.7 s longer)."""
    deadline = time.monotonic() + timeout_s
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            return
        time.sleep(0.05)


def serve(spec_path: Path) -> None:
    """The spare kernel's process: wait for its run to exit, write its record, watch it, run
    the warm-up, serve."""
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    _wait_for_exit(spec.get("after_pid"))
    folder, step, token = spec_path.parent, spec["step"], spec["token"]
    conn = folder / f"{step}.{token}.conn.json"
    write_json(
        folder / f"{step}.{token}.spare",
        {"pid": os.getpid(), "token": token, "step": step, "key": spec["key"], "connection_file": str(conn),
         "started": time.time()},
    )  # fmt: skip
    threading.Thread(target=_watch, args=(folder, step, token, float(spec["idle_s"])), daemon=True).start()
    if sys.path and sys.path[0] == "":
        del sys.path[0]  # as ipykernel_launcher does: the kernel's sys.path is a started kernel's
    from ipykernel.kernelapp import IPKernelApp

    # exec_lines run before the kernel answers: a run that adopts us waits for the warm-up
    IPKernelApp.launch_instance(argv=["-f", str(conn)], exec_lines=[spec["code"]] if spec["code"] else [])


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
