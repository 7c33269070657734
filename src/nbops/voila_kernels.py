"""The kernel manager Voila runs the dashboard with (deploy/voila/voila.json names it).

Voila's preheated pool keeps the culler away from kernels *in* the pool, but a pooled kernel's idle
clock keeps running while it waits there. When a visitor takes a kernel that waited longer than
`cull_idle_timeout` (a quiet Space: minutes, hours), the next cull pass can shut it down in the second
or two before the browser opens its websocket, and the visitor gets a page whose widgets never come
up. Here a kernel's idle clock starts when it leaves the pool: each cull pass first marks every
pooled kernel as active, then culls as usual, so a handed-out kernel has the full idle timeout to be
connected, and an abandoned one is still culled after it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager


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
