"""What the Voila server process runs besides Voila: the page template, a log filter and the
kernel manager. deploy/voila/voila.json names the last two, deploy/voila/voila.py the template.

The page template (`jupyter_data/voila/templates/nbops`) is Voila's lab template without what it
loads from other origins (fontawesome from cdn.jsdelivr.net, on every page). Voila looks
templates up on Jupyter's data path only, an environment variable, so `use_page_template` puts
the folder on it for the server process and names the template.

The log filter drops one line tornado logs at the first websocket: `The websocket_ping_timeout
(90000) cannot be longer than the websocket_ping_interval (30000)`. It is a false alarm that no
setting can silence: jupyter_server's kernel websockets ping every `ws_ping_interval` ms and close
a websocket whose last pong is older than `ws_ping_timeout` ms (default 3 intervals), and tornado
reads the same two numbers, as seconds, for a pinger of its own (first ping after 30000 s), clamps
that one's timeout to the interval and says so. With the timeout equal to the interval (the
only values tornado accepts) jupyter_server closes every websocket at its first ping, before a
pong can arrive: 193 reconnects in 60 s when tried at 300/300 ms.

The kernel manager: Voila's preheated pool keeps the culler away from kernels *in* the pool, but
a pooled kernel's idle clock keeps running while it waits there. When a visitor takes a kernel
that waited longer than `cull_idle_timeout` (a quiet Space: minutes, hours), the next cull pass
can shut it down in the second or two before the browser opens its websocket, and the visitor
gets a page whose widgets never come up. Here a kernel's idle clock starts when it leaves the
pool: each cull pass first marks every pooled kernel as active, then culls as usual, so a
handed-out kernel has the full idle timeout to be connected, and an abandoned one is still
culled after it.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

PAGE_TEMPLATE = "nbops"
JUPYTER_DATA = Path(__file__).resolve().parent / "jupyter_data"  # holds voila/templates/nbops


def use_page_template(config, environ=os.environ) -> None:
    """Serve the page with the nbops template: JUPYTER_DATA first on JUPYTER_PATH (where Voila
    finds templates and their static files, at start and per request), and the template named."""
    paths = [p for p in environ.get("JUPYTER_PATH", "").split(os.pathsep) if p and p != str(JUPYTER_DATA)]
    environ["JUPYTER_PATH"] = os.pathsep.join([str(JUPYTER_DATA), *paths])
    config.VoilaConfiguration.template = PAGE_TEMPLATE


class TornadoPingClampFilter(logging.Filter):
    """Drops tornado's websocket ping-timeout clamp warning (see the module docstring), only it."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (
            text.startswith("The websocket_ping_timeout (")
            and "cannot be longer than the websocket_ping_interval" in text
        )


class PoolAwareKernelManager(AsyncMappingKernelManager):
    """AsyncMappingKernelManager whose culler counts time in Voila's pool as activity."""

    def pooled_kernel_ids(self) -> list[str]:
        """Ids of the ready kernels waiting in Voila's pool (`_pools` is set by Voila's wrapper)."""
        ids = []
        for pool in getattr(self, "_pools", {}).values():
            for item in pool:
                if item.done() and not item.cancelled() and item.exception() is None:
                    ids.append(item.result()["kernel_id"])
        return ids

    async def cull_kernels(self):
        now = datetime.now(UTC)
        for kernel_id in self.pooled_kernel_ids():
            kernel = self._kernels.get(kernel_id)
            if kernel is not None:
                kernel.last_activity = now
        await super().cull_kernels()
