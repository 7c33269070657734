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

The kernel manager, `BoundedKernelManager`, bounds what page views can hold. Voila starts a
kernel for every page view (or hands out the preheated one and starts its replacement), so
anonymous GETs alone would fill the machine's memory:
- At most `max_kernels` kernels are alive at once, the preheated pool's included, and at most
  `max_kernels_per_client` of them were handed to pages from one client address. A page view
  past either cap gets a short "busy, try again in a minute" page (HTTP 503, Retry-After)
  instead of a kernel; a pool refill that would pass the cap waits until a kernel shuts down.
  The request comes from jupyter_server's call context (`CallContext.JUPYTER_HANDLER`, set for
  each request), its client address from `X-Forwarded-For` only when the peer is a trusted
  proxy (`trusted_proxies`, the loopback and private ranges by default: a Space's proxy).
- A kernel handed to a page whose websocket never opened (a GET from a script, a crawler, a
  tab closed while loading) is shut down after `unconnected_cull_timeout` seconds idle, not
  after the 15-minute idle cull that connected pages keep. A tab closed later frees its kernel
  at once: the page's own shutdown beacon now carries the XSRF cookie it needs (see `admit`).
- Voila's preheated pool keeps the culler away from kernels *in* the pool, but a pooled
  kernel's idle clock keeps running while it waits there. When a visitor takes a kernel that
  waited longer than `cull_idle_timeout` (a quiet Space: minutes, hours), the next cull pass can
  shut it down in the second or two before the browser opens its websocket, and the visitor
  gets a page whose widgets never come up. Here a kernel's idle clock starts when it leaves the
  pool: each cull pass first marks every pooled kernel as active, then culls as usual.

Voila builds its pool by subclassing the configured manager (`voila_kernel_manager_factory`),
and that subclass defines the pool's hand-out and refill itself; `__init_subclass__` wraps those
two so they keep to the caps.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import html
import logging
import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jupyter_server.base.call_context import CallContext
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Float, Integer, List, Unicode

from nbops.serve.clients import PRIVATE_NETWORKS, client_address

PAGE_TEMPLATE = "nbops"
JUPYTER_DATA = Path(__file__).resolve().parents[1] / "jupyter_data"  # holds voila/templates/nbops


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


def busy_page(reason: str, retry_after: int) -> str:
    """The page a visitor gets instead of a kernel: what happened, and when to come back."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Busy: try again in a minute</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{int(retry_after)}">
<style>body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 40em;
margin: 4em auto; padding: 0 1em; color: #0f172a; }} p {{ color: #475569; line-height: 1.5; }}</style>
</head><body class="nbops-busy"><h1>Busy: try again in a minute</h1>
<p>{html.escape(reason)}</p>
<p>This page reloads itself in {int(retry_after)} seconds.</p></body></html>
"""


def _handler_of_this_request():
    """The page request being served, or None: kernels started for Voila's pool run in a
    context of their own (see `_capped_fill`)."""
    handler = CallContext.get(CallContext.JUPYTER_HANDLER)
    return handler if handler is not None and hasattr(handler, "request") else None


def _admitted_hand_out(hand_out):
    """Voila's `get_rendered_notebook` (hand a pooled kernel to a page), behind the per-client cap.
    The pooled kernel is already counted in `max_kernels`: handing it out adds none."""

    @functools.wraps(hand_out)
    async def get_rendered_notebook(self, *args, **kwargs):
        handler = _handler_of_this_request()
        if handler is None:
            return await hand_out(self, *args, **kwargs)
        client = self.admit(handler, new_kernel=False)
        self._reserved[client] += 1  # until the kernel id is known, so a concurrent view counts it
        try:
            result = await hand_out(self, *args, **kwargs)
        finally:
            self._reserved[client] -= 1
        self._hand_to(result[2], client)  # (render task, rendered cells, kernel id)
        return result

    return get_rendered_notebook


def _capped_fill(fill):
    """Voila's `fill_if_needed` (start kernels until the pool is full), within `max_kernels`. It
    runs in an empty context, so the kernels it starts belong to no request."""

    @functools.wraps(fill)
    def fill_if_needed(self, delay=None, notebook_name=None, **kwargs):
        if self._closing:
            return None
        config = self.kernel_pools_config
        default = config.get("default", {})
        size = config.get(notebook_name, default).get("pool_size", default.get("pool_size", 1))
        pool = self._pools.get(notebook_name, [])
        missing = size - len(pool)
        if missing <= 0:
            return None
        room = missing if not self.max_kernels else min(missing, self.max_kernels - self.live_kernel_count())
        if room <= 0:
            self.log.info(
                "Pool refill waits: %d kernels alive, the cap is %d",
                self.live_kernel_count(),
                self.max_kernels,
            )
            return None
        before = set(pool)
        if room < missing:  # start only `room` kernels: Voila's fill reads the pool size from here
            self.kernel_pools_config = {
                **config,
                notebook_name: {**config.get(notebook_name, default), "pool_size": len(pool) + room},
            }
        try:
            contextvars.Context().run(fill, self, delay=delay, notebook_name=notebook_name, **kwargs)
        finally:
            self.kernel_pools_config = config
        self._pool_tasks.update(set(self._pools.get(notebook_name, [])) - before)
        return None

    return fill_if_needed


class BoundedKernelManager(AsyncMappingKernelManager):
    """AsyncMappingKernelManager with caps on live kernels, a short cull for kernels whose page
    never connected, and an idle clock that starts when a kernel leaves Voila's pool."""

    max_kernels = Integer(
        8,
        config=True,
        help="Most kernels alive at once, the preheated pool's included; a page view that would "
        "need another gets the busy page (HTTP 503). 0: no cap.",
    )
    max_kernels_per_client = Integer(
        2,
        config=True,
        help="Most live kernels handed to pages from one client address; 0: no cap.",
    )
    unconnected_cull_timeout = Float(
        60.0,
        config=True,
        help="Seconds a kernel handed to a page may sit idle before that page opens its websocket; "
        "then it is shut down (checked at each cull pass, so it needs cull_idle_timeout > 0). 0: off.",
    )
    busy_retry_after = Integer(60, config=True, help="Retry-After seconds of the busy page.")
    trusted_proxies = List(
        Unicode(),
        default_value=PRIVATE_NETWORKS,
        config=True,
        help="Networks (CIDR) of reverse proxies whose X-Forwarded-For names the client address.",
    )

    # defined by Voila's subclass (voila.voila_kernel_manager), wrapped when it is created
    get_rendered_notebook: Callable[..., Any]
    fill_if_needed: Callable[..., Any]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "get_rendered_notebook" in own:
            cls.get_rendered_notebook = _admitted_hand_out(own["get_rendered_notebook"])
        if "fill_if_needed" in own:
            cls.fill_if_needed = _capped_fill(own["fill_if_needed"])

    def __init__(self, **kwargs):
        self._clients: dict[str, str] = {}  # kernel id -> the client address it was handed to
        self._handed_at: dict[str, datetime] = {}
        self._connected: set[str] = set()  # kernels a websocket has ever connected to
        self._starting: set[str] = set()  # ids of kernels being started
        self._pool_tasks: set[asyncio.Task] = set()  # the pool's tasks not done yet
        self._pool_starts: dict[asyncio.Task, str] = {}  # a pool task -> the kernel it is starting
        self._reserved: Counter[str] = Counter()
        self._closing = False
        super().__init__(**kwargs)

    # ------------------------------------------------------------ counting

    def pooled_kernel_ids(self) -> list[str]:
        """Ids of the ready kernels waiting in Voila's pool (`_pools` is set by Voila's wrapper)."""
        ids = []
        for pool in getattr(self, "_pools", {}).values():
            for item in pool:
                if item.done() and not item.cancelled() and item.exception() is None:
                    ids.append(item.result()["kernel_id"])
        return ids

    def _registered(self) -> set[str]:
        pending = {k for k, task in self._pending_kernels.items() if not task.done()}
        return set(self._kernels) | pending | self._starting

    def live_kernel_count(self) -> int:
        """Kernels alive or on their way: those this manager holds or is starting, and the pool's
        tasks that have not started theirs yet (waiting for their delay, or handed to a page
        before their kernel was up)."""
        self._pool_tasks = {task for task in self._pool_tasks if not task.done()}
        waiting = sum(1 for task in self._pool_tasks if task not in self._pool_starts)
        return len(self._registered()) + waiting

    def client_kernel_count(self, client: str) -> int:
        live = self._registered()
        return sum(1 for k, c in self._clients.items() if c == client and k in live) + self._reserved[client]

    # ------------------------------------------------------------ admission

    def client_of(self, handler) -> str:
        request = handler.request
        return client_address(
            request.remote_ip or "", request.headers.get("X-Forwarded-For", ""), self.trusted_proxies
        )

    def admit(self, handler, new_kernel: bool) -> str:
        """The client address of a page view that may have a kernel; else the busy page (it ends
        the request: tornado's Finish, raised through Voila's handler)."""
        import tornado.web

        client = self.client_of(handler)
        reason = ""
        if new_kernel and self.max_kernels and self.live_kernel_count() >= self.max_kernels:
            reason = (
                f"The dashboard is serving as many pages as it can at once ({self.max_kernels}). "
                "Try again in a minute."
            )
        elif self.max_kernels_per_client and self.client_kernel_count(client) >= self.max_kernels_per_client:
            reason = (
                f"Your address already has {self.max_kernels_per_client} dashboard pages open, the most "
                "one address can have. Close one, or try again in a minute."
            )
        if not reason:
            # Tornado sets the `_xsrf` cookie when the token is first read. A preheated page was
            # rendered before its request, so nothing read it, and the page's beforeunload beacon
            # (POST voila/api/shutdown/<kernel>, with the cookie's token) was refused with 403:
            # a closed tab kept its kernel until the idle cull (voila-dashboards/voila#1458).
            handler.xsrf_token  # noqa: B018 - read for its side effect, the cookie
            return client
        self.log.warning(
            "Busy page for %s: %d kernels alive (cap %d), %d for this address (cap %d)",
            client,
            self.live_kernel_count(),
            self.max_kernels,
            self.client_kernel_count(client),
            self.max_kernels_per_client,
        )
        handler.set_status(503)
        handler.set_header("Retry-After", str(self.busy_retry_after))
        handler.set_header("Content-Type", "text/html; charset=UTF-8")
        handler.set_header("Cache-Control", "no-store")
        raise tornado.web.Finish(busy_page(reason, self.busy_retry_after))

    def _hand_to(self, kernel_id: str, client: str) -> None:
        self._clients[kernel_id] = client
        self._handed_at[kernel_id] = datetime.now(UTC)

    def _forget(self, kernel_id: str) -> None:
        self._clients.pop(kernel_id, None)
        self._handed_at.pop(kernel_id, None)
        self._connected.discard(kernel_id)

    # ------------------------------------------------------------ kernel life

    # The three overrides below are async as AsyncMappingKernelManager's are; mypy also sees the
    # sync MultiKernelManager signatures that jupyter_client wraps with run_sync.
    async def start_kernel(self, *, kernel_id=None, path=None, **kwargs):  # type: ignore[override]
        """Every kernel start goes through here: a page view's (its request in the call context)
        is admitted first; a pool's is remembered with its pool task."""
        kernel_id = kernel_id or self.new_kernel_id()
        handler = _handler_of_this_request()
        task = asyncio.current_task()
        if handler is not None:
            self._hand_to(kernel_id, self.admit(handler, new_kernel=True))
        elif task is not None:
            self._pool_starts[task] = kernel_id
        self._starting.add(kernel_id)
        try:
            return await super().start_kernel(kernel_id=kernel_id, path=path, **kwargs)
        except BaseException:
            self._forget(kernel_id)
            raise
        finally:
            self._starting.discard(kernel_id)
            if task is not None:
                self._pool_starts.pop(task, None)

    def notify_connect(self, kernel_id):
        self._connected.add(kernel_id)
        super().notify_connect(kernel_id)

    async def shutdown_kernel(self, kernel_id, *args, **kwargs):  # type: ignore[override]
        try:
            return await super().shutdown_kernel(kernel_id, *args, **kwargs)
        finally:
            self._forget(kernel_id)
            self._refill_pools()  # a pool refill may have waited for this place

    async def shutdown_all(self, *args, **kwargs):  # type: ignore[override]
        self._closing = True
        return await super().shutdown_all(*args, **kwargs)

    def _refill_pools(self) -> None:
        fill = getattr(self, "fill_if_needed", None)  # Voila's, with a preheated pool only
        if fill is None or self._closing:
            return
        for notebook_name in list(getattr(self, "_pools", {})):
            fill(notebook_name=notebook_name)

    # ------------------------------------------------------------ culling

    async def cull_kernels(self):
        now = datetime.now(UTC)
        for kernel_id in self.pooled_kernel_ids():
            kernel = self._kernels.get(kernel_id)
            if kernel is not None:
                kernel.last_activity = now
        await self.cull_unconnected(now)
        await super().cull_kernels()

    async def cull_unconnected(self, now: datetime) -> None:
        """Shut down kernels handed to a page that has not connected for `unconnected_cull_timeout`
        seconds of the kernel's idleness (a kernel still rendering the page is busy, not idle)."""
        if self.unconnected_cull_timeout <= 0:
            return
        for kernel_id, handed in list(self._handed_at.items()):
            kernel = self._kernels.get(kernel_id)
            if kernel is None or kernel_id in self._connected or kernel_id in self._starting:
                continue
            if getattr(kernel, "execution_state", None) == "busy":
                continue
            idle_since = max(handed, getattr(kernel, "last_activity", handed))
            idle_s = (now - idle_since).total_seconds()
            if idle_s > self.unconnected_cull_timeout:
                self.log.warning(
                    "Culling kernel %s: its page never connected (%d s idle, limit %d s)",
                    kernel_id,
                    idle_s,
                    self.unconnected_cull_timeout,
                )
                try:
                    await self.shutdown_kernel(kernel_id)
                except Exception:
                    self.log.exception("Shutting down unconnected kernel %s failed", kernel_id)
