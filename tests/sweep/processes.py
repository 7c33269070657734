"""The processes a test's project has running, found by PID in /proc (they may be in other
process groups and sessions: kernels start sessions of their own)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def project_processes(root: Path) -> dict[int, str]:
    """Live processes of this project, by PID (with process group): a working folder or a
    command line under `root` (local workers, kernel parents, kernels, the sweep itself)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{entry}/cwd")
            pgid = os.getpgid(int(entry))
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            continue
        if str(root) in cmd or cwd == str(root) or cwd.startswith(f"{root}/"):
            found[int(entry)] = f"pgid {pgid}: {cmd.strip()}"
    return found


def wait_until_none_left(root: Path, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (left := project_processes(root)) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert left == {}, f"left running: {left}"
